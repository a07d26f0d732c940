"""The answer to a scrape: format and compression chosen from the request, as
``prometheus_client``'s own exposition chooses them, but with q-values honoured."""

from __future__ import annotations

import io
import itertools
import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from elevate_import_exporter.metrics.lines import Family, ImportFamily

log = logging.getLogger(__name__)

GZIP_LEVEL = 6


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
    fresh: CollectorRegistry | None = None,
) -> Exposition:
    """The registry in the format ``accept`` asks for; only the ``names`` families if given.

    ``names`` is the ``name[]`` query parameter of the Prometheus client libraries. The
    bytes are those of ``prometheus_client``'s encoder (gzip aside); the per-import
    families are written from their kept lines (lines.py) where the encoder would write
    the same. ``fresh`` collectors follow ``registry``'s.
    """
    encoder, content_type = choose_encoder(accept)
    dialect = _dialect(encoder, content_type)
    runs = itertools.chain(
        _runs(_source(registry, names), dialect),
        _runs(_source(fresh, names), dialect) if fresh is not None else (),
        [[dialect.end]],
    )
    return _encoded(runs, content_type, accepts_gzip(accept_encoding))


def _encoded(runs: Iterable[list[bytes]], content_type: str, gzip: bool) -> Exposition:
    if gzip:
        return Exposition(_gzipped(runs), content_type, "gzip")
    return Exposition(_joined(runs), content_type, None)


def _source(registry: CollectorRegistry | Collector, names: Iterable[str]) -> _Collects:
    wanted = [name for name in names if name]
    if wanted and isinstance(registry, CollectorRegistry):
        return registry.restricted_registry(wanted)
    return registry


class _Collects(Protocol):
    def collect(self) -> Iterable[Metric]: ...


@dataclass(frozen=True)
class _Collected:
    metrics: tuple[Metric, ...]

    def collect(self) -> Iterable[Metric]:
        return self.metrics


class _Dialect:
    """One encoder of prometheus_client: a family alone, and whether it writes a family of
    lines.py as lines.py does (its HELP and TYPE lines if so)."""

    def __init__(self, encoder: Callable[[_Collects], bytes]) -> None:
        self._encoder = encoder
        self.end = encoder(_Collected(()))  # "# EOF" in OpenMetrics, nothing in text
        self._heads: dict[Family, bytes | None] = {}

    def alone(self, metric: Metric) -> bytes:
        text = self._encoder(_Collected((metric,)))
        return text[: len(text) - len(self.end)]

    def head(self, family: Family) -> bytes | None:
        if family not in self._heads:
            self._heads[family] = self._probe(family)
        return self._heads[family]

    def _probe(self, family: Family) -> bytes | None:
        head = self.alone(Metric(family.name, family.documentation, "gauge"))
        probe = Metric(family.name, family.documentation, "gauge")
        probe.add_sample(family.name, dict.fromkeys(family.labels, "x"), 1.0)
        labels = ",".join(f'{label}="x"' for label in sorted(family.labels))
        if self.alone(probe) != head + f"{family.name}{{{labels}}} 1.0\n".encode():
            # An escaping scheme that rewrites names (dots, values): the samples then.
            log.debug("%s: the encoder writes its lines unlike lines.py", family.name)
            return None
        return head


# Encoders by content type, which names format, version and escaping. Bounded: the
# version comes from the client.
_DIALECTS: dict[str, _Dialect] = {}
_DIALECTS_LOCK = threading.Lock()
# Kinds of answer (content type, gzip or not) remembered at most, and answers kept for
# sharing at most: a kind is named by the client's Accept header, so there is no end to
# them, and an answer may be megabytes.
MAX_KINDS = 16
MAX_SHARED = 4


def _dialect(encoder: Callable[[_Collects], bytes], content_type: str) -> _Dialect:
    with _DIALECTS_LOCK:
        dialect = _DIALECTS.get(content_type)
        if dialect is None:
            if len(_DIALECTS) >= MAX_KINDS:
                _DIALECTS.clear()
            dialect = _DIALECTS[content_type] = _Dialect(encoder)
        return dialect


def _runs(source: _Collects, dialect: _Dialect) -> Iterator[list[bytes]]:
    """The answer in runs of pieces, metric by metric, in the registry's order."""
    for metric in source.collect():
        if isinstance(metric, ImportFamily) and (head := dialect.head(metric.family)):
            yield [head]
            yield from metric.runs()
        else:
            yield [dialect.alone(metric)]


def _joined(runs: Iterable[list[bytes]]) -> bytes:
    # A run at a time into one growing buffer, which getvalue() hands over without a copy:
    # one join of every piece would hold the pieces and a buffer descriptor for each
    # besides the answer, twice its size.
    out = io.BytesIO()
    for run in runs:
        out.write(b"".join(run))
    return out.getvalue()


def _gzipped(runs: Iterable[list[bytes]]) -> bytes:
    # Compressed a run at a time: the whole answer never sits in memory uncompressed.
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [compressor.compress(b"".join(run)) for run in runs]
    out.append(compressor.flush())
    return b"".join(out)


class Renderer:
    """Renders a registry; shares one answer per kind among scrapes of the same state, and
    remembers how long each kind of answer took to build, so that a scrape can leave room
    for it within its timeout.

    ``state`` is what the ``registry``'s answer is made of (the poller's import mapping and
    last round, which are replaced, never changed): scrapes that come with the same objects
    share those bytes, and simultaneous ones wait for a single render instead of each doing
    it. The ``fresh`` collectors (process, proxy) are cheap and move between rounds: they
    are rendered for every scrape, so their counters never look frozen.
    """

    # How much of an estimate survives a faster render: it drops slowly, rises at once.
    _DECAY = 0.9

    def __init__(self, registry: CollectorRegistry, fresh: CollectorRegistry | None = None) -> None:
        self._registry = registry
        self._fresh = fresh
        self._lock = threading.Lock()
        self._seconds: dict[tuple[str, bool], float] = {}
        self._kind_locks: dict[tuple[str, bool], threading.Lock] = {}
        self._shared: dict[tuple[str, bool], tuple[tuple[object, ...], Exposition]] = {}
        self.renders = 0  # shared parts built, for the tests and the benchmark

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
            return render(self._registry, accept, accept_encoding, wanted, self._fresh)
        kind = _kind(accept, accept_encoding)
        with self._kind_lock(kind):
            with self._lock:
                shared = self._shared.pop(kind, None)
            if shared is not None and _same(shared[0], state):
                part = shared[1]
            else:
                # The old answer is let go first: a large one is not held twice.
                shared = None
                part = self._build(accept, accept_encoding, wanted)
            with self._lock:
                self._shared[kind] = (state, part)  # now the most recent
                while len(self._shared) > MAX_SHARED:
                    del self._shared[next(iter(self._shared))]
        return self._with_fresh(part, accept)

    @property
    def kept_answers(self) -> int:
        """Answers kept for sharing: one per kind, for the kinds asked for last."""
        with self._lock:
            return len(self._shared)

    def _kind_lock(self, kind: tuple[str, bool]) -> threading.Lock:
        with self._lock:
            if kind not in self._kind_locks and len(self._kind_locks) >= MAX_KINDS:
                self._kind_locks.clear()  # kinds come from the client: only so many kept
            return self._kind_locks.setdefault(kind, threading.Lock())

    def _build(self, accept: str, accept_encoding: str, wanted: list[str]) -> Exposition:
        """The shared part: the registry's families without the end of the answer. Gzip'd,
        it is a whole gzip member: the fresh part follows as another (RFC 1952 allows a
        file of several members, and every gzip reader reads them as one stream)."""
        started = time.perf_counter()
        encoder, content_type = choose_encoder(accept)
        runs = _runs(_source(self._registry, wanted), _dialect(encoder, content_type))
        answer = _encoded(runs, content_type, accepts_gzip(accept_encoding))
        seconds = time.perf_counter() - started
        with self._lock:
            self.renders += 1
            if not wanted:  # a filtered answer says little about a full one
                kind = _kind(accept, accept_encoding)
                if kind not in self._seconds and len(self._seconds) >= MAX_KINDS:
                    self._seconds.clear()
                self._seconds[kind] = max(seconds, self._DECAY * self._seconds.get(kind, 0.0))
        return answer

    def _with_fresh(self, part: Exposition, accept: str) -> Exposition:
        encoder, content_type = choose_encoder(accept)
        dialect = _dialect(encoder, content_type)
        runs = itertools.chain(
            _runs(self._fresh, dialect) if self._fresh is not None else (), [[dialect.end]]
        )
        tail = _encoded(runs, content_type, part.content_encoding == "gzip")
        return Exposition(part.body + tail.body, part.content_type, part.content_encoding)


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
