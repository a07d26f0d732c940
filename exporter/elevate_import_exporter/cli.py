"""The command line: ``run``, ``demo`` and ``simulate``. The only module that imports click.

Flags are built from :mod:`elevate_import_exporter.config`'s option table and
handed over as raw strings; the configuration decides what a good value is.
Errors of the core become exit status 2 here, and logging is configured here once.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn
from urllib.parse import urlsplit

import click
from click.core import ParameterSource

from elevate_import_exporter import __version__, logs
from elevate_import_exporter.app import Application
from elevate_import_exporter.config import (
    ConfigError,
    Settings,
    check_key,
    choice,
    load_settings,
    parse_listen_address,
    read_key_file,
)
from elevate_import_exporter.idsfile import IdsFileError
from elevate_import_exporter.options import LOG_OPTIONS, RUN_OPTIONS, Option
from elevate_import_exporter.simulator import (
    DEMO_UNKNOWN_ID,
    SCENARIO_FORMAT,
    STATUS_PATH,
    ScenarioError,
    ScriptedImport,
    Simulator,
    demo_imports,
    generated_imports,
    load_scenario,
)
from elevate_import_exporter.web import ListenError

log = logging.getLogger("elevate_import_exporter")

SIMULATOR_LISTEN_ADDRESS = "127.0.0.1:10026"
SIMULATOR_DEFAULT_KEY = "simulator-key"
# The demo behaves as if Prometheus scraped it this often, so its page moves by itself.
DEMO_SCRAPE_INTERVAL = 2.0

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


class SetupError(click.ClickException):
    """A configuration or start-up problem: a one-line message and exit status 2."""

    exit_code = 2


def _split_ids(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[str]:
    # ELEVATE_IMPORT_IDS may separate ids with commas as well as spaces; a flag takes
    # one id as it is, so that a bad one is refused rather than split or dropped.
    if param.name and ctx.get_parameter_source(param.name) is ParameterSource.ENVIRONMENT:
        return [part for value in values for part in re.split(r"[\s,]+", value) if part]
    return list(values)


def _flag(option: Option, **overrides: Any) -> Decorator:
    settings: dict[str, Any] = {
        "envvar": option.env,
        "default": option.default,
        "help": option.help,
        "multiple": option.multiple,
        "show_envvar": True,
        "show_default": True,
    }
    if option.multiple:
        settings["callback"] = _split_ids
    settings.update(overrides)
    return click.option(option.flag, option.dest, **settings)


def _flags(*options: Option) -> Decorator:
    def apply(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            command = _flag(option)(command)
        return command

    return apply


_LISTEN = next(o for o in RUN_OPTIONS if o.dest == "listen_address")
_KEY_FILE = next(o for o in RUN_OPTIONS if o.dest == "api_key_file")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="elevate-import-exporter")
def cli() -> None:
    """Prometheus exporter for the status of Voyado Elevate background imports."""


@cli.command()
@_flags(*RUN_OPTIONS, *LOG_OPTIONS)
def run(**options: Any) -> None:
    """Run the exporter. SIGHUP re-reads the ids file; SIGTERM and SIGINT stop it."""
    settings = _settings(api_key=os.environ.get("ELEVATE_API_KEY"), **options)
    logs.configure(settings.log_level, settings.log_format, [settings.api_key.reveal()])
    app = _start(settings)
    _warn_if_key_goes_in_clear(settings.base_url)
    log.info(
        "serving metrics at %s%s for %d import ids (Elevate at %s)",
        app.url,
        settings.telemetry_path,
        len(app.ids.current()),
        settings.base_url,
    )
    _serve_until_stopped(app.serve_forever, app.stop, reload=app.reload)


@cli.command()
@_flag(_LISTEN, help="[host]:port the exporter serves on.")
@click.option(
    "--simulator.listen-address",
    "simulator_address",
    envvar="ELEVATE_SIMULATOR_LISTEN_ADDRESS",
    default=SIMULATOR_LISTEN_ADDRESS,
    show_envvar=True,
    show_default=True,
    help="[host]:port of the simulated Elevate API.",
)
@_flags(*LOG_OPTIONS)
def demo(listen_address: str, simulator_address: str, log_level: str, log_format: str) -> None:
    """Try it: a simulated Elevate API with scripted imports, and the exporter watching it."""
    level, fmt = _log_settings(log_level, log_format)
    key = secrets.token_urlsafe(24)
    logs.configure(level, fmt, [key])
    imports = demo_imports()
    ids = [imp.id for imp in imports] + [DEMO_UNKNOWN_ID]
    with _simulator(imports, key, simulator_address) as simulator:
        settings = _settings(
            base_url=simulator.url,
            api_key=key,
            import_ids=ids,
            listen_address=listen_address,
            min_poll_interval=f"{DEMO_SCRAPE_INTERVAL:g}s",
            log_level=level,
            log_format=fmt,
        )
        app = _start(settings)
        stop_scraping = app.scrape_every(DEMO_SCRAPE_INTERVAL)
        click.echo(
            f"Elevate import exporter {__version__}: demo\n"
            f"  exporter:           {app.url}/   (metrics: {app.url}{settings.telemetry_path})\n"
            f"  simulated Elevate:  {simulator.url}{STATUS_PATH}{{id}}\n"
            f"Tracking {len(ids)} imports: two succeed, one fails, one stays in progress, "
            f"one is aborted, one is unknown to the cluster.\n"
            f"They move over the next 30 seconds; the page follows them by itself "
            f"(the demo polls every {DEMO_SCRAPE_INTERVAL:g} s, as Prometheus would scrape). "
            f"Ctrl-C stops."
        )

        def cleanup() -> None:
            stop_scraping()
            app.stop()

        _serve_until_stopped(app.serve_forever, cleanup)


@cli.command(epilog="\b\n" + SCENARIO_FORMAT)
@_flag(
    _LISTEN,
    envvar="ELEVATE_SIMULATOR_LISTEN_ADDRESS",
    default=SIMULATOR_LISTEN_ADDRESS,
    help="[host]:port to serve the simulated API on.",
)
@_flag(
    _KEY_FILE,
    help=f"File holding the Api-Key to accept. Or ELEVATE_API_KEY; else '{SIMULATOR_DEFAULT_KEY}'.",
)
@click.option(
    "--scenario",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON file of scripted imports (format below). Without it (and --generate-imports): "
    "the demo imports.",
)
@click.option(
    "--generate-imports", type=click.IntRange(0, 1_000_000), default=0, help="Add N imports."
)
@click.option("--generated-status", default="IN_PROGRESS", help="Status of the generated imports.")
@click.option(
    "--latency", type=click.FloatRange(0, 60), default=0.0, help="Seconds before answering."
)
@click.option(
    "--error-rate", type=click.FloatRange(0, 1), default=0.0, help="Share of 503 answers."
)
@click.option("--fail-id", multiple=True, help="Id answered with 500; repeatable.")
@click.option("--hang-id", multiple=True, help="Id whose answer hangs for 30 s; repeatable.")
@click.option("--garbage-id", multiple=True, help="Id answered with a body that is not JSON.")
@_flags(*LOG_OPTIONS)
def simulate(
    listen_address: str,
    api_key_file: str | None,
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
    level, fmt = _log_settings(log_level, log_format)
    key = _simulator_key(api_key_file)
    logs.configure(level, fmt, [key])
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
        stopped = threading.Event()
        _serve_until_stopped(lambda: stopped.wait(), stopped.set)


def _settings(**options: Any) -> Settings:
    try:
        return load_settings(**options)
    except ConfigError as exc:
        raise SetupError(str(exc)) from None


def _log_settings(level: str, fmt: str) -> tuple[str, str]:
    by_dest = {o.dest: o for o in LOG_OPTIONS}
    try:
        return (
            choice(level, by_dest["log_level"].flag, logs.LOG_LEVELS),
            choice(fmt, by_dest["log_format"].flag, logs.LOG_FORMATS),
        )
    except ConfigError as exc:
        raise SetupError(str(exc)) from None


def _warn_if_key_goes_in_clear(base_url: str) -> None:
    host = urlsplit(base_url).hostname or ""
    if base_url.startswith("http://") and host not in ("localhost", "127.0.0.1", "::1"):
        log.warning("the API key goes to %s unencrypted: use an https:// base URL", host)


def _start(settings: Settings) -> Application:
    try:
        return Application(settings)
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


def _simulator_key(path: str | None) -> str:
    try:
        if path:
            return check_key(read_key_file(path), f"the API key file {path}")
        from_env = os.environ.get("ELEVATE_API_KEY")
        if from_env:
            return check_key(from_env, "ELEVATE_API_KEY")
    except ConfigError as exc:
        raise SetupError(str(exc)) from None
    return SIMULATOR_DEFAULT_KEY


class _Stopped(Exception):
    pass


def _on_stop(signum: int, _frame: FrameType | None) -> NoReturn:
    raise _Stopped(signal.Signals(signum).name)


def _serve_until_stopped(
    serve: Callable[[], object],
    cleanup: Callable[[], None],
    reload: Callable[[], None] | None = None,
) -> None:
    """Serve in the main thread until SIGTERM or SIGINT, then clean up and return (exit 0).

    SIGHUP calls ``reload`` (or is logged and ignored without one): its default
    action would end the process without a word.
    """

    def on_hangup(_signum: int, _frame: FrameType | None) -> None:
        log.info("SIGHUP received: reloading")
        if reload is None:
            return
        # Off the signal handler: a reload may take locks the interrupted thread holds.
        threading.Thread(target=_reload_logged, args=(reload,), name="reload").start()

    signal.signal(signal.SIGTERM, _on_stop)
    signal.signal(signal.SIGINT, _on_stop)
    signal.signal(signal.SIGHUP, on_hangup)
    try:
        serve()
    except _Stopped as stop:
        log.info("stopping on %s", stop)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        cleanup()


def _reload_logged(reload: Callable[[], None]) -> None:
    try:
        reload()
    except Exception:
        log.exception("reload failed")


def main() -> None:
    cli(prog_name="elevate-import-exporter")
