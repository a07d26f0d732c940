"""The import proxy's rules for slow bodies, applied from the serving loop's turns
(:class:`~elevate_import_exporter.httpd.connections.Connections` in streaming mode).

A proxied request holds a worker thread while its bodies stream, for minutes if they are
large; the loop itself bounds heads (header and idle timeouts) but not bodies. So: a body
that comes in below the minimum rate is ended, and when every place is taken and a new
connection is waiting, the slowest body (see :data:`~.http1.EVICT_GRACE`) makes room. An
ended body's reading stops as if the client had finished sending; its worker, seeing
``evicted``, answers 408 on the side still open.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
from collections.abc import Callable, Sequence

from elevate_import_exporter.httpd.exchange import Exchange
from elevate_import_exporter.proxy.http1 import (
    BODY_RATE_GRACE,
    EVICT_BELOW_RATE,
    EVICT_GRACE,
    MIN_BODY_RATE,
    BodyClock,
)

log = logging.getLogger(__name__)

# Seconds after making room during which no further body is ended for it: the place
# comes free once the 408 is written and the connection closed.
ROOM_PENDING = 1.0


class SlowBodies:
    """The body clocks of the requests being served, judged every turn of the loop.

    ``full()``: every place is taken; ``listeners``: the sockets a new connection would
    wait on (one that is ready there is a connection waiting)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clocks: dict[Exchange, tuple[BodyClock, str]] = {}
        self._room_made_at = float("-inf")
        self.full: Callable[[], bool] = lambda: False
        self.listeners: Sequence[socket.socket] = ()

    def clock(self, exchange: Exchange) -> BodyClock:
        """A clock for ``exchange``'s body, judged until :meth:`forget`."""
        clock = BodyClock()
        with self._lock:
            self._clocks[exchange] = (clock, exchange.peer)
        return clock

    def forget(self, exchange: Exchange) -> None:
        with self._lock:
            self._clocks.pop(exchange, None)

    def turn(self, now: float) -> None:
        with self._lock:
            clocks = list(self._clocks.items())
        for exchange, (clock, peer) in clocks:
            waited, rate = clock.rate(now)
            if waited >= BODY_RATE_GRACE and rate < MIN_BODY_RATE and not clock.evicted:
                log.info(
                    "proxy %s: the body comes at %.0f bytes/s, under the minimum of %.0f",
                    peer,
                    rate,
                    MIN_BODY_RATE,
                )
                _evict(exchange, clock)
        if now - self._room_made_at < ROOM_PENDING or not self.full():
            return
        if self._knocking() and self._evict_slowest(clocks, now):
            self._room_made_at = now

    def _knocking(self) -> bool:
        try:
            return bool(select.select(list(self.listeners), [], [], 0)[0])
        except (OSError, ValueError):  # closed by a drain
            return False

    def _evict_slowest(
        self, clocks: list[tuple[Exchange, tuple[BodyClock, str]]], now: float
    ) -> bool:
        slow = []
        for exchange, (clock, peer) in clocks:
            started, reading = clock.started, clock.reading_since
            if clock.evicted or started is None or reading is None or now - started < EVICT_GRACE:
                continue  # no body, one held back by Elevate, or one just begun
            rate = clock.rate(now)[1]
            if rate < EVICT_BELOW_RATE:
                slow.append((rate, peer, exchange, clock))
        if not slow:
            return False
        rate, peer, exchange, clock = min(slow, key=lambda found: found[0])
        log.info(
            "proxy %s: every place is taken: the slowest body (%.0f bytes/s) makes room",
            peer,
            rate,
        )
        _evict(exchange, clock)
        return True


def _evict(exchange: Exchange, clock: BodyClock) -> None:
    """End the body ``exchange`` is reading, not its answer: the client gets the 408."""
    clock.evicted = True
    with contextlib.suppress(OSError):
        # The plain socket's shutdown, also under TLS: the TLS object stays its thread's.
        socket.socket.shutdown(exchange.sock, socket.SHUT_RD)
