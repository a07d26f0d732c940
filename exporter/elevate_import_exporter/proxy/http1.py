"""HTTP/1.1 as the import proxy speaks it, on top of the one parser
(:class:`~elevate_import_exporter.httpd.http1.Http1`, which frames every request and answer):
the client's bytes read into one reused buffer, bodies passed on in large writes, and the
proxy's own policy: which headers stay here (hop-by-hop), which targets are forwarded, and
how slowly a body may come.
"""

from __future__ import annotations

import re
import select
import socket
import ssl
import time
from collections.abc import Iterator, Sequence
from typing import cast

from elevate_import_exporter.httpd.exchange import send_pieces
from elevate_import_exporter.httpd.http1 import END, Head, Http1, PeerClosed

# Bytes read at a time from the client, and about the most sent on at once, each way.
# Memory per connection is about this, whatever the body's size; on loopback 512 KiB
# took a third of the CPU per byte of 64 KiB (fewer system calls and turns of the loop),
# and more gained little.
CHUNK = 512 * 1024
# Header fields forwarded at most: Elevate's side (and http.client's) refuses more.
MAX_HEADERS = 100

# Hop-by-hop headers (RFC 9110 7.6.1), and what only concerns the connection to us:
# never forwarded, either way. Proxy-* goes as well (see is_hop_by_hop).
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"}
)

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TARGET = re.compile(r"/[\x21-\x7e]*")

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

LAST_CHUNK = b"0\r\n\r\n"


class BadRequest(Exception):
    """A request the proxy refuses to forward; ``status`` is the answer's code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ClientGone(Exception):
    """The client closed its connection, or sent nothing more for too long, mid-request."""


class BodyStalled(ClientGone):
    """The client sent no byte of its body for :data:`BODY_IDLE_SECONDS`."""


class BodyClock:
    """How the body of the request being served comes in, kept by the serving thread and
    judged by the serving loop (plain attributes: a judgement a moment late is fine).
    """

    def __init__(self) -> None:
        self.started: float | None = None  # monotonic, while a body is being read
        self.received = 0
        self.waited = 0.0  # seconds spent waiting for the client's bytes, until now
        self.reading_since: float | None = None  # waiting for the client now, since then
        self.evicted = False  # set by the serving loop, which ends the reading

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


def check_head(head: Head) -> None:
    """The proxy's rules for a head the parser took: :class:`BadRequest` if it is not
    forwarded. Elevate is only ever asked for a path below its base URL."""
    if not _TARGET.fullmatch(head.target):
        raise BadRequest(400, "The request target must be a path such as /api/v2/import/x.")
    if len(head.headers) > MAX_HEADERS:
        raise BadRequest(431, "The request has too many header fields.")


def is_hop_by_hop(name: str, listed: set[str]) -> bool:
    lowered = name.lower()
    return lowered in HOP_BY_HOP or lowered.startswith("proxy-") or lowered in listed


def end_to_end(headers: Sequence[tuple[str, str]], listed: set[str]) -> list[tuple[str, str]]:
    """``headers`` without hop-by-hop ones, those ``listed`` in a Connection header, and
    any whose name is not an HTTP token (it could not be written back as one field)."""
    return [(n, v) for n, v in headers if _TOKEN.fullmatch(n) and not is_hop_by_hop(n, listed)]


class Reader:
    """The client's side of a request whose head the serving loop has read: the body's
    bytes read into one reused buffer and handed to ``http1``, which frames them.

    Raises :class:`ClientGone` when the client leaves, :class:`BodyStalled` when its
    socket times out; the parser's ``Refusal`` goes to the caller.
    """

    def __init__(self, sock: socket.socket, clock: BodyClock, http1: Http1) -> None:
        self.sock = sock
        self.clock = clock
        self.http1 = http1
        # Made for the first body that is not all here with its head: a new 512 KiB
        # buffer costs a small request more than its answer does.
        self._view: memoryview | None = None

    def body(self) -> Iterator[list[bytes]]:
        """The body in batches of pieces, a batch being what one fill of the buffer
        brought (up to :data:`CHUNK` bytes), so that it can go on in one write. A batch
        is valid until the next is asked for (its pieces may be views of the buffer).

        Reading a body with none ends at once: the parser then knows the request whole."""
        http1 = self.http1
        batch: list[bytes] = []
        while True:
            try:
                piece = http1.next_body()
            except PeerClosed as exc:
                raise ClientGone(str(exc)) from None
            if piece is END:
                if batch:
                    yield batch
                return
            if piece is not None:
                batch.append(cast(bytes, piece))  # bytes-like: h11 gives bytearrays
                continue
            if batch:
                yield batch
                batch = []
            # The parser has taken every byte read so far: the buffer may be refilled.
            self._receive()

    def _ready(self) -> bool:
        """More of the client's bytes can be read without waiting."""
        sock = self.sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        try:
            return bool(select.select([sock], [], [], 0)[0])
        except (OSError, ValueError):
            return False

    def _receive(self) -> None:
        """Read what has come, waiting for the first byte: several reads into the buffer
        while more is there at once (TLS gives at most a record, 16 KiB, a read), so that
        the parser, and the write upstream, see large pieces."""
        clock = self.clock
        if self._view is None:
            self._view = memoryview(bytearray(CHUNK))
        view = self._view
        clock.reading()
        filled = self._read_into(view)
        clock.got(filled)
        ended = not filled
        while not ended and filled < len(view) // 2 and self._ready():
            count = self._read_into(view[filled:])
            clock.got(count)
            filled += count
            ended = not count
        if filled:
            self.http1.receive(view[:filled])
        if ended:
            self.http1.receive(b"")

    def _read_into(self, view: memoryview) -> int:
        try:
            return self.sock.recv_into(view)
        except TimeoutError:
            raise BodyStalled("no byte of the body came in time") from None
        except (OSError, ValueError) as exc:
            raise ClientGone(f"reading failed: {type(exc).__name__}") from None


class Writer:
    """Writes pieces to one socket in as few system calls as it can
    (:func:`~elevate_import_exporter.httpd.exchange.send_pieces`), with one reused buffer
    for TLS, which cannot gather. Raises what the socket raises."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._scratch = bytearray()

    def send(self, pieces: Sequence[bytes | memoryview]) -> None:
        send_pieces(self.sock, pieces, self._scratch)


def chunked(batch: list[bytes]) -> list[bytes]:
    """``batch`` framed as one chunk of a chunked body (never empty: that ends a body)."""
    return [b"%x\r\n" % sum(len(piece) for piece in batch), *batch, b"\r\n"]
