"""Connections without threads to spare: accept, read request heads, hand them over.

The thread that calls ``serve_forever`` accepts connections on every listener and reads
from all of them without blocking, each through its own
:class:`~elevate_import_exporter.httpd.http1.Http1`. A client that sends its head slowly,
or never, so holds a file descriptor for at most ``header_timeout`` seconds and never a
thread; trickled bytes do not extend the time. With ``tls``, the handshake is driven by
the same loop and counts against the header timeout; plain HTTP on the TLS port is
answered ``400`` as Go's net/http does. Beyond ``max_connections``, the connection that
has waited longest for its request is closed to make room, once it has waited
``evict_after`` seconds: a newcomer never pushes out one that has only just come, which
would gain nothing, and under a flood of connections would push out every client before
its head could be read. Newcomers wait in the listen backlog meanwhile.

Two ways to hand a request over, one per server:

- **buffered** (``respond``): the loop reads the body as well (at most ``max_body`` bytes,
  chunked or not, ``100 Continue`` sent when the client waits for it), under the header
  timeout again; then one of at most ``max_threads`` handler threads calls
  ``respond(request)`` with a whole :class:`~elevate_import_exporter.httpd.messages.Request`
  and writes the :class:`~elevate_import_exporter.httpd.messages.Answer` it returns.
- **streaming** (``stream``): once the head is read, one of at most ``max_threads`` worker
  threads calls ``stream(exchange)``
  (:class:`~elevate_import_exporter.httpd.exchange.Exchange`, whose docstring says what
  it offers); requests beyond the threads wait, their heads complete. ``on_turn(now)`` is
  called by the serving thread at least every ``turn_every`` seconds, and :meth:`busy`
  lists the exchanges being served: a policy (a minimum body rate, making room when every
  place is taken) may :meth:`Exchange.abort` one from there.

A refused request is answered and its connection closed after a moment of reading and
dropping what the client still sends. A connection whose answer leaves it reusable
(h11 decides: HTTP/1.1, read to its end, no ``Connection: close``) waits for its next
request, pipelined bytes served at once, for ``idle_timeout`` seconds.

``drain``: no new connection or request is taken, those waiting for one are closed, and
``serve_forever`` returns once the requests in flight are answered or the time is up.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from elevate_import_exporter.core.workers import Workers
from elevate_import_exporter.httpd import handshake
from elevate_import_exporter.httpd.exchange import Exchange, send_pieces
from elevate_import_exporter.httpd.handshake import ServerTls
from elevate_import_exporter.httpd.http1 import (
    MAX_HEAD_BYTES,
    Http1,
    PeerClosed,
    Refusal,
    _End,
)
from elevate_import_exporter.httpd.listeners import Listeners
from elevate_import_exporter.httpd.messages import Answer, Request

log = logging.getLogger(__name__)
LINGER_SECONDS = 2.0  # to read and drop what a refused request's client still sends
MAX_BODY_BYTES = 1024 * 1024  # buffered mode: a longer body is refused 413
# A head comes in milliseconds after the connection; half a second is ample on a loaded
# machine, and short enough for newcomers to wait in the backlog.
EVICT_AFTER = 0.5
# Bytes of the requests waiting for their bodies, heads and bodies as announced (a chunked
# body counts as the largest), together: beyond it a new one is closed, so that slow bodies
# cannot take the memory (32 of the largest).
MAX_WAITING_BYTES = 32 * (MAX_BODY_BYTES + MAX_HEAD_BYTES)
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)

Respond = Callable[[Request], Answer]
Stream = Callable[[Exchange], None]


@dataclass(eq=False)
class _Conn:
    """A client connection while the serving loop has it."""

    sock: socket.socket
    peer: str
    http1: Http1
    deadline: float  # monotonic: closed if its request is not complete by then
    since: float  # when it began to wait
    received: float = 0.0  # when its request's head was complete
    idle: bool = False  # kept alive, no byte of the next request yet
    handshaking: bool = False  # TLS handshake not finished yet
    lingering: bool = False  # answered and closing: what still comes is dropped
    body: bytearray = field(default_factory=bytearray)
    announced: int = 0  # body bytes counted in the loop's MAX_WAITING_BYTES
    continued: bool = False  # 100 Continue sent

    def linger(self, until: float) -> None:
        """Stop writing, and read (and drop) what comes until the client closes or ``until``.

        Closing with unread bytes would send a reset, which can destroy the answer before
        the client has read it.
        """
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        self.sock.setblocking(False)
        self.lingering = True
        self.deadline = until

    def waiting_for(self) -> str:
        if self.lingering:
            return "lingering after a refused request"
        if self.idle:
            return "idle keep-alive connection"
        if self.handshaking:
            return "TLS handshake not finished"
        return "incomplete request body" if self.http1.head else "incomplete request head"


class Connections:
    """Accepts connections on ``listeners`` (one socket or several) and hands over each
    request: whole to ``respond``, or streaming to ``stream`` (give one of them)."""

    def __init__(
        self,
        listeners: Listeners | socket.socket | Sequence[socket.socket],
        respond: Respond | None = None,
        *,
        stream: Stream | None = None,
        header_timeout: float,
        idle_timeout: float,
        max_threads: int,
        max_connections: int,
        write_timeout: float,
        tls: ServerTls | None = None,
        max_body: int | None = MAX_BODY_BYTES,
        on_turn: Callable[[float], None] | None = None,
        turn_every: float = 1.0,
        name: str = "http",
        evict_after: float = EVICT_AFTER,
    ) -> None:
        if (respond is None) == (stream is None):
            raise ValueError("give respond or stream")
        self._listeners = listeners if isinstance(listeners, Listeners) else Listeners(listeners)
        self.ports = self._listeners.ports
        self.port = self.ports[0]
        self._respond = respond
        self._stream = stream
        self._header_timeout = header_timeout
        self._evict_after = evict_after
        self._idle_timeout = idle_timeout
        self.max_connections = max_connections
        self._write_timeout = write_timeout
        self._tls = tls
        self._max_body = None if stream is not None else max_body
        self._on_turn = on_turn
        self._turn_every = turn_every
        self._wake_r, self._wake_w = socket.socketpair()
        for sock in (self._wake_r, self._wake_w):
            sock.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._workers = Workers(max_threads, name=f"{name}-{self.port}")
        self._lock = threading.Lock()  # guards _returned, _busy and _closed
        self._returned: list[tuple[_Conn, bool, bool]] = []  # (conn, keep, linger)
        self._busy: set[Exchange] = set()
        self._closed = False
        # Only the serving thread touches the rest.
        self._waiting: set[_Conn] = set()
        self.open = 0  # connections accepted and not closed yet
        self._accepting = False
        self._resume_at = 0.0
        self._backoff = 0.0
        self._next_expiry = float("inf")
        self._body_bytes = 0  # what the connections waiting for a body have announced
        self._stop = threading.Event()
        self._drain_until = float("inf")  # monotonic; set once, by drain()
        self._draining = False  # the serving thread has begun the drain
        self._loop = threading.Lock()

    def serve_forever(self) -> None:
        with self._loop:
            self._resume()
            while not self._stop.is_set():
                now = time.monotonic()
                wake = min(self._next_expiry, self._resume_at, now + self._turn_every)
                if self._accepting:
                    wake = min(self._next_expiry, now + self._turn_every)
                wake = min(wake, self._drain_until)
                for key, _events in self._selector.select(max(0.0, wake - now)):
                    self._ready(key.data, time.monotonic())
                now = time.monotonic()
                self._take_back(now)
                self._expire(now)
                if self._on_turn is not None:
                    try:
                        self._on_turn(now)
                    except Exception:
                        log.exception("http: the loop's turn callback failed")
                if self.draining and self._drained(now):
                    return
                if not self._accepting and now >= self._resume_at:
                    self._resume()

    def busy(self) -> list[Exchange]:
        """The exchanges being served by ``stream`` now (safe from any thread)."""
        with self._lock:
            return list(self._busy)

    def drain(self, seconds: float) -> None:
        """Make ``serve_forever`` stop taking requests and return once those in flight are
        answered, or after ``seconds``. Safe from another thread and from a signal handler."""
        self._drain_until = min(self._drain_until, time.monotonic() + seconds)
        self._wake()

    @property
    def draining(self) -> bool:
        return self._drain_until < float("inf")

    def shutdown(self) -> None:
        """Stop ``serve_forever`` (from another thread) and wait until it has returned."""
        self._stop.set()
        self._wake()
        with self._loop:
            pass

    def close(self) -> None:
        with self._lock:
            self._closed = True
            returned, self._returned = self._returned, []
        for conn in [*self._waiting, *(c for c, _keep, _linger in returned)]:
            conn.sock.close()
        self._waiting.clear()
        self._workers.stop()
        self._selector.close()
        self._listeners.close()
        for sock in (self._wake_r, self._wake_w):
            sock.close()

    # -- the serving thread ---------------------------------------------------------------

    def _drained(self, now: float) -> bool:
        """Begin the drain, if not begun; True once it is over."""
        if not self._draining:
            self._draining = True
            self._pause(float("inf"))
            self._listeners.close()
            for conn in list(self._waiting):  # idle, or not a whole request yet
                self._drop(conn)
            if self.open:
                log.info("draining: %d requests in flight", self.open)
        if self.open and now >= self._drain_until:
            log.warning("drain time over: %d requests in flight are cut", self.open)
        return not self.open or now >= self._drain_until

    def _ready(self, data: _Conn | socket.socket | None, now: float) -> None:
        if isinstance(data, _Conn):
            if data not in self._waiting:  # closed by an earlier event of this round
                return
            if data.handshaking:
                self._handshake(data, now)
            else:
                self._read(data, now)
        elif data is not None:
            self._accept(data, now)
        else:
            with contextlib.suppress(OSError):
                while self._wake_r.recv(4096):
                    pass

    def _accept(self, listener: socket.socket, now: float) -> None:
        if self._draining:  # ready in the same select as the drain's wake-up
            return
        if self.open >= self.max_connections and not self._evict_oldest(now, self._evict_after):
            self._pause(now + 0.1)  # all of them busy or new: one comes back soon
            return
        try:
            sock, address = listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as exc:
            # The listener stays readable: without a pause this loop would spin.
            if not self._backoff:
                log.warning("cannot accept connections: %s; pausing", exc.strerror or exc)
            self._backoff = min(1.0, self._backoff * 2 or 0.1)
            if exc.errno in _OUT_OF_DESCRIPTORS:
                # Not for a newcomer only: the process needs descriptors for Elevate and
                # its store too, so the oldest goes whatever its age.
                self._evict_oldest(now, 0.0)
            self._pause(now + self._backoff)
            return
        self._backoff = 0.0
        self.open += 1
        sock.setblocking(False)
        with contextlib.suppress(OSError):  # reset already: the first read will tell
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Conn(sock, str(address[0]), self._http1(), now + self._header_timeout, now)
        if self._tls is not None:
            wrapped = handshake.wrap(self._tls, sock, conn.peer)
            if wrapped is None:
                sock.close()
                self.open -= 1
                return
            conn.sock, conn.handshaking = wrapped, True
        self._watch(conn)

    def _http1(self) -> Http1:
        return Http1(max_body=self._max_body)

    def _handshake(self, conn: _Conn, now: float) -> None:
        assert self._tls is not None
        wait_for = handshake.step(self._tls, conn.sock, conn.peer)
        if wait_for is None:
            self._drop(conn)
        elif wait_for == handshake.PLAIN_HTTP:  # answered 400 in plain text: linger, close
            conn.handshaking = False
            conn.linger(now + min(LINGER_SECONDS, self._header_timeout))
            self._selector.modify(conn.sock, selectors.EVENT_READ, conn)
            self._next_expiry = min(self._next_expiry, conn.deadline)
        elif wait_for:
            self._selector.modify(conn.sock, wait_for, conn)
        else:
            conn.handshaking = False
            self._selector.modify(conn.sock, selectors.EVENT_READ, conn)
            self._read(conn, now)  # the request may have come with the handshake's last flight

    def _pause(self, until: float) -> None:
        if self._accepting:
            self._listeners.unwatch(self._selector)
            self._accepting = False
        self._resume_at = until

    def _resume(self) -> None:
        if not self._accepting and not self._draining:
            self._listeners.watch(self._selector)
            self._accepting = True

    def _evict_oldest(self, now: float, after: float) -> bool:
        """Close the connection waiting longest for its request, if it has waited
        ``after`` seconds; whether one was closed."""
        if not self._waiting:
            return False
        oldest = min(self._waiting, key=lambda conn: conn.since)
        if now - oldest.since < after:
            return False
        log.debug("http %s closed to make room for a new connection", oldest.peer)
        self._drop(oldest)
        return True

    def _watch(self, conn: _Conn) -> None:
        self._waiting.add(conn)
        self._selector.register(conn.sock, selectors.EVENT_READ, conn)
        self._next_expiry = min(self._next_expiry, conn.deadline)

    def _unwatch(self, conn: _Conn) -> None:
        self._waiting.discard(conn)
        self._selector.unregister(conn.sock)

    def _drop(self, conn: _Conn) -> None:
        if conn in self._waiting:
            self._unwatch(conn)
        self._uncount(conn)
        conn.sock.close()
        self.open -= 1
        if not self._accepting and not self._backoff and not self._draining:
            self._resume_at = 0.0  # it was full: there is room again

    def _uncount(self, conn: _Conn) -> None:
        self._body_bytes -= conn.announced
        conn.announced = 0

    def _read(self, conn: _Conn, now: float) -> None:
        try:
            data = handshake.receive(conn.sock)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
            self._selector.modify(conn.sock, selectors.EVENT_READ, conn)
            return
        except ssl.SSLWantWriteError:  # the TLS layer has something to send first
            self._selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
            return
        except OSError as exc:
            log.debug("http %s read failed: %s", conn.peer, exc)
            data = b""
        if not data:
            self._drop(conn)  # a request not whole yet is lost with it
            return
        if conn.lingering:  # what it still sends is dropped
            return
        if conn.idle:  # the first byte of the next request starts its header timeout
            conn.idle = False
            conn.deadline = now + self._header_timeout
            self._next_expiry = min(self._next_expiry, conn.deadline)
        conn.http1.receive(data)
        self._advance(conn, now)

    def _advance(self, conn: _Conn, now: float) -> None:
        """Take the request as far as its bytes go: its head, then (buffered) its body."""
        http1 = conn.http1
        try:
            if http1.head is None:
                head = http1.next_head()
                if head is None:
                    return
                conn.received = now
                if self._stream is not None:
                    self._hand_over(conn, None)
                    return
                expected = (self._max_body or 0) if head.chunked else head.length
                conn.announced = head.size + expected
                self._body_bytes += conn.announced
                conn.deadline = now + self._header_timeout  # the body's own time
                self._next_expiry = min(self._next_expiry, conn.deadline)
            while (piece := http1.next_body()) is not None:
                if not isinstance(piece, _End):
                    conn.body += piece
                    continue
                body = bytes(conn.body)
                self._dispatch(conn, Request(conn.peer, conn.received, http1.head, body))
                return
        except Refusal as refusal:
            if self._stream is not None:
                self._hand_over(conn, refusal)
            else:
                self._dispatch(conn, Request(conn.peer, now, http1.head, b"", refusal))
            return
        except PeerClosed:
            self._drop(conn)
            return
        if self._body_bytes > MAX_WAITING_BYTES:
            log.warning("http %s closed: too many request bodies on their way", conn.peer)
            self._drop(conn)
        elif http1.expects_continue and not conn.continued:
            conn.continued = True
            # A few bytes: the socket takes them now, or the client sends after its own pause.
            with contextlib.suppress(OSError):
                conn.sock.send(http1.continue_())

    def _dispatch(self, conn: _Conn, request: Request) -> None:
        self._unwatch(conn)
        self._uncount(conn)
        conn.body = bytearray()
        self._workers.submit(self._answer, conn, request)

    def _hand_over(self, conn: _Conn, refusal: Refusal | None) -> None:
        self._unwatch(conn)
        self._workers.submit(self._serve, conn, refusal)

    def _expire(self, now: float) -> None:
        if now < self._next_expiry:
            return
        for conn in [c for c in self._waiting if c.deadline <= now]:
            log.debug("http %s closed: %s", conn.peer, conn.waiting_for())
            self._drop(conn)
        self._next_expiry = min((c.deadline for c in self._waiting), default=float("inf"))

    def _take_back(self, now: float) -> None:
        with self._lock:
            returned, self._returned = self._returned, []
        for conn, keep, linger in returned:
            if linger and not self._draining:
                conn.linger(now + min(LINGER_SECONDS, self._header_timeout))
                self._watch(conn)
                continue
            if not keep or self._draining:
                self._drop(conn)
                continue
            http1 = conn.http1
            http1.next_request()
            conn.sock.setblocking(False)
            conn.since = now
            conn.continued = False
            conn.idle = not http1.buffered
            if conn.idle and http1.ended:
                self._drop(conn)
                continue
            conn.deadline = now + (self._idle_timeout if conn.idle else self._header_timeout)
            self._watch(conn)
            if not conn.idle:  # pipelined: the next request may be whole already
                self._advance(conn, now)

    def _wake(self) -> None:
        # Full (a wake-up is pending anyway) or closed: nothing to do.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    # -- worker threads -------------------------------------------------------------------

    def _answer(self, conn: _Conn, request: Request) -> None:
        assert self._respond is not None
        keep = sent = False
        http1 = conn.http1
        try:
            answer = self._respond(request)
            # A refused request's answer may be another error (401 before the refusal).
            close = answer.close or self.draining or request.refusal is not None
            out = http1.answer_pieces(answer.status, answer.headers, answer.body, close=close)
            conn.sock.settimeout(self._write_timeout)
            if isinstance(conn.sock, ssl.SSLSocket):  # one TLS record where it fits
                conn.sock.sendall(b"".join(out))
            else:
                send_pieces(conn.sock, out)
            sent, keep = True, http1.reusable
        except (ConnectionError, TimeoutError) as exc:
            log.debug("http %s left before its answer was written: %r", conn.peer, exc)
        except Exception:
            log.exception("http %s: answering the request failed", conn.peer)
        self._give_back(conn, keep, sent and request.refusal is not None)

    def _serve(self, conn: _Conn, refusal: Refusal | None) -> None:
        assert self._stream is not None
        http1 = conn.http1
        exchange = Exchange(conn.sock, conn.peer, http1, conn.received, refusal)
        with self._lock:
            self._busy.add(exchange)
        failed = False
        try:
            conn.sock.settimeout(self._write_timeout)
            self._stream(exchange)
        except (ConnectionError, TimeoutError, PeerClosed) as exc:
            failed = True
            log.debug("http %s left inside its exchange: %r", conn.peer, exc)
        except Exception:
            failed = True
            log.exception("http %s: serving the request failed", conn.peer)
        finally:
            with self._lock:
                self._busy.discard(exchange)
        keep = not failed and refusal is None and http1.reusable
        linger = not failed and not keep and (refusal is not None or not http1.request_read)
        self._give_back(conn, keep, linger)

    def _give_back(self, conn: _Conn, keep: bool, linger: bool) -> None:
        with self._lock:
            if not self._closed:
                self._returned.append((conn, keep, linger))
                self._wake()
                return
        conn.sock.close()
