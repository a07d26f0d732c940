"""The command line: ``run``, ``demo`` and ``simulate``. The only module that imports click.

Flags are parsed here and handed over as raw strings; :mod:`exporter.config`
decides what a good value is. Errors of the core become exit status 2 here.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn
from urllib.parse import urlsplit

import click
from click.core import ParameterSource

from elevate_import_exporter import __version__, logs
from elevate_import_exporter.config import (
    DEFAULT_LISTEN_ADDRESS,
    ConfigError,
    Settings,
    load_settings,
    parse_listen_address,
)
from elevate_import_exporter.ids import IdsFileError
from elevate_import_exporter.simulator import (
    DEMO_UNKNOWN_ID,
    ScenarioError,
    ScriptedImport,
    Simulator,
    demo_imports,
    generated_imports,
    load_scenario,
)
from elevate_import_exporter.web import Exporter, ListenError

log = logging.getLogger("elevate_import_exporter")

SIMULATOR_LISTEN_ADDRESS = "127.0.0.1:10026"
SIMULATOR_DEFAULT_KEY = "simulator-key"


class SetupError(click.ClickException):
    """A configuration or start-up problem: a one-line message and exit status 2."""

    exit_code = 2


def _split_ids(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[str]:
    # ELEVATE_IMPORT_IDS may separate ids with commas as well as spaces; a flag takes
    # one id as it is, so that a bad one is refused rather than split or dropped.
    if param.name and ctx.get_parameter_source(param.name) is ParameterSource.ENVIRONMENT:
        return [part for value in values for part in re.split(r"[\s,]+", value) if part]
    return list(values)


def _option(*decls: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(*decls, show_envvar=True, show_default=True, **kwargs)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="elevate-import-exporter")
def cli() -> None:
    """Prometheus exporter for the status of Voyado Elevate background imports."""


_LOG_OPTIONS = (
    _option(
        "--log.level",
        "log_level",
        envvar="ELEVATE_EXPORTER_LOG_LEVEL",
        default="info",
        help="debug, info, warning or error.",
    ),
    _option(
        "--log.format",
        "log_format",
        envvar="ELEVATE_EXPORTER_LOG_FORMAT",
        default="logfmt",
        help="logfmt or json.",
    ),
)


def _with(
    options: tuple[Callable[[Callable[..., Any]], Callable[..., Any]], ...],
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def apply(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


@cli.command()
@_option(
    "--elevate.cluster-id",
    "cluster_id",
    envvar="ELEVATE_CLUSTER_ID",
    help="Cluster id; the API is then https://{id}.api.esales.apptus.cloud.",
)
@_option(
    "--elevate.base-url",
    "base_url",
    envvar="ELEVATE_BASE_URL",
    help="Full base URL of the API; wins over the cluster id.",
)
@_option(
    "--elevate.api-key-file",
    "api_key_file",
    envvar="ELEVATE_API_KEY_FILE",
    help="File holding the Api-Key. Or set ELEVATE_API_KEY; no flag takes the key itself.",
)
@_option(
    "--elevate.import-id",
    "import_ids",
    envvar="ELEVATE_IMPORT_IDS",
    multiple=True,
    callback=_split_ids,
    help="Import id to track; repeatable. The variable takes a comma or space separated list.",
)
@_option(
    "--elevate.import-ids-file",
    "ids_file",
    envvar="ELEVATE_IMPORT_IDS_FILE",
    help="File of ids, one a line, '#' comments allowed; re-read when it changes.",
)
@_option(
    "--elevate.concurrency",
    "concurrency",
    envvar="ELEVATE_CONCURRENCY",
    default="8",
    help="Status requests in flight at once.",
)
@_option(
    "--elevate.timeout",
    "timeout",
    envvar="ELEVATE_TIMEOUT",
    default="5",
    help="Seconds for one status request.",
)
@_option(
    "--elevate.retries",
    "retries",
    envvar="ELEVATE_RETRIES",
    default="1",
    help="Extra tries after a 5xx, 429, timeout or connection error, within the scrape deadline.",
)
@_option(
    "--web.listen-address",
    "listen_address",
    envvar="ELEVATE_EXPORTER_LISTEN_ADDRESS",
    default=DEFAULT_LISTEN_ADDRESS,
    help="[host]:port to serve on.",
)
@_option(
    "--web.telemetry-path",
    "telemetry_path",
    envvar="ELEVATE_EXPORTER_TELEMETRY_PATH",
    default="/metrics",
    help="Path of the metrics.",
)
@_with(_LOG_OPTIONS)
def run(**options: Any) -> None:
    """Run the exporter."""
    settings = _settings(api_key=os.environ.get("ELEVATE_API_KEY"), **options)
    logs.configure(settings.log_level, settings.log_format, [settings.api_key.reveal()])
    exporter = _start(settings)
    _warn_if_key_goes_in_clear(settings.base_url)
    log.info(
        "serving metrics at %s%s for %d import ids (Elevate at %s)",
        exporter.url,
        settings.telemetry_path,
        len(exporter.poller.snapshot().imports),
        settings.base_url,
    )
    _serve_until_stopped(exporter.serve_forever, exporter.stop)


@cli.command()
@_option(
    "--web.listen-address",
    "listen_address",
    envvar="ELEVATE_EXPORTER_LISTEN_ADDRESS",
    default=DEFAULT_LISTEN_ADDRESS,
    help="[host]:port the exporter serves on.",
)
@_option(
    "--simulator.listen-address",
    "simulator_address",
    envvar="ELEVATE_SIMULATOR_LISTEN_ADDRESS",
    default=SIMULATOR_LISTEN_ADDRESS,
    help="[host]:port of the simulated Elevate API.",
)
@_with(_LOG_OPTIONS)
def demo(listen_address: str, simulator_address: str, log_level: str, log_format: str) -> None:
    """Try it: a simulated Elevate API with scripted imports, and the exporter watching it."""
    key = secrets.token_urlsafe(24)
    imports = demo_imports()
    ids = [imp.id for imp in imports] + [DEMO_UNKNOWN_ID]
    with _simulator(imports, key, simulator_address) as simulator:
        settings = _settings(
            base_url=simulator.url,
            api_key=key,
            import_ids=ids,
            listen_address=listen_address,
            log_level=log_level,
            log_format=log_format,
        )
        logs.configure(settings.log_level, settings.log_format, [key])
        exporter = _start(settings)
        click.echo(
            f"Elevate import exporter {__version__}: demo\n"
            f"  exporter:           {exporter.url}/   (metrics: {exporter.url}/metrics)\n"
            f"  simulated Elevate:  {simulator.url}/api/v2/import/status/{{id}}\n"
            f"Tracking {len(ids)} imports: two succeed, one fails, one stays in progress, "
            f"one is aborted, one is unknown to the cluster.\n"
            f"They move over the next 30 seconds; reload the page to follow them. "
            f"Ctrl-C stops."
        )
        _serve_until_stopped(exporter.serve_forever, exporter.stop)


@cli.command()
@_option(
    "--web.listen-address",
    "listen_address",
    envvar="ELEVATE_SIMULATOR_LISTEN_ADDRESS",
    default=SIMULATOR_LISTEN_ADDRESS,
    help="[host]:port to serve the simulated API on.",
)
@_option(
    "--elevate.api-key-file",
    "api_key_file",
    envvar="ELEVATE_API_KEY_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"File holding the Api-Key to accept. Or ELEVATE_API_KEY; else '{SIMULATOR_DEFAULT_KEY}'.",
)
@_option(
    "--scenario",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON file of scripted imports. Without it (and --generate-imports): the demo imports.",
)
@_option("--generate-imports", type=click.IntRange(0, 1_000_000), default=0, help="Add N imports.")
@_option("--generated-status", default="IN_PROGRESS", help="Status of the generated imports.")
@_option("--latency", type=click.FloatRange(0, 60), default=0.0, help="Seconds before answering.")
@_option("--error-rate", type=click.FloatRange(0, 1), default=0.0, help="Share of 503 answers.")
@_option("--fail-id", multiple=True, help="Id answered with 500; repeatable.")
@_option("--hang-id", multiple=True, help="Id whose answer hangs for 30 s; repeatable.")
@_option("--garbage-id", multiple=True, help="Id answered with a body that is not JSON.")
@_with(_LOG_OPTIONS)
def simulate(
    listen_address: str,
    api_key_file: Path | None,
    scenario: Path | None,
    generate_imports: int,
    generated_status: str,
    latency: float,
    error_rate: float,
    fail_id: tuple[str, ...],
    hang_id: tuple[str, ...],
    garbage_id: tuple[str, ...],
    log_level: str,
    log_format: str,
) -> None:
    """Serve a simulated Elevate Web API v2 (for trials, tests and benchmarks)."""
    logs.configure(_log_choice(log_level), "json" if log_format == "json" else "logfmt")
    key = _simulator_key(api_key_file)
    imports: list[ScriptedImport] = []
    if scenario is not None:
        try:
            imports += load_scenario(scenario)
        except ScenarioError as exc:
            raise SetupError(f"bad scenario {scenario}: {exc}") from None
    imports += generated_imports(generate_imports, generated_status)
    if scenario is None and not generate_imports:
        imports = demo_imports()
    options = {
        "latency": latency,
        "error_rate": error_rate,
        "fail_ids": fail_id,
        "hang_ids": hang_id,
        "garbage_ids": garbage_id,
    }
    with _simulator(imports, key, listen_address, **options) as simulator:
        click.echo(f"simulated Elevate API at {simulator.url} with {len(imports)} imports")
        _serve_until_stopped(_sleep_forever, lambda: None)


def _settings(**options: Any) -> Settings:
    try:
        return load_settings(**options)
    except ConfigError as exc:
        raise SetupError(str(exc)) from None


def _warn_if_key_goes_in_clear(base_url: str) -> None:
    host = urlsplit(base_url).hostname or ""
    if base_url.startswith("http://") and host not in ("localhost", "127.0.0.1", "::1"):
        log.warning("the API key goes to %s unencrypted: use an https:// base URL", host)


def _start(settings: Settings) -> Exporter:
    try:
        return Exporter(settings)
    except (IdsFileError, ListenError) as exc:
        raise SetupError(str(exc)) from None


@contextmanager
def _simulator(
    imports: list[ScriptedImport], key: str, address: str, **options: Any
) -> Iterator[Simulator]:
    try:
        host, port = parse_listen_address(address, "--simulator.listen-address")
    except ConfigError as exc:
        raise SetupError(str(exc)) from None
    simulator = Simulator(imports, api_key=key, **options)
    try:
        simulator.start(host or "0.0.0.0", port)
    except OSError as exc:
        raise SetupError(f"cannot listen on {address}: {exc.strerror or exc}") from None
    try:
        yield simulator
    finally:
        simulator.stop()


def _simulator_key(path: Path | None) -> str:
    if path is not None:
        try:
            key = path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise SetupError(f"cannot read the API key file {path}: {exc.strerror}") from None
        if not key:
            raise SetupError(f"the API key file {path} is empty")
        return key
    return os.environ.get("ELEVATE_API_KEY") or SIMULATOR_DEFAULT_KEY


def _log_choice(level: str) -> str:
    lowered = level.lower()
    if lowered not in ("debug", "info", "warning", "error"):
        raise SetupError(f"--log.level must be one of debug, info, warning, error, got {level!r}")
    return lowered


class _Stopped(Exception):
    pass


def _on_signal(signum: int, _frame: FrameType | None) -> NoReturn:
    raise _Stopped(signal.Signals(signum).name)


def _serve_until_stopped(serve: Callable[[], None], cleanup: Callable[[], None]) -> None:
    """Serve in the main thread until SIGTERM or SIGINT, then clean up and return (exit 0)."""
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        serve()
    except _Stopped as stop:
        log.info("stopping on %s", stop)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        cleanup()


def _sleep_forever() -> None:
    while True:
        time.sleep(3600)


def main() -> None:
    cli(prog_name="elevate-import-exporter")
