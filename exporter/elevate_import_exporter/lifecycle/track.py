"""Handing import ids to a running exporter: the core of the ``track`` command.

Builds the ``POST /api/v1/imports`` requests (checking what can be checked here: empty
ids, label keys) and sends them with requests, bounded in time (each read, and the whole
request by the deadline of the :class:`Link` the edge gives) and in size. Only the
exporter judges the ids: it alone knows the API flavour. Its answers are hostile input:
read up to a limit, checked field by field, and any text of theirs shown as one cleaned
line with the credentials masked; of the client library's errors only the kind is shown,
as their texts quote what the server sent.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import math
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

import requests
from requests.adapters import HTTPAdapter

from elevate_import_exporter.core.logs import redacting
from elevate_import_exporter.core.model import causes, one_line
from elevate_import_exporter.core.records import Registration
from elevate_import_exporter.lifecycle.registration import CLOCK_ALLOWANCE

if TYPE_CHECKING:
    from requests.adapters import _HostParams, _PoolKwargs

log = logging.getLogger(__name__)

PATH = "/api/v1/imports"
EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3
# The exporter's limits per request: 1,000 imports and 1 MiB; a longer list goes in parts.
MAX_PER_REQUEST = 1000
MAX_REQUEST_BYTES = 1_000_000
# What is read of an answer: 64 KiB, plus room for the exporter's line about each id sent.
ANSWER_BYTES, ANSWER_BYTES_PER_ID = 64 * 1024, 1024
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 8.0
MAX_SHOWN = 200
LABEL_KEY = re.compile(r"[a-z_][a-z0-9_]*")
LABEL_KEY_RULE = "a-z 0-9 _, not starting with a digit"
CREDENTIAL_HINT = "--exporter.username with --exporter.password-file or ELEVATE_EXPORTER_PASSWORD"


class TrackError(Exception):
    """Why ids were not handed over, in one line, and the exit status that says so:
    :data:`EXIT_USAGE` before any request, :data:`EXIT_REFUSED` for a 4xx or 3xx,
    :data:`EXIT_UNREACHABLE` for no usable answer (``retry``: worth another attempt).
    ``status``: the answer's status when one came (set by :func:`post_once`)."""

    def __init__(
        self, message: str, exit_code: int, *, retry: bool = False, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.retry = retry
        self.status = status


def usage(message: str) -> TrackError:
    return TrackError(message, EXIT_USAGE)


def _unreachable(message: str, *, retry: bool) -> TrackError:
    return TrackError(message, EXIT_UNREACHABLE, retry=retry)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the exporter's registration API is: its ``url``; ``shown`` is the exporter's
    base URL for messages."""

    scheme: str
    host: str
    url: str
    shown: str


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    @property
    def token(self) -> str:
        return base64.b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")


class Expiring(Protocol):
    @property
    def expired(self) -> bool:
        """Whether the deadline passed, and the request's connection was shut."""


@dataclass(frozen=True, slots=True)
class Link:
    """How requests go out: a session whose connections a deadline can shut, and
    ``bound(deadline)``, within which a request sent is shut at ``deadline`` (monotonic):
    a socket timeout bounds each read, not an answer that trickles a byte a second."""

    session: requests.Session
    bound: Callable[[float], AbstractContextManager[Expiring]]


class OneContext(HTTPAdapter):
    """An adapter whose https:// connections use ``context`` as it is: only its CAs are
    trusted (requests would load its own bundle into it), its client certificate shown."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        super().__init__(max_retries=0)

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: bool | str, cert: Any = None
    ) -> tuple[_HostParams, _PoolKwargs]:
        host, pool = super().build_connection_pool_key_attributes(request, True, None)
        pool["ssl_context"] = self._context
        return host, pool

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """Nothing to add: the context holds the CAs and the client certificate."""


def session(adapter: HTTPAdapter) -> requests.Session:
    """A session for ``track``: ``adapter`` for both schemes, nothing from the environment
    (a proxy, a CA bundle or a ~/.netrc password would change where the password goes)."""
    http = requests.Session()
    http.trust_env = False
    http.mount("https://", adapter)
    http.mount("http://", adapter)
    return http


@dataclass(frozen=True, slots=True)
class Client:
    """How to reach the exporter. ``timeout`` bounds each attempt (connect, every read and
    the whole exchange); ``retries`` more attempts follow connection problems and 5xx.
    ``own_ca``: TLS options were given, so no hint to give them. ``flags``: how the
    options are named in hints (the proxy's are ``--registration.*``)."""

    endpoint: Endpoint
    link: Link
    credentials: Credentials | None = None
    own_ca: bool = False
    timeout: float = 10.0
    retries: int = 2
    user_agent: str = "elevate-import-exporter"
    flags: str = "--exporter"


@dataclass(frozen=True, slots=True)
class Tracked:
    id: str
    created: bool


def registrations(
    ids: Iterable[str],
    import_type: str = "",
    labels: Sequence[tuple[str, str]] = (),
    accepted_at: float | None = None,
) -> list[Registration]:
    """One registration per distinct id, each with ``import_type``, ``labels`` and
    ``accepted_at`` (Unix seconds, or None)."""
    keys = [key for key, _ in labels]
    for key, value in labels:
        if not LABEL_KEY.fullmatch(key):
            raise usage(f"--label key {key[:100]!r} must be {LABEL_KEY_RULE}")
        if keys.count(key) > 1:
            raise usage(f"--label {key!r} is given more than once")
        _check_text(value, f"--label {key}")
    _check_text(import_type, "--type")
    unique: dict[str, None] = {}
    for position, import_id in enumerate(ids, 1):
        if not import_id.strip():
            raise usage(f"import id number {position} is empty")
        _check_text(import_id, "an import id")
        unique.setdefault(import_id)
    return [Registration(i, import_type, tuple(sorted(labels)), accepted_at) for i in unique]


def accepted_at_of(text: str, now: float) -> float:
    """``--accepted-at``: Unix seconds, or ``now``; checked as the exporter checks it."""
    if text.strip().lower() == "now":
        return now
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0 or seconds > now + CLOCK_ALLOWANCE:
        raise usage(
            f"--accepted-at must be Unix seconds from 1970 to now (or 'now'), got {text[:100]!r}"
        )
    return seconds


def _check_text(value: str, name: str) -> None:
    # Bytes that are not UTF-8 reach Python's argv as lone surrogates: no JSON can carry them.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise usage(f"{name} is not valid UTF-8 text: {value[:100]!r}") from None


def request_bodies(items: Sequence[Registration]) -> Iterator[tuple[list[str], bytes]]:
    """The request bodies for ``items``, each within the exporter's limits, with their ids.

    One registration goes as a JSON object, several as an array.
    """
    batch: list[tuple[str, bytes]] = []
    size = 2  # the brackets of an array; a comma before each item after the first
    for item in items:
        document: dict[str, object] = {"id": item.id}
        if item.type:
            document["type"] = item.type
        if item.labels:
            document["labels"] = dict(item.labels)
        if item.accepted_at is not None:
            document["accepted_at"] = item.accepted_at
        encoded = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
        if batch and (len(batch) == MAX_PER_REQUEST or size + len(encoded) > MAX_REQUEST_BYTES):
            yield _body(batch)
            batch, size = [], 2
        batch.append((item.id, encoded))
        size += len(encoded) + 1
    if batch:
        yield _body(batch)


def _body(batch: list[tuple[str, bytes]]) -> tuple[list[str], bytes]:
    ids = [import_id for import_id, _ in batch]
    if len(batch) == 1:
        return ids, batch[0][1]
    return ids, b"[" + b",".join(encoded for _, encoded in batch) + b"]"


def track(client: Client, items: Sequence[Registration]) -> Iterator[list[Tracked]]:
    """Register ``items``, one request after the other; what each request tracked.

    Raises :class:`TrackError` at the first request that fails for good; what earlier
    requests registered stays registered (registering again is harmless).
    """
    for ids, body in request_bodies(items):
        yield _send(client, ids, body)


def post_once(client: Client, items: Sequence[Registration], query: str = "") -> list[Tracked]:
    """Register ``items`` with one attempt per request and no pause: for a caller with a
    retry policy of its own (the standalone proxy's delivery). ``query`` (``source=proxy``)
    goes on the URL. Raises :class:`TrackError` with the answer's ``status`` if one came;
    what earlier requests registered stays registered."""
    if query:
        client = replace(
            client, endpoint=replace(client.endpoint, url=f"{client.endpoint.url}?{query}")
        )
    tracked: list[Tracked] = []
    for ids, body in request_bodies(items):
        status, data, location = _exchange(client, body, len(ids))
        try:
            tracked += _interpret(client, ids, status, data, location)
        except TrackError as exc:
            exc.status = status
            raise
    return tracked


def _send(client: Client, ids: list[str], body: bytes) -> list[Tracked]:
    # Retrying is safe even when an answer was lost: registering a known id changes nothing.
    attempt = 0
    while True:
        try:
            return _interpret(client, ids, *_exchange(client, body, len(ids)))
        except TrackError as exc:
            if not exc.retry or attempt >= client.retries:
                if attempt:
                    raise _unreachable(f"{exc} ({attempt + 1} attempts)", retry=False) from None
                raise
            delay = min(BACKOFF_FIRST * 2**attempt, BACKOFF_MAX)
            log.debug("attempt %d failed (%s); again in %gs", attempt + 1, exc, delay)
            time.sleep(delay)
            attempt += 1


def _exchange(client: Client, body: bytes, count: int) -> tuple[int, bytes, str]:
    """The status, the start of the body and the Location header of the answer."""
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        # A small answer gains nothing by compression, and this one is read with a cap.
        "Accept-Encoding": "identity",
        "User-Agent": client.user_agent,
        "Connection": "close",
    }
    if client.credentials is not None:
        headers["Authorization"] = "Basic " + client.credentials.token
    # One byte more than is kept, to tell an answer that is too large.
    limit = ANSWER_BYTES + ANSWER_BYTES_PER_ID * count + 1
    response: requests.Response | None = None
    with client.link.bound(time.monotonic() + client.timeout) as bound:
        try:
            # A redirect is an answer to show, not to follow: the credentials would go along.
            response = client.link.session.post(
                client.endpoint.url,
                data=body,
                headers=headers,
                timeout=client.timeout,
                stream=True,
                allow_redirects=False,
            )
            with contextlib.closing(response):
                data = _capped(response, limit)
        except Exception as exc:
            raise _failure(client, exc, bound.expired, begun=response is not None) from None
        if bound.expired:
            # The answer may have been cut short at the deadline: not to be trusted.
            raise _failure(client, TimeoutError(), True, begun=True)
    return response.status_code, data, response.headers.get("Location", "")


def _capped(response: requests.Response, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    # Through requests, so that what breaks in the body is one of its exceptions. A body
    # compressed all the same is inflated a read at a time: the cap counts what it makes.
    for chunk in response.iter_content(64 * 1024):
        chunks.append(chunk[: limit - size])
        size += len(chunks[-1])
        if size >= limit:
            break
    return b"".join(chunks)


def _failure(client: Client, exc: BaseException, expired: bool, *, begun: bool) -> TrackError:
    """What went wrong: the deadline ``expired``, or ``exc`` before the answer's head
    arrived or, once it had ``begun``, in its body."""
    where = client.endpoint.shown
    behind = list(causes(exc))
    if expired or any(isinstance(c, _TIMEOUTS) for c in behind):
        return _unreachable(f"{where} did not answer within {client.timeout:g}s", retry=True)
    if not any(isinstance(c, _EXPECTED) for c in behind):
        raise exc
    if any(isinstance(c, _CLOSED) for c in behind):
        # A server that closes with the request unread resets the connection instead.
        said = "inside its answer" if begun else "without an answer"
        return _unreachable(f"{where} closed the connection {said}", retry=True)
    for cause in behind:
        if isinstance(cause, ssl.SSLCertVerificationError) and not client.own_ca:
            hint = f" (trust a private CA with {client.flags}.ca-file)"
            return _unreachable(f"TLS with {where} failed: {_why(cause)}{hint}", retry=False)
        if isinstance(cause, ssl.SSLError):
            return _unreachable(f"TLS with {where} failed: {_why(cause)}", retry=False)
        if isinstance(cause, http.client.HTTPException):
            # Its name only: its text quotes what the server sent, which may be anything.
            kind = type(cause).__name__
            return _unreachable(f"{where} did not answer in HTTP ({kind})", retry=False)
        if isinstance(cause, socket.gaierror):
            host = client.endpoint.host
            return _unreachable(f"cannot resolve {host}: {_why(cause)}", retry=True)
    oserror = next((c for c in behind if isinstance(c, OSError) and c.strerror), None)
    if oserror is not None:
        return _unreachable(f"no answer from {where}: {_why(oserror)}", retry=True)
    # The library's own words quote the URL and what the server sent: its type says enough.
    return _unreachable(f"no answer from {where} ({type(behind[-1]).__name__})", retry=True)


# Whatever wraps it, a socket's timeout is the builtin TimeoutError.
_TIMEOUTS = (requests.Timeout, TimeoutError)
_EXPECTED = (requests.RequestException, OSError, http.client.HTTPException)
_CLOSED = (
    ConnectionResetError,  # RemoteDisconnected too
    BrokenPipeError,
    http.client.IncompleteRead,
    requests.exceptions.ChunkedEncodingError,
)


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return exc.verify_message
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


def _interpret(
    client: Client, ids: list[str], status: int, body: bytes, location: str
) -> list[Tracked]:
    where = client.endpoint.shown
    if status in (200, 201):
        return _tracked(client, ids, body)
    if 300 <= status < 400:
        location = _masked(client, location)
        message = f"{where} answered {status}, a redirect to {location!r} (not followed)"
        raise TrackError(message, EXIT_REFUSED)
    detail = _detail(client, body)
    if 400 <= status < 500:
        message = f"{where} refused the registration with {status}: {detail}"
        raise TrackError(message + _hint(client, status), EXIT_REFUSED)
    if 500 <= status < 600:
        raise _unreachable(f"{where} failed with {status}: {detail}", retry=True)
    raise _unreachable(f"{where} answered the unexpected status {status}: {detail}", retry=False)


def _hint(client: Client, status: int) -> str:
    if status == 401 and client.credentials is None:
        return f" (no credentials given: {CREDENTIAL_HINT.replace('--exporter', client.flags)})"
    return {
        401: f" (check {client.flags}.username and the password)",
        404: " (is this the exporter's base URL, and does it have /api/v1/imports?)",
    }.get(status, "")


def _tracked(client: Client, ids: list[str], body: bytes) -> list[Tracked]:
    def bad(why: str) -> TrackError:
        start = _masked(client, body.decode("utf-8", "replace"))
        return _unreachable(f"{client.endpoint.shown} answered with {why}: {start}", retry=False)

    if len(body) > ANSWER_BYTES + ANSWER_BYTES_PER_ID * len(ids):
        raise bad("an answer too large to read")
    try:
        document = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        raise bad("something that is not JSON") from None
    imports = document.get("imports") if isinstance(document, dict) else None
    if not isinstance(imports, list):
        raise bad('JSON without an "imports" list')
    created = {
        item["id"]: item["created"]
        for item in imports
        if isinstance(item, dict)
        and isinstance(item.get("id"), str)
        and isinstance(item.get("created"), bool)
    }
    missing = [import_id for import_id in ids if import_id not in created]
    if missing:
        raise bad(
            f"no word on {len(missing)} of the ids sent, {one_line(missing[0], MAX_SHOWN)!r} first"
        )
    return [Tracked(import_id, created[import_id]) for import_id in ids]


def _detail(client: Client, body: bytes) -> str:
    """The exporter's error, ``{"error": ..., "field": ...}``, or the start of its body."""
    with suppress(ValueError, RecursionError):
        document = json.loads(body.decode("utf-8"))
        if isinstance(document, dict) and isinstance(document.get("error"), str):
            text = _masked(client, document["error"]) or "(no message)"
            name = document.get("field")
            if isinstance(name, str) and name:
                text += f" (field {_masked(client, name[:64])})"
            return text
    # Masked before it is cut: a cut must not leave the start of a password to show.
    return _masked(client, body.decode("utf-8", "replace")) or "(empty answer)"


def _masked(client: Client, text: str) -> str:
    """``text`` from the exporter on one line, with our credentials masked: a hostile or
    broken server may echo them into a log that others read."""
    credentials = client.credentials
    if credentials is not None:
        # Escaped forms too (URL, HTML, JSON, nested, any case): each is the password to
        # whoever reads the CI log.
        text = redacting((credentials.token, credentials.password), "********")(text)
    return one_line(text, MAX_SHOWN)
