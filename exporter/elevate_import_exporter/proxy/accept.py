"""Connections of the import proxy: accepted by one thread, each served by a thread of its own.

A proxied request holds its connection for minutes while its bodies stream in blocking
reads and writes, so each connection gets a thread, at most ``max_connections`` at once;
beyond that, new ones wait in the listen backlog. (The exporter's ``connections`` loop
answers from memory after reading a head, which suits scrapes, not uploads of hundreds
of MB.) The accepting thread cuts a connection that is still waiting for its TLS
handshake or request head ``header_timeout`` seconds after it came (a kept-alive one
``idle_timeout`` seconds after its last answer), so trickling bytes do not extend it; when
every place is taken, the one waiting longest makes room for a new one, and if none is
waiting, the slowest body (see :data:`~proxy_http.EVICT_GRACE`) does. A body that comes
in below the minimum rate is ended as well; the serving thread answers it 408.

``drain``: no new connection or request is taken, those waiting are cut, and
``serve_forever`` returns once the requests being forwarded are over or the time is up.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Sequence

from elevate_import_exporter.httpd import handshake
from elevate_import_exporter.httpd.handshake import ServerTls
from elevate_import_exporter.httpd.listeners import listen_all
from elevate_import_exporter.proxy.http1 import (
    BODY_RATE_GRACE,
    EVICT_BELOW_RATE,
    EVICT_GRACE,
    MIN_BODY_RATE,
    BodyClock,
)

log = logging.getLogger(__name__)

# Seconds the rest of a request body that was not forwarded (after an error answer) is
# read and dropped before the close, so that the client reads the answer, not a reset.
LINGER_SECONDS = 1.0
_LINGER_BYTES = 64 * 1024 * 1024
_FULL_PAUSE = 0.05


class Connection:
    """One accepted connection, as its serving thread sees it."""

    def __init__(self, owner: Acceptor, sock: socket.socket, peer: str, deadline: float) -> None:
        self._owner = owner
        self.sock = sock
        self.peer = peer
        self.since = time.monotonic()
        self.deadline: float | None = deadline  # monotonic; None while a request is served
        self.cut = False
        self.clock = BodyClock()
        # Set by the serving thread when the client may still be sending a body that was
        # not read: the close then lingers briefly.
        self.linger = False

    def await_request(self) -> bool:
        """About to wait for a request head: False if the connection is to end instead."""
        return self._owner.waiting(self)

    def begin_request(self) -> bool:
        """A request head has come: False if the connection was cut meanwhile."""
        return self._owner.working(self)


Serve = Callable[[Connection], None]


class Acceptor:
    """Accepts connections on ``addresses`` and runs ``serve(connection)`` for each in a
    thread of its own; the socket is closed when ``serve`` returns."""

    def __init__(
        self,
        addresses: Sequence[tuple[str, int]],
        serve: Serve,
        *,
        tls: ServerTls | None,
        header_timeout: float,
        idle_timeout: float,
        max_connections: int,
    ) -> None:
        self._serve = serve
        self._tls = tls
        self._header_timeout = header_timeout
        self._idle_timeout = idle_timeout
        self._max_connections = max_connections
        self._listeners = listen_all(addresses)
        self.ports = self._listeners.ports
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        for sock in (self._wake_r, self._wake_w):
            sock.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()  # guards _conns and each one's deadline and cut
        self._conns: set[Connection] = set()
        self._stop = threading.Event()
        self._loop = threading.Lock()
        self._drain_until = float("inf")
        self._accepting = False
        self._drain_begun = False
        self._closed = False

    @property
    def draining(self) -> bool:
        return self._drain_until < float("inf")

    def serve_forever(self) -> None:
        with self._loop:
            resume_at = 0.0
            while not self._stop.is_set():
                now = time.monotonic()
                if self.draining and self._drained(now):
                    return
                if not self._accepting and now >= resume_at and not self.draining:
                    self._watch(True)
                for key, _events in self._selector.select(self._wait(now)):
                    if key.data is None:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                    elif not self.draining and not self._accept(key.data):
                        self._watch(False)
                        resume_at = time.monotonic() + _FULL_PAUSE  # one leaves soon
                self._expire(time.monotonic())

    def drain(self, seconds: float) -> None:
        self._drain_until = min(self._drain_until, time.monotonic() + seconds)
        self._wake()

    def shutdown(self) -> None:
        self._stop.set()
        self._wake()
        with self._loop:
            pass

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for conn in self._conns:
                _cut(conn)
        self._listeners.close()
        self._selector.close()
        for sock in (self._wake_r, self._wake_w):
            sock.close()

    # -- the accepting thread ---------------------------------------------------------

    def _watch(self, on: bool) -> None:
        if on != self._accepting and not self._closed:
            if on:
                self._listeners.watch(self._selector)
            else:
                self._listeners.unwatch(self._selector)
            self._accepting = on

    def _wait(self, now: float) -> float:
        with self._lock:
            deadlines = [c.deadline for c in self._conns if c.deadline is not None]
        return max(0.0, min([now + 1.0, self._drain_until, *deadlines]) - now)

    def _drained(self, now: float) -> bool:
        """Begin the drain, if not begun; True once it is over."""
        if not self._drain_begun:
            self._drain_begun = True
            self._watch(False)
            self._listeners.close()
        with self._lock:
            waiting = [c for c in self._conns if c.deadline is not None]
            busy = len(self._conns) - len(waiting)
            for conn in waiting:
                _cut(conn)
        if busy and now >= self._drain_until:
            log.warning("proxy: drain time over: %d requests in flight are cut", busy)
        return not busy or now >= self._drain_until

    def _accept(self, listener: socket.socket) -> bool:
        """Accept a connection; False if there is no room for one now."""
        with self._lock:
            if len(self._conns) >= self._max_connections:
                if any(c.cut or c.clock.evicted for c in self._conns):
                    return False  # a place is being made already
                waiting = [c for c in self._conns if c.deadline is not None]
                if waiting:
                    _cut(min(waiting, key=lambda c: c.since))
                else:
                    self._evict_slowest(time.monotonic())
                return False
        try:
            sock, address = listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return True
        except OSError as exc:
            log.warning("proxy: cannot accept connections: %s", exc.strerror or exc)
            return False
        conn = Connection(self, sock, str(address[0]), time.monotonic() + self._header_timeout)
        with self._lock:
            self._conns.add(conn)
        threading.Thread(target=self._run, args=(conn,), name="proxy", daemon=True).start()
        return True

    def _expire(self, now: float) -> None:
        with self._lock:
            for conn in [c for c in self._conns if c.deadline is not None and c.deadline <= now]:
                _cut(conn)
            for conn in self._conns:
                waited, rate = conn.clock.rate(now)
                if waited >= BODY_RATE_GRACE and rate < MIN_BODY_RATE and not conn.clock.evicted:
                    log.info(
                        "proxy %s: the body comes at %.0f bytes/s, under the minimum of %.0f",
                        conn.peer,
                        rate,
                        MIN_BODY_RATE,
                    )
                    _evict(conn)

    def _evict_slowest(self, now: float) -> None:
        """Make room by ending the slowest body that has had its grace (lock held)."""
        slow = []
        for conn in self._conns:
            clock = conn.clock
            started, reading = clock.started, clock.reading_since
            if started is None or reading is None or now - started < EVICT_GRACE:
                continue  # no body, one held back by Elevate, or one just begun
            rate = clock.rate(now)[1]
            if rate < EVICT_BELOW_RATE:
                slow.append((rate, conn))
        if slow:
            rate, conn = min(slow, key=lambda found: found[0])
            log.info(
                "proxy %s: every place is taken: the slowest body (%.0f bytes/s) makes room",
                conn.peer,
                rate,
            )
            _evict(conn)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    # -- connection threads -----------------------------------------------------------

    def _run(self, conn: Connection) -> None:
        try:
            conn.sock.setblocking(True)
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is None or self._handshake(conn):
                self._serve(conn)
        except OSError as exc:
            log.debug("proxy %s: connection ended: %s", conn.peer, type(exc).__name__)
        except Exception:
            log.exception("proxy %s: serving the connection failed", conn.peer)
        finally:
            if conn.linger and not conn.cut:
                _linger(conn.sock)
            conn.sock.close()
            with self._lock:
                self._conns.discard(conn)
            self._wake()

    def _handshake(self, conn: Connection) -> bool:
        assert self._tls is not None
        wrapped = handshake.wrap(self._tls, conn.sock, conn.peer)
        if wrapped is None:
            return False
        with self._lock:
            conn.sock = wrapped
        # Blocking, so step() runs it to its end; the accepting thread cuts it at the deadline.
        return handshake.step(self._tls, wrapped, conn.peer) == 0

    def waiting(self, conn: Connection) -> bool:
        with self._lock:
            if conn.deadline is None:  # kept alive after an answer
                conn.since = time.monotonic()
                conn.deadline = conn.since + self._idle_timeout
            return not conn.cut and not self.draining

    def working(self, conn: Connection) -> bool:
        with self._lock:
            conn.deadline = None
            return not conn.cut


def _cut(conn: Connection) -> None:
    """End ``conn`` from another thread: its blocked reads and writes return at once."""
    conn.cut = True
    conn.deadline = None
    with contextlib.suppress(OSError):
        # The plain socket's shutdown, also under TLS: the TLS object stays its thread's.
        socket.socket.shutdown(conn.sock, socket.SHUT_RDWR)


def _evict(conn: Connection) -> None:
    """End the body ``conn`` is reading: its reading ends as if the client had finished
    sending, and its thread, seeing ``evicted``, answers 408 on the side still open."""
    conn.clock.evicted = True
    with contextlib.suppress(OSError):
        socket.socket.shutdown(conn.sock, socket.SHUT_RD)


def _linger(sock: socket.socket) -> None:
    """Read and drop what the client still sends, briefly, before the close."""
    deadline = time.monotonic() + LINGER_SECONDS
    dropped = 0
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_WR)
        while dropped < _LINGER_BYTES and (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            data = socket.socket.recv(sock, 65536)
            if not data:
                return
            dropped += len(data)
