"""What the commands share: flags from the option table, errors as exit status 2, signals."""

from __future__ import annotations

import logging
import re
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, NoReturn
from urllib.parse import urlsplit

import click
from click.core import ParameterSource

from elevate_import_exporter.core import logs
from elevate_import_exporter.settings.config import (
    ConfigError,
    Settings,
    choice,
    load_settings,
    parse_listen_address,
)
from elevate_import_exporter.settings.options import LOG_OPTIONS, RUN_OPTIONS, Option
from elevate_import_exporter.simulator import ScriptedImport, Simulator

log = logging.getLogger("elevate_import_exporter")

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


class SetupError(click.ClickException):
    """A configuration or start-up problem: a one-line message and exit status 2."""

    exit_code = 2


def run_option(dest: str) -> Option:
    """The ``run`` option whose load_settings keyword is ``dest``."""
    return next(option for option in RUN_OPTIONS if option.dest == dest)


def _split_list(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[str]:
    # The variable of a repeatable flag (ELEVATE_IMPORT_IDS, ELEVATE_EXPORTER_LISTEN_ADDRESS)
    # may separate values with commas as well as spaces; a flag takes one value as it
    # is, so that a bad one is refused rather than split or dropped.
    if param.name and ctx.get_parameter_source(param.name) is ParameterSource.ENVIRONMENT:
        return [part for value in values for part in re.split(r"[\s,]+", value) if part]
    return list(values)


def flag(option: Option, **overrides: Any) -> Decorator:
    """The click option of ``option``; ``overrides`` are click settings.

    A repeatable option whose default a command overrides with one string (the
    simulator's listen address) takes one value in that command.
    """
    multiple = option.multiple and not isinstance(overrides.get("default", ()), str)
    settings: dict[str, Any] = {
        "envvar": option.env,
        "default": option.default,
        "help": option.help,
        "multiple": multiple,
        "show_envvar": True,
        "show_default": True,
    }
    if multiple:
        settings["callback"] = _split_list
        if option.default is not None:
            settings["default"] = (option.default,)
    if option.boolean:
        # click reads the variable as a boolean: true/false, 1/0, yes/no, on/off.
        settings.update(is_flag=True, default=False)
    settings.update(overrides)
    return click.option(option.flag, option.dest, **settings)


def flags(*options: Option) -> Decorator:
    def apply(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            command = flag(option)(command)
        return command

    return apply


def settings_from(**options: Any) -> Settings:
    try:
        return load_settings(**options)
    except ConfigError as exc:
        raise SetupError(str(exc)) from None


def log_settings(level: str, fmt: str) -> tuple[str, str]:
    by_dest = {o.dest: o for o in LOG_OPTIONS}
    try:
        return (
            choice(level, by_dest["log_level"].flag, logs.LOG_LEVELS),
            choice(fmt, by_dest["log_format"].flag, logs.LOG_FORMATS),
        )
    except ConfigError as exc:
        raise SetupError(str(exc)) from None


def warn_if_key_goes_in_clear(base_url: str) -> None:
    host = urlsplit(base_url).hostname or ""
    if base_url.startswith("http://") and host not in ("localhost", "127.0.0.1", "::1"):
        log.warning("the API key goes to %s unencrypted: use an https:// base URL", host)


def warn_about(settings: Settings) -> None:
    """What the settings allow but a user should hear of, once logging is set up."""
    for warning in settings.warnings:
        log.warning("%s", warning)
    warn_if_key_goes_in_clear(settings.base_url)


@contextmanager
def running_simulator(
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


class _Stopped(Exception):
    pass


def _on_stop(signum: int, _frame: FrameType | None) -> NoReturn:
    raise _Stopped(signal.Signals(signum).name)


def serve_until_stopped(
    serve: Callable[[], object],
    cleanup: Callable[[], None],
    reload: Callable[[], None] | None = None,
    drain: Callable[[], None] | None = None,
) -> None:
    """Serve in the main thread until SIGTERM or SIGINT, then clean up and return (exit 0).

    With ``drain``, the first stop signal calls it (from the signal handler: it must only
    ask) and ``serve`` is expected to return once the requests in flight are answered; a
    second stop signal, or the first without ``drain``, stops at once. SIGHUP calls
    ``reload`` (or is logged and ignored without one): its default action would end the
    process without a word.
    """
    stopping: list[str] = []

    def on_stop(signum: int, frame: FrameType | None) -> None:
        if drain is None or stopping:
            _on_stop(signum, frame)
        stopping.append(signal.Signals(signum).name)
        drain()

    def on_hangup(_signum: int, _frame: FrameType | None) -> None:
        log.info("SIGHUP received: reloading")
        if reload is None:
            return
        # Off the signal handler: a reload may take locks the interrupted thread holds.
        threading.Thread(target=_reload_logged, args=(reload,), name="reload").start()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hangup)
    try:
        serve()
        if stopping:
            log.info("stopping on %s, after the requests in flight", stopping[0])
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
