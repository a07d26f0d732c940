"""``track``: hand import ids to a running exporter, from a feed job or a pipeline.

The flags become typed values here (URL, labels, credentials, TLS files, timeout), and
the link the requests go out on is put together: requests with the TLS context, over the
Elevate transport's connections, which its deadline reaper shuts at the timeout. The
requests, their limits and the reading of the answers are :mod:`..lifecycle.track`'s.
The standalone proxy reaches its exporter the same way (:class:`LinkFlags` names its
``--registration.*`` flags in the messages).
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import click

from elevate_import_exporter import __version__
from elevate_import_exporter.cli.common import SetupError
from elevate_import_exporter.core.files import UnreadableFile, read_regular_file, read_text_file
from elevate_import_exporter.core.model import one_line
from elevate_import_exporter.elevate.deadline import Reaper
from elevate_import_exporter.elevate.transport import GuardedAdapter
from elevate_import_exporter.lifecycle.track import (
    CREDENTIAL_HINT,
    EXIT_UNREACHABLE,
    MAX_SHOWN,
    PATH,
    Client,
    Credentials,
    Endpoint,
    Link,
    OneContext,
    TrackError,
    accepted_at_of,
    registrations,
    session,
    track,
    usage,
)
from elevate_import_exporter.settings.config import ConfigError
from elevate_import_exporter.settings.options import duration_between, parse_http_url, shown_url

PASSWORD_ENV = "ELEVATE_EXPORTER_PASSWORD"  # noqa: S105 (the variable's name, not a password)
MIN_TIMEOUT, MAX_TIMEOUT = 0.1, 600.0
MAX_RETRIES = 10
INTERRUPTED = 130  # as a shell reports a process ended by SIGINT
# A password is short and a certificate or key small: a larger file is none of them.
MAX_PASSWORD_FILE_BYTES = 64 * 1024
MAX_PEM_FILE_BYTES = 1024 * 1024
_URL_PATH = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")


@dataclass(frozen=True)
class LinkFlags:
    """How a command names the options of its link to the exporter, for its messages:
    the URL's flag, the prefix of the others (``{prefix}.username`` ...), and the
    variable that may hold the password."""

    url: str
    prefix: str
    password_env: str


TRACK_FLAGS = LinkFlags("--exporter", "--exporter", PASSWORD_ENV)

EPILOG = f"""\b
Exit status:
  0  every id registered (created, or already tracked)
  1  the exporter refused: 4xx (a bad id or label, credentials, registration
     disabled, ...) or a redirect (never followed)
  2  usage: a bad flag, an empty id, a bad label, an unreadable file
  {EXIT_UNREACHABLE}  no usable answer: connection, TLS, timeout, 5xx, an unreadable answer
     (all but TLS and unreadable answers are retried --retries times)
  130  interrupted (Ctrl-C)

\b
The password comes from --exporter.password-file or the variable
{PASSWORD_ENV}, never from a flag. Example:
  {PASSWORD_ENV}=... elevate-import-exporter track \\
    --exporter https://exporter:10025 --exporter.username feeds \\
    --type PRODUCT --label feed=products "$IMPORT_ID\""""


@click.command("track", epilog=EPILOG)
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@click.option(
    "--exporter",
    "url",
    envvar="ELEVATE_EXPORTER_URL",
    show_envvar=True,
    metavar="URL",
    help="Base URL of the exporter, e.g. https://exporter:10025 (a path prefix is kept).",
)
@click.option("--type", "import_type", default="", metavar="TYPE", help="Import type to record.")
@click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="KEY=VALUE",
    help="A label for the imports (key: a-z 0-9 _); repeatable.",
)
@click.option(
    "--exporter.username",
    "username",
    envvar="ELEVATE_EXPORTER_USERNAME",
    show_envvar=True,
    help="Basic auth user of the exporter's web config.",
)
@click.option(
    "--exporter.password-file",
    "password_file",
    envvar="ELEVATE_EXPORTER_PASSWORD_FILE",
    show_envvar=True,
    metavar="FILE",
    help=f"File holding the basic auth password (else the variable {PASSWORD_ENV}).",
)
@click.option(
    "--exporter.ca-file",
    "ca_file",
    envvar="ELEVATE_EXPORTER_CA_FILE",
    show_envvar=True,
    metavar="FILE",
    help="PEM CA certificates to trust instead of the system's.",
)
@click.option(
    "--exporter.cert-file",
    "cert_file",
    envvar="ELEVATE_EXPORTER_CERT_FILE",
    show_envvar=True,
    metavar="FILE",
    help="PEM client certificate, with --exporter.key-file.",
)
@click.option(
    "--exporter.key-file",
    "key_file",
    envvar="ELEVATE_EXPORTER_KEY_FILE",
    show_envvar=True,
    metavar="FILE",
    help="PEM key of the client certificate (not encrypted).",
)
@click.option(
    "--exporter.allow-insecure",
    "allow_insecure",
    is_flag=True,
    help="Send the password over http:// to another host than this one.",
)
@click.option(
    "--timeout",
    default="10s",
    metavar="DURATION",
    show_default=True,
    help="Bound of each attempt: connecting, every read and the whole exchange.",
)
@click.option(
    "--retries",
    default=2,
    show_default=True,
    type=click.IntRange(0, MAX_RETRIES),
    help="More attempts after a connection problem, timeout or 5xx (1s, 2s, 4s ... apart).",
)
@click.option(
    "--accepted-at",
    "accepted_at",
    default=None,
    metavar="SECONDS",
    help="When Elevate accepted the imports (its 202), in Unix seconds, or 'now' (track run "
    "right after the upload): durations and queue time are measured from it.",
)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
@click.pass_context
def track_command(
    ctx: click.Context,
    /,
    ids: tuple[str, ...],
    url: str | None,
    import_type: str,
    labels: tuple[str, ...],
    username: str | None,
    password_file: str | None,
    ca_file: str | None,
    cert_file: str | None,
    key_file: str | None,
    allow_insecure: bool,
    timeout: str,
    retries: int,
    accepted_at: str | None,
    quiet: bool,
) -> None:
    """Register import ids with a running exporter (POST /api/v1/imports).

    Prints a line per id: "ID created" or "ID already tracked". Only the exporter
    judges the ids (it knows the API flavour); empty ids and labels are checked here.
    """
    try:
        if not url:
            raise usage("--exporter (or ELEVATE_EXPORTER_URL) is required")
        accepted = None if accepted_at is None else accepted_at_of(accepted_at, time.time())
        items = registrations(ids, import_type, [_label(label) for label in labels], accepted)
        endpoint = link_endpoint(url, TRACK_FLAGS)
        credentials = link_credentials(username, password_file, TRACK_FLAGS)
        tls = link_tls(ca_file, cert_file, key_file, TRACK_FLAGS)
        check_transport(endpoint, credentials, tls, TRACK_FLAGS, allow_insecure=allow_insecure)
        seconds = duration_between(
            timeout, "--timeout", MIN_TIMEOUT, MAX_TIMEOUT, "500ms, 10s or 1m"
        )
    except (TrackError, ConfigError) as exc:
        raise SetupError(str(exc)) from None
    client, reaper = open_client(
        endpoint,
        credentials,
        tls,
        TRACK_FLAGS,
        timeout=seconds,
        retries=retries,
        user_agent=f"elevate-import-exporter/{__version__} track",
    )
    try:
        for batch in track(client, items):
            for tracked in () if quiet else batch:
                state = "created" if tracked.created else "already tracked"
                click.echo(f"{one_line(tracked.id, MAX_SHOWN)} {state}")
    except TrackError as exc:
        # As click shows its own errors (SetupError): "Error: " and one line.
        click.echo(f"Error: {exc}", err=True)
        ctx.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        ctx.exit(INTERRUPTED)
    finally:
        client.link.session.close()
        reaper.close()


class _Adapter(OneContext, GuardedAdapter):
    """TLS with one context, over connections that a deadline shuts: the transport's."""


def open_client(
    endpoint: Endpoint,
    credentials: Credentials | None,
    tls: ssl.SSLContext | None,
    flags: LinkFlags,
    *,
    timeout: float,
    retries: int,
    user_agent: str,
) -> tuple[Client, Reaper]:
    """The client for ``endpoint``, and the reaper that shuts its connections at their
    deadline: close the client's session, then the reaper, when done."""
    reaper = Reaper()
    # Without TLS options, the system's CAs (as curl and Prometheus), not requests' bundle.
    adapter = _Adapter(tls or ssl.create_default_context())
    client = Client(
        endpoint,
        Link(session(adapter), reaper.guard),
        credentials=credentials,
        own_ca=tls is not None,
        timeout=timeout,
        retries=retries,
        user_agent=user_agent,
        flags=flags.prefix,
    )
    return client, reaper


def _hint(flags: LinkFlags) -> str:
    return CREDENTIAL_HINT.replace("--exporter", flags.prefix).replace(
        PASSWORD_ENV, flags.password_env
    )


def link_endpoint(url: str, flags: LinkFlags) -> Endpoint:
    """The exporter's registration API at the base URL ``url``; :class:`TrackError` (usage)
    naming ``flags.url`` if it is not one."""
    if re.search(r"//[^/?#]*@", url):
        # Not echoed: it holds a password, and a password on a command line shows in `ps`.
        raise usage(f"{flags.url} must not hold credentials (user:password@): use {_hint(flags)}")
    try:
        parsed = parse_http_url(url.strip(), flags.url)
    except ConfigError as exc:
        raise usage(str(exc)) from None
    if not _URL_PATH.fullmatch(parsed.path):
        raise usage(f"{flags.url} must be a base URL, got {shown_url(url)!r}")
    return Endpoint(parsed.scheme, parsed.host, parsed.base + PATH, parsed.base)


def _label(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals:
        raise usage(f"--label must be key=value, got {text[:100]!r}")
    return key, value


def link_credentials(
    username: str | None, password_file: str | None, flags: LinkFlags
) -> Credentials | None:
    """Basic auth credentials, the password from its file or ``flags.password_env``; None
    without a user name."""
    pre, env = flags.prefix, flags.password_env
    from_env = os.environ.get(env) or None
    if password_file and from_env:
        raise usage(f"give the password once: {pre}.password-file or {env}")
    password = _password_from(password_file, flags) if password_file else from_env
    if not username:
        if password is not None:
            raise usage(f"a password is given but no {pre}.username")
        return None
    if ":" in username or not username.isprintable():
        raise usage(f"{pre}.username must not hold ':' or control characters")
    if not password:
        raise usage(f"{pre}.username needs a password: {pre}.password-file or {env}")
    return Credentials(username, password)


def _password_from(path: str, flags: LinkFlags) -> str:
    try:
        _, text = read_text_file(Path(path), MAX_PASSWORD_FILE_BYTES)
    except UnreadableFile as exc:
        raise usage(f"{flags.prefix}.password-file {path}: {exc}") from None
    # As Prometheus reads a password_file: white space around it (the final newline) is
    # not part of the password.
    password = text.strip()
    if not password:
        raise usage(f"{flags.prefix}.password-file {path} is empty")
    return password


def link_tls(
    ca_file: str | None, cert_file: str | None, key_file: str | None, flags: LinkFlags
) -> ssl.SSLContext | None:
    """None without TLS options (https:// then trusts the system's CAs)."""
    pre = flags.prefix
    if bool(cert_file) != bool(key_file):
        raise usage(f"{pre}.cert-file and {pre}.key-file go together")
    if not ca_file and not cert_file:
        return None
    context = ssl.create_default_context()
    if ca_file:
        pem = _read(ca_file, f"{pre}.ca-file").decode("utf-8", "replace")
        try:
            # Only this CA, as Prometheus' ca_file: a private CA is not to be mixed with others.
            context = ssl.create_default_context(cadata=pem)
        except (ssl.SSLError, ValueError) as exc:
            raise usage(
                f"{pre}.ca-file {ca_file}: no PEM certificate in it "
                f"({one_line(str(exc), MAX_SHOWN)})"
            ) from None
    if cert_file and key_file:
        # Read once here, so that a named pipe or a huge file fails at once instead of
        # blocking OpenSSL, which reads them again by name.
        _read(cert_file, f"{pre}.cert-file")
        _read(key_file, f"{pre}.key-file")
        try:
            # A callable, so that an encrypted key fails instead of asking on the terminal.
            context.load_cert_chain(cert_file, key_file, password=_no_passphrase)
        except (OSError, ValueError) as exc:
            raise usage(
                f"{pre}.cert-file {cert_file} with {pre}.key-file {key_file}: not a "
                f"matching PEM certificate and unencrypted key ({one_line(str(exc), MAX_SHOWN)})"
            ) from None
    return context


def _no_passphrase() -> bytes:
    raise ValueError("the key is encrypted")


def _read(path: str, flag: str) -> bytes:
    try:
        return read_regular_file(Path(path), MAX_PEM_FILE_BYTES)[1]
    except UnreadableFile as exc:
        raise usage(f"{flag} {path}: {exc}") from None


def check_transport(
    endpoint: Endpoint,
    credentials: Credentials | None,
    tls: ssl.SSLContext | None,
    flags: LinkFlags,
    *,
    allow_insecure: bool,
) -> None:
    """Refuse TLS options without TLS, and a password in clear text to another host."""
    if endpoint.scheme == "https":
        return
    if tls is not None:
        raise usage(f"TLS options need an https:// {flags.url} URL, got {endpoint.shown}")
    if credentials and not allow_insecure and not _loopback(endpoint.host):
        raise usage(
            f"the password would cross the network in clear text to {endpoint.shown}: use "
            f"https://, or {flags.prefix}.allow-insecure to send it anyway"
        )


def _loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
