"""``hash-password``: the bcrypt hash of a password, for a web config's ``basic_auth_users``.

The password never comes from a flag (a flag shows in ``ps`` and the shell's history): it
is typed at a terminal, twice and without echo, or read as one line from a pipe. Only the
hash goes to stdout, so that ``$(...)`` takes it as it is; prompts and errors go to stderr
and never hold the password.
"""

from __future__ import annotations

import sys

import click

from elevate_import_exporter.cli.common import SetupError
from elevate_import_exporter.httpd.auth import (
    DEFAULT_COST,
    MAX_COST,
    MAX_PASSWORD_BYTES,
    MIN_COST,
    PasswordError,
    hash_password,
)

# One line of a pipe is read, no more: a password is short, and a stream that never ends
# a line must not be read into memory whole. Past the bcrypt limit the length is refused.
_MAX_LINE_BYTES = 4 * MAX_PASSWORD_BYTES
_NO_INPUT = "no password on stdin: type it at a terminal or pipe it in as a line"

EPILOG = f"""\b
At a terminal the password is asked twice, without echo; from a pipe the first
line is read (its line break is not part of the password). At most
{MAX_PASSWORD_BYTES} bytes (UTF-8): bcrypt reads no further. Example:
  elevate-import-exporter hash-password
  printf '%s\\n' "$PASSWORD" | elevate-import-exporter hash-password --cost 12
then in web-config.yml:
  basic_auth_users:
    prometheus: '$2b$10$...'"""


@click.command("hash-password", epilog=EPILOG)
@click.option(
    "--cost",
    type=click.IntRange(MIN_COST, MAX_COST),
    default=DEFAULT_COST,
    show_default=True,
    help="bcrypt cost: each step doubles the time a check takes.",
)
def hash_password_command(cost: int) -> None:
    """Print the bcrypt hash of a password, for basic_auth_users in --web.config.file."""
    if sys.stdin is None:  # started with stdin closed, not merely empty
        raise SetupError(_NO_INPUT)
    password = _typed() if sys.stdin.isatty() else _piped()
    try:
        hashed = hash_password(password, cost)
    except PasswordError as exc:
        raise SetupError(str(exc)) from None
    click.echo(hashed)


def _typed() -> bytes:
    # Ctrl-C or Ctrl-D at the prompt: click's "Aborted!" and exit status 1.
    text: str = click.prompt("Password", hide_input=True, confirmation_prompt="Again", err=True)
    return text.encode("utf-8")


def _piped() -> bytes:
    line = sys.stdin.buffer.readline(_MAX_LINE_BYTES + 1)
    if not line:
        raise SetupError(_NO_INPUT)
    if line.endswith(b"\n"):
        line = line[:-1]
        # A line from Windows: its CR ends the line, as for every other tool that reads one.
        if line.endswith(b"\r"):
            line = line[:-1]
    elif len(line) > _MAX_LINE_BYTES:
        raise SetupError(
            f"the password is over {MAX_PASSWORD_BYTES} bytes long; bcrypt takes at most "
            f"{MAX_PASSWORD_BYTES} (UTF-8) bytes"
        )
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        raise SetupError("the password on stdin is not UTF-8 text") from None
    return line
