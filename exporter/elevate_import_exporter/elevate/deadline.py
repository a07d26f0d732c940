"""The deadline of a whole request: headers and body, however slowly they trickle.

A socket timeout bounds each read, so an answer that trickles a byte a second never
trips it. A guard per request bounds the whole answer: one reaper thread shuts the
request's socket down at its deadline, and the worker blocked in recv() wakes to an end
of file. The transport's connection class attaches itself to its thread's guard once
the request is sent. (A timer per request would cost a thread per request; reading the
body in pieces with per-read timeouts would still leave the headers unbounded.) The
connect and a TLS handshake stay bounded by the socket timeout alone.

And how long to wait before asking again: a ``Retry-After`` header, or a backoff.

Standard library only: the transport plugs it into urllib3.
"""

from __future__ import annotations

import contextlib
import email.utils
import heapq
import http.client
import random
import socket
import threading
import time
from datetime import UTC
from typing import Any, Protocol, cast


class Guarded(Protocol):
    """A connection a guard can shut: it has a socket (once connected) and a guard slot."""

    sock: socket.socket | None
    guard: Guard | None


current = threading.local()


class Guard:
    """One request's deadline: once ``expired``, the connection it went out on is shut.

    Its own context manager (no generator per request): entering registers it with its
    reaper and makes it the thread's guard; leaving finishes it and unregisters it.
    """

    __slots__ = ("_deadline", "_done", "_on", "_reaper", "expired")

    def __init__(self, reaper: Reaper, deadline: float) -> None:
        self.expired = self._done = False
        self._on: Guarded | None = None
        self._reaper, self._deadline = reaper, deadline

    def __enter__(self) -> Guard:
        self._reaper._add(self)
        current.guard = self
        return self

    def __exit__(self, *_exc: object) -> None:
        current.guard = None
        self._reaper._remove(self)

    def attach(self, connection: Guarded) -> None:
        with self._reaper._lock:
            connection.guard, self._on = self, connection
            if self.expired:
                shut(connection)

    def expire(self) -> None:
        """Called by the reaper, under its lock."""
        self.expired = not self._done
        # Back in the pool, the connection may already carry another request.
        if self.expired and self._on is not None and self._on.guard is self:
            shut(self._on)


class Reaper:
    """The thread that expires guards at their deadlines (monotonic).

    The requests of a poll round share its deadline, so guards are kept in one set per
    deadline and the heap holds deadlines, not guards: registering is a set insert (a
    heap push only for a deadline not seen yet), and a finished guard leaves its set at
    once instead of waiting in the heap until its deadline.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # every guard's add, attach, expire and remove
        self._wake = threading.Condition(self._lock)
        self._due: list[float] = []
        self._sets: dict[float, set[Guard]] = {}
        self._closed = self._started = False

    def guard(self, deadline: float) -> Guard:
        """A guard for the request this thread sends within the ``with`` block."""
        return Guard(self, deadline)

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()

    def _add(self, guard: Guard) -> None:
        deadline = guard._deadline
        with self._lock:
            guards = self._sets.get(deadline)
            if guards is not None:
                guards.add(guard)
                return
            self._sets[deadline] = {guard}
            heapq.heappush(self._due, deadline)
            if not self._started:
                self._started = True
                threading.Thread(target=self._run, name="elevate-deadline", daemon=True).start()
            if self._due[0] == deadline:  # due before all others: the reaper must know
                self._wake.notify()

    def _remove(self, guard: Guard) -> None:
        with self._lock:
            guard._done, guard._on = True, None
            guards = self._sets.get(guard._deadline)
            if guards is not None:
                guards.discard(guard)

    def _run(self) -> None:
        with self._wake:
            while not self._closed:
                now = time.monotonic()
                while self._due and self._due[0] <= now:
                    for guard in self._sets.pop(heapq.heappop(self._due)):
                        guard.expire()
                self._wake.wait(self._due[0] - now if self._due else None)


def shut(connection: Guarded) -> None:
    if connection.sock is not None:
        with contextlib.suppress(OSError):
            # socket.socket's own shutdown: an SSLSocket's would also drop its SSL
            # object under the worker still reading through it.
            socket.socket.shutdown(connection.sock, socket.SHUT_RDWR)


class WholeHead(http.client.HTTPResponse):
    """An answer whose headers must end with their empty line, not with the connection.

    http.client also ends the headers at the end of the connection, so an answer cut
    after its status line would pass for a whole answer with an empty body.
    """

    def begin(self) -> None:
        reader = self.fp
        self.fp = lines = cast(Any, LastLine(reader))
        try:
            super().begin()
        finally:
            # http.client closes the connection (fp None) on a status line that is not
            # HTTP; the reader put back then would be a closed file, and the close that
            # follows would fail on it and hide the BadStatusLine behind a ValueError.
            if self.fp is lines:
                self.fp = reader
        if lines.last == b"":
            raise http.client.RemoteDisconnected("connection closed inside the answer's headers")


class LastLine:
    def __init__(self, reader: Any) -> None:
        self.reader, self.last = reader, None

    def readline(self, limit: int = -1) -> bytes:
        self.last = self.reader.readline(limit)
        return cast(bytes, self.last)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reader, name)


# The longest Retry-After honoured; a longer one, or a date further ahead, counts as
# this. An hour outlasts any rate limit worth waiting for, and one answer cannot make
# the exporter leave an id alone for days.
MAX_RETRY_AFTER = 3600.0

_BACKOFF_BASE = 0.1
_BACKOFF_CAP = 2.0


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, at most :data:`MAX_RETRY_AFTER`.

    ASCII digits or an HTTP date; anything else (``³``, ``1e9``, ``-5``) is None, as if
    there were no header.
    """
    value = (value or "").strip()
    if value.isascii() and value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:  # "-0000": an HTTP date is in GMT all the same
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - time.time()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


def backoff(attempt: int) -> float:
    # Half fixed, half random: spreads retries of a burst without ever retrying at once.
    ceiling = min(_BACKOFF_CAP, _BACKOFF_BASE * 2.0**attempt)
    return ceiling / 2 + random.uniform(0, ceiling / 2)
