"""The answer to a scrape: format and compression chosen from the request, as
``prometheus_client``'s own exposition chooses them, but with q-values honoured."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector


@dataclass(frozen=True, slots=True)
class Exposition:
    body: bytes
    content_type: str
    content_encoding: str | None


def render(
    registry: CollectorRegistry | Collector,
    accept: str,
    accept_encoding: str,
    names: Iterable[str] = (),
) -> Exposition:
    """The registry in the format ``accept`` asks for; only the ``names`` families if given.

    ``names`` is the ``name[]`` query parameter of the Prometheus client libraries.
    """
    wanted = [name for name in names if name]
    if wanted and isinstance(registry, CollectorRegistry):
        registry = registry.restricted_registry(wanted)
    encoder, content_type = choose_encoder(accept)
    body = encoder(registry)
    if accepts_gzip(accept_encoding):
        return Exposition(gzip.compress(body, compresslevel=6), content_type, "gzip")
    return Exposition(body, content_type, None)


class Renderer:
    """Renders a registry; shares one answer per kind among scrapes of the same state, and
    remembers how long each kind of answer took to build, so that a scrape can leave room
    for it within its timeout.

    ``state`` is what the answer is made of (the poller's import mapping and last round,
    which are replaced, never changed): scrapes that come with the same objects get the
    same bytes, and simultaneous ones wait for a single render instead of each doing it.
    """

    # How much of an estimate survives a faster render: it drops slowly, rises at once.
    _DECAY = 0.9

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._lock = threading.Lock()
        self._seconds: dict[tuple[str, bool], float] = {}
        self._kind_locks: dict[tuple[str, bool], threading.Lock] = {}
        self._shared: dict[tuple[str, bool], tuple[tuple[object, ...], Exposition]] = {}
        self.renders = 0  # answers built, for the tests and the benchmark

    def estimate(self, accept: str, accept_encoding: str) -> float:
        """Seconds the answer will take to build; the first time, measured by building it."""
        kind = _kind(accept, accept_encoding)
        with self._lock:
            known = self._seconds.get(kind)
        if known is not None:
            return known
        with self._kind_lock(kind):  # simultaneous first scrapes measure once
            with self._lock:
                known = self._seconds.get(kind)
            if known is None:
                self._build(accept, accept_encoding, [])
        with self._lock:
            return self._seconds[kind]

    def render(
        self,
        accept: str,
        accept_encoding: str,
        names: Iterable[str] = (),
        state: tuple[object, ...] | None = None,
    ) -> Exposition:
        wanted = [name for name in names if name]
        if wanted or state is None:
            return self._build(accept, accept_encoding, wanted)
        kind = _kind(accept, accept_encoding)
        with self._kind_lock(kind):
            shared = self._shared.get(kind)
            if shared is not None and _same(shared[0], state):
                return shared[1]
            answer = self._build(accept, accept_encoding, wanted)
            self._shared[kind] = (state, answer)
            return answer

    def _kind_lock(self, kind: tuple[str, bool]) -> threading.Lock:
        with self._lock:
            return self._kind_locks.setdefault(kind, threading.Lock())

    def _build(self, accept: str, accept_encoding: str, wanted: list[str]) -> Exposition:
        started = time.perf_counter()
        answer = render(self._registry, accept, accept_encoding, wanted)
        seconds = time.perf_counter() - started
        with self._lock:
            self.renders += 1
            if not wanted:  # a filtered answer says little about a full one
                kind = _kind(accept, accept_encoding)
                self._seconds[kind] = max(seconds, self._DECAY * self._seconds.get(kind, 0.0))
        return answer


def _same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def _kind(accept: str, accept_encoding: str) -> tuple[str, bool]:
    return choose_encoder(accept)[1], accepts_gzip(accept_encoding)


def accepts_gzip(header: str) -> bool:
    """Whether an ``Accept-Encoding`` header allows gzip (``gzip;q=0`` refuses it)."""
    for part in header.split(","):
        coding, _, params = part.partition(";")
        if coding.strip().lower() not in ("gzip", "x-gzip"):
            continue
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    return float(value.strip()) > 0
                except ValueError:
                    return False
        return True
    return False
