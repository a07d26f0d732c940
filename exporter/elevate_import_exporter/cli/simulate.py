"""``simulate``: a simulated Elevate API for trials, tests and benchmarks."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import click

from elevate_import_exporter.cli.common import (
    SetupError,
    flag,
    flags,
    log_settings,
    run_option,
    running_simulator,
    serve_until_stopped,
)
from elevate_import_exporter.cli.exporter import SIMULATOR_LISTEN_ADDRESS
from elevate_import_exporter.core import logs
from elevate_import_exporter.core.model import API_FLAVOURS
from elevate_import_exporter.settings.config import ConfigError, check_key, read_key_file
from elevate_import_exporter.settings.options import LOG_OPTIONS
from elevate_import_exporter.simulator import (
    IMPORT_ENDPOINTS,
    SCENARIO_FORMAT,
    ScenarioError,
    ScriptedImport,
    demo_imports,
    generated_imports,
    load_scenario,
)

SIMULATOR_DEFAULT_KEY = "simulator-key"


@click.command(epilog="\b\n" + SCENARIO_FORMAT + "\n\n\b\n" + IMPORT_ENDPOINTS)
@flag(
    run_option("listen_address"),
    envvar="ELEVATE_SIMULATOR_LISTEN_ADDRESS",
    default=SIMULATOR_LISTEN_ADDRESS,
    help="[host]:port to serve the simulated API on.",
)
@flag(
    run_option("api_key_file"),
    help=f"File holding the Api-Key to accept. Or ELEVATE_API_KEY; else '{SIMULATOR_DEFAULT_KEY}'.",
)
@click.option(
    "--api",
    type=click.Choice(API_FLAVOURS, case_sensitive=False),
    default=API_FLAVOURS[0],
    envvar=run_option("api").env,
    show_envvar=True,
    show_default=True,
    help="Flavour of the API to simulate, as --elevate.api of run names it.",
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
@flags(*LOG_OPTIONS)
def simulate(
    listen_address: str,
    api_key_file: str | None,
    api: str,
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
    """Serve a simulated Elevate API: Web API v2, or Admin API v4 or v3 with --api."""
    level, fmt = log_settings(log_level, log_format)
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
    options: dict[str, Any] = {
        "latency": latency,
        "error_rate": error_rate,
        "fail_ids": fail_id,
        "hang_ids": hang_id,
        "garbage_ids": garbage_id,
        "api": api.lower(),
    }
    with running_simulator(imports, key, listen_address, **options) as simulator:
        click.echo(f"simulated Elevate API ({api}) at {simulator.url} with {len(imports)} imports")
        stopped = threading.Event()
        serve_until_stopped(lambda: stopped.wait(), stopped.set)


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
