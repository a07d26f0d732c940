"""Aggregates of imports that outlive retention: how many finished, how long they took and
queued, when each type last finished with each status, and the owners' labels.

The catalog feeds this state when a store write that first holds an import's end (or its
leaving the queue) has committed, so each import is counted once however it was tracked,
and a record loaded with ``final_at`` already set is never counted again. The collector
reads it through :meth:`Outcomes.view`. Thread-safe: one lock, held briefly.

Label values are bounded: at most ``max_values`` distinct values per allowlisted name are
published; further ones are published as :data:`OTHER`, with one warning per name. An
admitted value stays admitted for the life of the process, and values kept in the store
are admitted first at start-up, so the set is stable across scrapes and restarts.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import re
import threading
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from elevate_import_exporter.core.model import FINAL_STATUSES
from elevate_import_exporter.core.records import ImportRecord, Labels

log = logging.getLogger(__name__)

# What elevate_import_finished_total counts: the final statuses, and NOT_FOUND once an
# import is retired as such (it never got anywhere, which is worth counting too).
FINISHED_STATUSES = (*sorted(FINAL_STATUSES), "NOT_FOUND")
DURATION_STATUSES = tuple(sorted(FINAL_STATUSES))
# Statuses of an import that has not left the queue. NOT_FOUND too: right after a 202,
# Elevate may not know the id yet.
QUEUED_STATUSES = frozenset({"WAITING", "BLOCKED", "NOT_FOUND"})
DEFAULT_DURATION_BUCKETS = (
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1200.0,
    1800.0,
    3600.0,
    7200.0,
    14400.0,
    28800.0,
    86400.0,
)
DEFAULT_QUEUE_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)
DEFAULT_MAX_VALUES = 100
OTHER = "other"
MAX_METRIC_LABELS = 4
# Names the exporter's own series, Prometheus or the usual target labels already use.
RESERVED_LABELS = ("id", "type", "status", "le", "source", "label", "cluster", "job", "instance")
METRIC_LABEL = re.compile(r"[a-z_][a-z0-9_]*")

Values = tuple[str, ...]  # the published values of the allowlisted names, in their order
Combo = tuple[str, Values]  # type and values
Key = tuple[str, str, Values]  # type, status and values


class LabelNameError(ValueError):
    """An allowlist that cannot be: the message names the value."""


def checked_names(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` if they make a valid allowlist; :class:`LabelNameError` otherwise."""
    if len(names) > MAX_METRIC_LABELS:
        raise LabelNameError(f"at most {MAX_METRIC_LABELS} names, got {len(names)}")
    seen: set[str] = set()
    for name in names:
        if METRIC_LABEL.fullmatch(name) is None or len(name) > 64:
            raise LabelNameError(
                f"{name!r} is not a label name (a-z 0-9 _, not starting with a digit)"
            )
        if name.startswith("__"):  # Prometheus keeps those names for itself
            raise LabelNameError(f"{name!r} starts with __, which Prometheus reserves")
        if name in RESERVED_LABELS:
            raise LabelNameError(f"{name!r} is a label of the exporter's own or Prometheus'")
        if name in seen:
            raise LabelNameError(f"{name!r} is given twice")
        seen.add(name)
    return tuple(names)


def checked_buckets(bounds: Sequence[float]) -> tuple[float, ...]:
    """Upper bounds that are finite, positive and strictly increasing; ValueError if not."""
    if not bounds:
        raise ValueError("give at least one bucket")
    for bound in bounds:
        if not (math.isfinite(bound) and bound > 0):
            raise ValueError(f"{bound:g} is not a positive number of seconds")
    for low, high in itertools.pairwise(bounds):
        if high <= low:
            raise ValueError(f"{high:g} does not follow {low:g}: buckets must increase")
    return tuple(float(bound) for bound in bounds)


@dataclass(frozen=True, slots=True)
class Finish:
    """An import's end as counted: its type, status (a final one, or NOT_FOUND when retired
    so), labels, when (Unix seconds), and its duration when it can be told (else None)."""

    type: str
    status: str
    labels: Labels
    at: float
    duration: float | None = None


@dataclass(frozen=True, slots=True)
class LeftQueue:
    """An import seen leaving the queue, and how long it queued."""

    type: str
    labels: Labels
    seconds: float


def left_queue_at(
    known: ImportRecord | None, status: str | None, since: float | None
) -> float | None:
    """When the import was first seen out of the queue: kept once known, else the time the
    current status was first seen if that status is past the queue."""
    if known is not None and known.left_queue_at is not None:
        return known.left_queue_at
    if status is None or status in QUEUED_STATUSES:
        return None
    return since


def changes(
    before: ImportRecord | None, after: ImportRecord
) -> tuple[LeftQueue | None, Finish | None]:
    """What writing ``after`` over ``before`` tells once: the import leaving the queue, its
    end. Measured from ``started_at`` when known; else from first seen, but only when an
    earlier answer saw it before (an import past the queue, or final, at its first answer
    would measure first seen to first poll: a false, near-zero time)."""
    answered_before = before is not None and before.status is not None
    queue = finish = None
    if after.left_queue_at is not None and (before is None or before.left_queue_at is None):
        start = after.started_at
        if start is None and answered_before and before is not None:
            start = before.first_seen
        if start is not None:
            queue = LeftQueue(after.type, after.labels, max(0.0, after.left_queue_at - start))
    ends = after.final_at is not None and (before is None or before.final_at is None)
    if ends and after.final_at is not None and after.status is not None:
        duration = None
        if after.started_at is not None or answered_before:
            duration = max(0.0, after.final_at - after.start)
        finish = Finish(after.type, after.status, after.labels, after.final_at, duration)
    return queue, finish


class Histogram:
    """Observations into fixed buckets: counts per bucket (not cumulative), sum, count."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        """Buckets as HistogramMetricFamily takes them: (upper bound, count up to it)."""
        total, out = 0, []
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += count
            out.append(("+Inf" if bound == math.inf else _bound_text(bound), float(total)))
        return out

    def copy(self) -> Histogram:
        other = Histogram(self.bounds)
        other.counts = list(self.counts)
        other.sum = self.sum
        return other


def _bound_text(bound: float) -> str:
    return repr(float(bound))


@dataclass(frozen=True)
class View:
    """The aggregates at one moment, for a scrape; never changed."""

    names: tuple[str, ...]
    combos: tuple[Combo, ...]  # every (type, values) seen, sorted
    finished: Mapping[Key, int]
    durations: Mapping[Key, Histogram]
    queues: Mapping[Combo, Histogram]
    last_final: Mapping[Key, float]
    overflow: Mapping[str, int]
    duration_buckets: tuple[float, ...]
    queue_buckets: tuple[float, ...]


class Outcomes:
    """The aggregates' state, fed by the catalog, read by the collector."""

    def __init__(
        self,
        names: Sequence[str] = (),
        max_values: int = DEFAULT_MAX_VALUES,
        duration_buckets: Sequence[float] = DEFAULT_DURATION_BUCKETS,
        queue_buckets: Sequence[float] = DEFAULT_QUEUE_BUCKETS,
    ) -> None:
        self.names = checked_names(names)
        self.max_values = max_values
        self.duration_buckets = checked_buckets(duration_buckets)
        self.queue_buckets = checked_buckets(queue_buckets)
        self._lock = threading.Lock()
        self._admitted: dict[str, set[str]] = {name: set() for name in self.names}
        self._warned: set[str] = set()
        self._overflow: Counter[str] = Counter()
        self._ids: dict[str, Values] = {}
        self._combos: set[Combo] = set()
        self._finished: Counter[Key] = Counter()
        self._durations: dict[Key, Histogram] = {}
        self._queues: dict[Combo, Histogram] = {}
        self._last: dict[Key, float] = {}
        self._blank: Values = ("",) * len(self.names)
        self._view: View | None = None
        # Replaced whenever anything published changes (compared by identity).
        self.version: object = object()

    # -- what the catalog tells ---------------------------------------------------------

    def restore(self, last_finals: Iterable[tuple[str, str, Mapping[str, str], float]]) -> None:
        """Take up the kept last-final times at start-up, newest first: their values are
        admitted before any other. Values of names no longer allowlisted are dropped."""
        rows = sorted(last_finals, key=lambda row: -row[3])
        with self._lock:
            for kind, status, labels, at in rows:
                values = tuple(
                    self._admit(name, labels.get(name, ""), count=False) for name in self.names
                )
                key = (kind, status, values)
                if at > self._last.get(key, -math.inf):
                    self._last[key] = at
                self._combos.add((kind, values))
            self._changed()

    def track(self, import_id: str, kind: str, labels: Labels) -> Values:
        """The published values of a tracked import, admitted on first sight (past the
        cap: :data:`OTHER`, counted once for the import); its type joins those seen."""
        with self._lock:
            values = self._ids.get(import_id)
            if values is None:
                values = self._values(labels, count=True)
                self._ids[import_id] = values
                self._changed()
            if kind and (kind, values) not in self._combos:
                self._combos.add((kind, values))
                self._changed()
            return values

    def forget(self, ids: Iterable[str]) -> None:
        """Imports no longer tracked (retired, deleted): their info series go."""
        with self._lock:
            gone = [i for i in ids if self._ids.pop(i, None) is not None]
            if gone:
                self._changed()

    def prune(self, tracked: Collection[str], kept: Collection[str]) -> None:
        """Forget the values of imports neither ``tracked`` (polled) nor ``kept`` (live in
        the store): ids that left their flag or file without being retired."""
        with self._lock:
            if len(self._ids) <= len(tracked):
                return  # at most the tracked ones: nothing has left (the usual case)
            gone = [i for i in self._ids if i not in tracked and i not in kept]
            for import_id in gone:
                del self._ids[import_id]
            if gone:
                self._changed()

    def values_of(self, import_id: str, labels: Labels) -> Values:
        """The values an import was published with; admitted now if it never was."""
        with self._lock:
            values = self._ids.get(import_id)
            return values if values is not None else self._values(labels, count=False)

    def left_queue(self, import_id: str, event: LeftQueue) -> None:
        values = self.values_of(import_id, event.labels)
        with self._lock:
            combo = (event.type, values)
            self._combos.add(combo)
            histogram = self._queues.get(combo)
            if histogram is None:
                histogram = self._queues[combo] = Histogram(self.queue_buckets)
            histogram.observe(event.seconds)
            self._changed()

    def finished(self, import_id: str, event: Finish) -> None:
        """Count an end, once: the caller's store write that first held it has committed."""
        values = self.values_of(import_id, event.labels)
        with self._lock:
            key = (event.type, event.status, values)
            self._combos.add((event.type, values))
            self._finished[key] += 1
            if event.at > self._last.get(key, -math.inf):
                self._last[key] = event.at
            if event.duration is not None:
                histogram = self._durations.get(key)
                if histogram is None:
                    histogram = self._durations[key] = Histogram(self.duration_buckets)
                histogram.observe(event.duration)
            self._changed()

    def kept_row(self, import_id: str, event: Finish) -> tuple[str, str, dict[str, str], float]:
        """The row the store keeps of an end (its last-final table), written with it."""
        values = self.values_of(import_id, event.labels)
        return event.type, event.status, dict(zip(self.names, values, strict=True)), event.at

    # -- what the collector reads ----------------------------------------------------------

    def labels_of(self) -> tuple[tuple[str, ...], Mapping[str, Values], Values]:
        """The allowlisted names, the values of each tracked import that has any, and the
        values of one that has none. The mapping is a copy."""
        with self._lock:
            return self.names, dict(self._ids), self._blank

    def view(self) -> View:
        with self._lock:
            if self._view is None:
                self._view = View(
                    names=self.names,
                    combos=tuple(sorted(self._combos)),
                    finished=dict(self._finished),
                    durations={k: h.copy() for k, h in self._durations.items()},
                    queues={k: h.copy() for k, h in self._queues.items()},
                    last_final=dict(self._last),
                    overflow={name: self._overflow[name] for name in self.names},
                    duration_buckets=self.duration_buckets,
                    queue_buckets=self.queue_buckets,
                )
            return self._view

    # -- admission ----------------------------------------------------------------------

    def _values(self, labels: Labels, *, count: bool) -> Values:
        if not self.names:
            return ()
        given = dict(labels)
        return tuple(self._admit(name, given.get(name, ""), count=count) for name in self.names)

    def _admit(self, name: str, value: str, *, count: bool) -> str:
        if value in ("", OTHER):
            return value
        admitted = self._admitted[name]
        if value in admitted:
            return value
        if len(admitted) < self.max_values:
            admitted.add(value)
            return value
        if count:
            self._overflow[name] += 1
        if name not in self._warned:
            self._warned.add(name)
            log.warning(
                "label %s has more than %d distinct values (--imports.metric-labels-max-values):"
                " further values are published as %r",
                name,
                self.max_values,
                OTHER,
            )
        return OTHER

    def _changed(self) -> None:
        self._view = None
        self.version = object()
