"""Connections without threads to spare: accept, read whole requests, hand them over.

The thread that calls ``serve_forever`` accepts connections on every listener and reads
from all of them without blocking; only a complete request (head, and the body announced
by ``Content-Length``: :mod:`~elevate_import_exporter.httpd.framing`) goes to one of at most
``max_threads`` handler threads. A client that sends its head slowly, or never, so holds
a file descriptor for at most ``header_timeout`` seconds and never a thread; its body then
has ``header_timeout`` seconds again; a refused framing closes it after the answer. With
``tls``, the handshake is driven by the same loop and counts against the header timeout.

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

from elevate_import_exporter.core.workers import Workers
from elevate_import_exporter.httpd import framing, handshake
from elevate_import_exporter.httpd.framing import MAX_HEADER_BYTES
from elevate_import_exporter.httpd.framing import Connection as _Connection
from elevate_import_exporter.httpd.handshake import ServerTls
from elevate_import_exporter.httpd.listeners import Listeners

log = logging.getLogger(__name__)
LINGER_SECONDS = 2.0  # to read and drop what a refused request's client still sends
# Bytes of the requests waiting for their bodies, as announced, together: beyond it a new
# one is closed, so that slow bodies cannot take the memory (32 of the largest).
MAX_WAITING_BYTES = 32 * (framing.MAX_BODY_BYTES + MAX_HEADER_BYTES)
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)

Respond = Callable[[str, bytes, float], tuple[bytes, bool]]


class Connections:
    """Accepts connections on ``listeners`` (one socket or several) and hands each complete
    request to ``respond(peer, request, received)``, which returns the answer and whether
    to keep alive."""

    def __init__(
        self,
        listeners: Listeners | socket.socket | Sequence[socket.socket],
        respond: Respond,
        *,
        header_timeout: float,
        idle_timeout: float,
        max_threads: int,
        max_connections: int,
        write_timeout: float,
        tls: ServerTls | None = None,
    ) -> None:
        self._listeners = listeners if isinstance(listeners, Listeners) else Listeners(listeners)
        self.ports = self._listeners.ports
        self.port = self.ports[0]
        self._respond = respond
        self._header_timeout = header_timeout
        self._idle_timeout = idle_timeout
        self._max_connections = max_connections
        self._write_timeout = write_timeout
        self._tls = tls
        self._wake_r, self._wake_w = socket.socketpair()
        for sock in (self._wake_r, self._wake_w):
            sock.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._workers = Workers(max_threads, name=f"http-{self.port}")
        self._lock = threading.Lock()  # guards _returned and _closed
        self._returned: list[tuple[_Connection, bool]] = []
        self._closed = False
        # Only the serving thread touches the rest.
        self._waiting: set[_Connection] = set()
        self._open = 0
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
                wake = min(self._next_expiry, now + 1.0 if self._accepting else self._resume_at)
                wake = min(wake, self._drain_until)
                for key, _events in self._selector.select(max(0.0, wake - now)):
                    self._ready(key.data, time.monotonic())
                now = time.monotonic()
                self._take_back(now)
                self._expire(now)
                if self.draining and self._drained(now):
                    return
                if not self._accepting and now >= self._resume_at:
                    self._resume()

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
        for conn in [*self._waiting, *(c for c, _keep in returned)]:
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
            if self._open:
                log.info("draining: %d requests in flight", self._open)
        if self._open and now >= self._drain_until:
            log.warning("drain time over: %d requests in flight are cut", self._open)
        return not self._open or now >= self._drain_until

    def _ready(self, data: _Connection | socket.socket | None, now: float) -> None:
        if isinstance(data, _Connection):
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
        if self._open >= self._max_connections and not self._evict_oldest():
            self._pause(now + 0.1)  # all of them busy: one comes back soon
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
                self._evict_oldest()
            self._pause(now + self._backoff)
            return
        self._backoff = 0.0
        self._open += 1
        sock.setblocking(False)
        with contextlib.suppress(OSError):  # reset already: the first read will tell
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Connection(sock, str(address[0]), now + self._header_timeout, now)
        if self._tls is not None:
            wrapped = handshake.wrap(self._tls, sock, conn.peer)
            if wrapped is None:
                sock.close()
                self._open -= 1
                return
            conn.sock, conn.handshaking = wrapped, True
        self._watch(conn)

    def _handshake(self, conn: _Connection, now: float) -> None:
        assert self._tls is not None
        wait_for = handshake.step(self._tls, conn.sock, conn.peer)
        if wait_for is None:
            self._drop(conn)
        elif wait_for == handshake.PLAIN_HTTP:  # answered 400 in plain text: linger, close
            conn.handshaking, conn.unread = False, True
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

    def _evict_oldest(self) -> bool:
        if not self._waiting:
            return False
        oldest = min(self._waiting, key=lambda conn: conn.since)
        log.debug("http %s closed to make room for a new connection", oldest.peer)
        self._drop(oldest)
        return True

    def _watch(self, conn: _Connection) -> None:
        self._waiting.add(conn)
        self._selector.register(conn.sock, selectors.EVENT_READ, conn)
        self._next_expiry = min(self._next_expiry, conn.deadline)

    def _unwatch(self, conn: _Connection) -> None:
        self._waiting.discard(conn)
        self._selector.unregister(conn.sock)

    def _drop(self, conn: _Connection) -> None:
        if conn in self._waiting:
            self._unwatch(conn)
        self._body_bytes -= conn.need
        conn.need = 0
        conn.sock.close()
        self._open -= 1
        if not self._accepting and not self._backoff and not self._draining:
            self._resume_at = 0.0  # it was full: there is room again

    def _read(self, conn: _Connection, now: float) -> None:
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
            self._drop(conn)
            return
        if conn.unread:  # lingering: what it still sends is dropped
            return
        if conn.idle:  # the first byte of the next request starts its header timeout
            conn.idle = False
            conn.deadline = now + self._header_timeout
            self._next_expiry = min(self._next_expiry, conn.deadline)
        conn.buffer += data
        self._dispatch_if_complete(conn, now)

    def _dispatch_if_complete(self, conn: _Connection, now: float) -> None:
        if not conn.need and not self._head_complete(conn, now):
            return
        request = conn.take()
        if request is None:
            return
        self._body_bytes -= len(request)
        self._unwatch(conn)
        self._workers.submit(self._answer, conn, request, now)

    def _head_complete(self, conn: _Connection, now: float) -> bool:
        """Once the head is there, take note of the body to wait for and start its clock."""
        frame = conn.frame()
        if frame is None:
            if len(conn.buffer) > MAX_HEADER_BYTES:
                log.debug("http %s closed: headers over %d bytes", conn.peer, MAX_HEADER_BYTES)
                self._drop(conn)
            return False
        self._body_bytes += conn.need
        if len(conn.buffer) >= conn.need:
            return True
        if self._body_bytes > MAX_WAITING_BYTES:
            log.warning("http %s closed: too many request bodies on their way", conn.peer)
            self._drop(conn)
            return False
        conn.deadline = now + self._header_timeout  # trickled bytes do not extend it
        self._next_expiry = min(self._next_expiry, conn.deadline)
        if frame.expect_continue:
            conn.ask_for_body()
        return False

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
        for conn, keep in returned:
            if conn.unread and not self._draining:
                conn.linger(now + min(LINGER_SECONDS, self._header_timeout))
                self._watch(conn)
                continue
            if not keep or self._draining:
                self._drop(conn)
                continue
            conn.sock.setblocking(False)
            conn.since = now
            conn.idle = not conn.buffer
            conn.deadline = now + (self._idle_timeout if conn.idle else self._header_timeout)
            self._watch(conn)
            if conn.buffer:  # pipelined: the next request may be complete already
                self._dispatch_if_complete(conn, now)

    def _wake(self) -> None:
        # Full (a wake-up is pending anyway) or closed: nothing to do.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    # -- handler threads ------------------------------------------------------------------

    def _answer(self, conn: _Connection, request: bytes, received: float) -> None:
        keep = False
        try:
            answer, keep = self._respond(conn.peer, request, received)
            conn.sock.settimeout(self._write_timeout)
            conn.sock.sendall(answer)
        except (ConnectionError, TimeoutError) as exc:
            keep = False
            log.debug("http %s left before its answer was written: %r", conn.peer, exc)
        except Exception:
            keep = False
            log.exception("http %s: answering the request failed", conn.peer)
        with self._lock:
            if not self._closed:
                self._returned.append((conn, keep))
                self._wake()
                return
        conn.sock.close()
