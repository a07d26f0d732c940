"""The command line: ``run``, ``demo``, ``simulate``, ``status``, ``track``, ``proxy`` and
``hash-password``.

Only ``cli`` imports click. Flags are built from :mod:`elevate_import_exporter.settings.options`'
table and handed over as raw strings; the configuration decides what a good value is.
Errors of the core become exit status 2 here, and logging is configured here once. One
module per command group; ``common`` holds what they share.
"""

from __future__ import annotations

import click

from elevate_import_exporter import __version__
from elevate_import_exporter.cli import exporter, passwords, proxy, simulate, status, track
from elevate_import_exporter.cli.common import SetupError
from elevate_import_exporter.core.allocator import limit_arenas

__all__ = ["SetupError", "cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="elevate-import-exporter")
def cli() -> None:
    """Prometheus exporter for the status of Voyado Elevate background imports."""


cli.add_command(exporter.run)
cli.add_command(exporter.demo)
cli.add_command(simulate.simulate)
cli.add_command(status.status_command)
cli.add_command(track.track_command)
cli.add_command(proxy.proxy_command)
cli.add_command(passwords.hash_password_command)


def main() -> None:
    # Before any thread starts: a thread's first allocation picks its arena for good.
    limit_arenas()
    cli(prog_name="elevate-import-exporter")
