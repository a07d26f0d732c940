"""HTTP/1.1 as the import proxy reads it from feed jobs: request heads, bodies, hop-by-hop.

Strict where leniency would let a request mean one thing here and another at Elevate
(request smuggling): one framing per request, Content-Length digits only, no folded or
malformed header lines. Bodies are read in pieces of at most :data:`CHUNK` bytes into one
reused buffer, never whole.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

# Bytes read or written at a time, each way. Memory per connection is about this, whatever
# the body's size; on loopback 512 KiB took a third of the CPU per byte of 64 KiB (fewer
# system calls and turns of the loop), and more gained little.
CHUNK = 512 * 1024
MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 100
_MAX_CHUNK_LINE = 4096
_MAX_TRAILER_BYTES = 16 * 1024

# Hop-by-hop headers (RFC 9110 7.6.1), and what only concerns the connection to us:
# never forwarded, either way. Proxy-* goes as well (see is_hop_by_hop).
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"}
)
METHODS_WITHOUT_BODY = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "TRACE"})

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TARGET = re.compile(r"/[\x21-\x7e]*")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")

# Slow bodies. A client that sends its body a byte now and then holds a connection, and
# so one of the proxy's threads, for as long as it likes: 64 of them lock the proxy out.
# No byte of the body for BODY_IDLE_SECONDS (nginx's client_body_timeout), or, once the
# proxy has waited BODY_RATE_GRACE seconds for the client's bytes, fewer than
# MIN_BODY_RATE bytes a second on average over that waiting (Apache's mod_reqtimeout
# default), and the request is answered 408. Only time spent waiting for the client
# counts: a body held back because Elevate takes it slowly is not the client's doing.
BODY_IDLE_SECONDS = 60.0
BODY_RATE_GRACE = 30.0
MIN_BODY_RATE = 500.0
# With every place taken, a new connection gets the place of the slowest body that has
# been coming for EVICT_GRACE seconds at under EVICT_BELOW_RATE bytes a second: uploads
# that are real work keep their places, a client that only holds one loses it.
EVICT_GRACE = 5.0
EVICT_BELOW_RATE = 64 * 1024.0

Headers = tuple[tuple[str, str], ...]


class BadRequest(Exception):
    """A request the proxy refuses to forward; ``status`` is the answer's code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ClientGone(Exception):
    """The client closed its connection, or sent nothing more for too long, mid-body."""


class BodyStalled(ClientGone):
    """The client sent no byte of its body for :data:`BODY_IDLE_SECONDS`."""


class BodyClock:
    """How the body of the request being served comes in, kept by the serving thread and
    judged by the accepting thread (plain attributes: a judgement a moment late is fine).
    """

    def __init__(self) -> None:
        self.started: float | None = None  # monotonic, while a body is being read
        self.received = 0
        self.waited = 0.0  # seconds spent waiting for the client's bytes, until now
        self.reading_since: float | None = None  # waiting for the client now, since then
        self.evicted = False  # set by the accepting thread, which ends the reading

    def begin(self) -> None:
        self.received, self.waited, self.reading_since = 0, 0.0, None
        self.started = time.monotonic()

    def reading(self) -> None:
        self.reading_since = time.monotonic()

    def got(self, count: int) -> None:
        since = self.reading_since
        if since is not None:
            self.waited += time.monotonic() - since
        self.reading_since = None
        self.received += count

    def end(self) -> None:
        self.started = self.reading_since = None

    def rate(self, now: float) -> tuple[float, float]:
        """Seconds waited for the client's body so far, and its bytes a second over them;
        (0, inf) when no body is being read."""
        if self.started is None:
            return 0.0, float("inf")
        since = self.reading_since
        waited = self.waited + (now - since if since is not None else 0.0)
        return waited, (self.received / waited if waited > 0 else float("inf"))


@dataclass(frozen=True)
class RequestHead:
    """A parsed request head; ``headers`` as sent, in order, names as spelt."""

    method: str
    target: str
    version: str
    headers: Headers

    def values(self, name: str) -> list[str]:
        lowered = name.lower()
        return [value for key, value in self.headers if key.lower() == lowered]

    def get(self, name: str) -> str | None:
        found = self.values(name)
        return found[0] if found else None

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]

    def tokens(self, name: str) -> set[str]:
        """The comma-separated tokens of every ``name`` header, lower-cased."""
        return {t.strip().lower() for v in self.values(name) for t in v.split(",") if t.strip()}

    @property
    def keep_alive(self) -> bool:
        return self.version == "HTTP/1.1" and "close" not in self.tokens("connection")


def read_head(reader: BinaryIO) -> bytes | None:
    """The bytes of the next request head up to its empty line; None at a clean end of
    the connection before one. Raises :class:`BadRequest` (431) for an oversized head."""
    lines: list[bytes] = []
    size = 0
    while True:
        line = reader.readline(MAX_HEAD_BYTES + 1 - size)
        if not line:
            if lines:
                raise ClientGone("the connection ended inside the request head")
            return None
        size += len(line)
        if not line.endswith(b"\n"):
            raise BadRequest(431, "The request head is too large.")
        if line in (b"\r\n", b"\n"):
            if lines:
                return b"".join(lines)
            continue  # blank lines before a request line are allowed (RFC 9112 2.2)
        if len(lines) > MAX_HEADERS:
            raise BadRequest(431, "The request has too many header fields.")
        lines.append(line)


def parse_head(data: bytes) -> RequestHead:
    """The request in ``data`` (from :func:`read_head`), or :class:`BadRequest`."""
    lines = data.decode("latin-1").split("\n")
    if lines[-1] == "":
        lines.pop()
    first, *rest = lines
    words = first.rstrip("\r").split(" ")
    if len(words) != 3 or not _TOKEN.fullmatch(words[0]):
        raise BadRequest(400, "The request line is not valid HTTP.")
    method, target, version = words
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(505, "Only HTTP/1.1 and HTTP/1.0 are served.")
    if not _TARGET.fullmatch(target):
        raise BadRequest(400, "The request target must be a path such as /api/v2/import/x.")
    headers: list[tuple[str, str]] = []
    for raw in rest:
        line = raw.rstrip("\r")
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name):
            raise BadRequest(400, "A header line is not valid HTTP.")
        value = value.strip(" \t")
        if _BAD_VALUE.search(value):
            raise BadRequest(400, "A header value holds a control character.")
        headers.append((name, value))
    return RequestHead(method, target, version, tuple(headers))


def is_hop_by_hop(name: str, listed: set[str]) -> bool:
    lowered = name.lower()
    return lowered in HOP_BY_HOP or lowered.startswith("proxy-") or lowered in listed


def end_to_end(headers: Sequence[tuple[str, str]], listed: set[str]) -> list[tuple[str, str]]:
    """``headers`` without hop-by-hop ones, those ``listed`` in a Connection header, and
    any whose name is not an HTTP token (it could not be written back as one field)."""
    return [(n, v) for n, v in headers if _TOKEN.fullmatch(n) and not is_hop_by_hop(n, listed)]


@dataclass(frozen=True)
class Framing:
    """How a request's body is delimited: ``length`` bytes, chunked, or none."""

    chunked: bool = False
    length: int = 0

    @property
    def has_body(self) -> bool:
        return self.chunked or self.length > 0


def framing(head: RequestHead) -> Framing:
    """The framing of ``head``'s body, or :class:`BadRequest` for an ambiguous one."""
    codings = head.values("transfer-encoding")
    lengths = head.values("content-length")
    if codings and lengths:
        raise BadRequest(400, "Content-Length and Transfer-Encoding together are refused.")
    if codings:
        if [c.strip().lower() for c in ",".join(codings).split(",")] != ["chunked"]:
            raise BadRequest(501, "Only the chunked transfer coding is supported.")
        return Framing(chunked=True)
    if not lengths:
        return Framing()
    values = {v.strip() for value in lengths for v in value.split(",")}
    if len(values) != 1 or not next(iter(values)).isascii() or not next(iter(values)).isdigit():
        raise BadRequest(400, "The Content-Length is not one number.")
    length = int(next(iter(values)))
    if length >= 1 << 62:
        raise BadRequest(413, "The Content-Length is too large.")
    return Framing(length=length)


def body_pieces(reader: BinaryIO, body: Framing) -> Iterator[memoryview]:
    """The body's bytes in pieces of at most :data:`CHUNK`, each valid until the next.

    Raises :class:`ClientGone` if the connection ends or times out before the body does,
    :class:`BadRequest` for broken chunked framing.
    """
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    if body.chunked:
        while (size := _chunk_size(reader)) > 0:
            yield from _exactly(reader, size, view)
            if reader.readline(3) not in (b"\r\n", b"\n"):
                raise BadRequest(400, "A chunk of the body does not end where it says.")
        _skip_trailers(reader)
    else:
        yield from _exactly(reader, body.length, view)


def _exactly(reader: BinaryIO, size: int, view: memoryview) -> Iterator[memoryview]:
    remaining = size
    while remaining:
        try:
            count = reader.readinto1(view[: min(CHUNK, remaining)])  # type: ignore[attr-defined]
        except TimeoutError:
            raise BodyStalled("no byte of the body came in time") from None
        except (OSError, ValueError) as exc:
            raise ClientGone(f"reading the body failed: {type(exc).__name__}") from None
        if not count:
            raise ClientGone(f"the connection ended {remaining} bytes before the body's end")
        remaining -= count
        yield view[:count]


def _chunk_size(reader: BinaryIO) -> int:
    line = _line(reader, _MAX_CHUNK_LINE)
    size = line.split(b";", 1)[0].strip()
    if not _HEX.fullmatch(size):
        raise BadRequest(400, "A chunk size of the body is not a hexadecimal number.")
    return int(size, 16)


def _skip_trailers(reader: BinaryIO) -> None:
    size = 0
    while (line := _line(reader, _MAX_TRAILER_BYTES)) not in (b"\r\n", b"\n"):
        size += len(line)
        if size > _MAX_TRAILER_BYTES:
            raise BadRequest(431, "The body's trailer is too large.")


def _line(reader: BinaryIO, limit: int) -> bytes:
    try:
        line = reader.readline(limit)
    except TimeoutError:
        raise BodyStalled("no byte of the body came in time") from None
    except (OSError, ValueError) as exc:
        raise ClientGone(f"reading the body failed: {type(exc).__name__}") from None
    if not line:
        raise ClientGone("the connection ended inside a chunked body")
    if not line.endswith(b"\n"):
        raise BadRequest(400, "A line of the chunked body is too long.")
    return line


def chunk(piece: bytes | memoryview) -> bytes:
    """``piece`` framed as one chunk of a chunked body (never empty: that ends a body)."""
    return b"%x\r\n%s\r\n" % (len(piece), piece)


LAST_CHUNK = b"0\r\n\r\n"
