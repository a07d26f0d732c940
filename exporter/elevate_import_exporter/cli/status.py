"""``status``: the statuses of some imports, once or until final, as an exit status."""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from elevate_import_exporter.cli.common import (
    SetupError,
    flags,
    run_option,
    settings_from,
    warn_about,
)
from elevate_import_exporter.cli.status_view import LiveView, View, duration, make_view
from elevate_import_exporter.core import logs
from elevate_import_exporter.core.model import WHOLE_KEY_HINTS
from elevate_import_exporter.polling.status import (
    MAX_INTERVAL,
    MAX_TIMEOUT,
    MIN_INTERVAL,
    MIN_TIMEOUT,
    Outcome,
    Progress,
    open_api,
    watch,
)
from elevate_import_exporter.settings.config import ConfigError, Settings
from elevate_import_exporter.settings.options import LOG_OPTIONS, duration_between

# The settings of `run` that a status check uses: where Elevate is, the key, the flavour
# and how to ask. Ids come as arguments.
STATUS_OPTIONS = tuple(
    run_option(dest)
    for dest in (
        "cluster_id",
        "base_url",
        "api_key_file",
        "api",
        "concurrency",
        "timeout",
        "retries",
    )
)
INTERRUPTED = 130  # as a shell reports a process ended by SIGINT
_EXAMPLES = "90s, 30m or 1h"
EPILOG = """\b
Exit status:
  0  every import SUCCESS
  1  some import FAILURE, ABORTED or NOT_FOUND
  2  usage or configuration error
  3  the API kept failing: 403, 404, or 5xx/timeouts beyond --elevate.retries
  4  some import still on its way: --timeout passed (without --wait: at once)
  130  interrupted (Ctrl-C)"""


@click.command("status", epilog=EPILOG)
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@click.option("--wait", is_flag=True, help="Poll until every import is final or --timeout passes.")
@click.option(
    "--timeout",
    "wait_for",
    default="30m",
    show_default=True,
    help="How long to wait at most (a duration: 90s, 30m, 1h).",
)
@click.option(
    "--interval",
    default="10s",
    show_default=True,
    help=f"Time between polls of an import with --wait; at least {MIN_INTERVAL:g}s.",
)
@click.option(
    "--output",
    type=click.Choice(["text", "json"], case_sensitive=False),
    default="text",
    show_default=True,
    help="text: a line per import (live on a terminal); json: one document at the end.",
)
@flags(*STATUS_OPTIONS, *LOG_OPTIONS)
@click.pass_context
def status_command(
    ctx: click.Context,
    /,
    ids: tuple[str, ...],
    wait: bool,
    wait_for: str,
    interval: str,
    output: str,
    **options: Any,
) -> None:
    """Show the status of imports; with --wait, wait until they are final.

    For pipelines: `elevate-import-exporter status --wait "$ID" || exit 1`.
    The same settings, key handling and API flavours as run.
    """
    settings = settings_from(api_key=os.environ.get("ELEVATE_API_KEY"), import_ids=ids, **options)
    try:
        timeout = duration_between(
            wait_for, "--timeout", MIN_TIMEOUT, MAX_TIMEOUT, _EXAMPLES, duration
        )
        every = duration_between(
            interval, "--interval", MIN_INTERVAL, MAX_INTERVAL, _EXAMPLES, duration
        )
    except ConfigError as exc:
        raise SetupError(str(exc)) from None
    logs.configure(settings.log_level, settings.log_format, [settings.api_key.reveal()])
    warn_about(settings)
    view = make_view(
        sys.stdout, output=output.lower(), wait=wait, timeout=timeout, ids=len(settings.import_ids)
    )
    try:
        with _logs_held_back(isinstance(view, LiveView)):
            outcome = _check(settings, view, wait=wait, timeout=timeout, interval=every)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        ctx.exit(INTERRUPTED)
    ctx.exit(outcome.value)


def _check(settings: Settings, view: View, **how: Any) -> Outcome:
    """Run the check, showing it in ``view``; its outcome."""
    last: Progress | None = None
    try:
        with open_api(settings) as api:
            for last in watch(api, settings.import_ids, concurrency=settings.concurrency, **how):
                if last.outcome is None:
                    view.show(last)
    except KeyboardInterrupt:
        view.end(None)
        raise
    view.end(last)
    if last is None or last.outcome is None:
        raise RuntimeError("the status check ended without an outcome")
    # After the view, on stderr: a pipeline's log shows what to fix next to the exit status.
    reasons = {state.error.reason for state in last.states if state.error is not None}
    for reason in sorted(reasons & WHOLE_KEY_HINTS.keys()):
        click.echo(f"hint: {WHOLE_KEY_HINTS[reason]}", err=True)
    return last.outcome


@contextmanager
def _logs_held_back(hold: bool) -> Iterator[None]:
    """Log lines kept back while the live view draws on the same terminal: a line written
    between its redraws would shift the screen under it. Written out once it ends."""
    terminal = sys.stderr.isatty()
    handlers = [
        h
        for h in logging.getLogger().handlers
        if hold and terminal and isinstance(h, logging.StreamHandler) and h.stream is sys.stderr
    ]
    held = io.StringIO()
    for handler in handlers:
        handler.setStream(held)
    try:
        yield
    finally:
        for handler in handlers:
            handler.setStream(sys.stderr)
        sys.stderr.write(held.getvalue())
