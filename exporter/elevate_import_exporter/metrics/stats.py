"""Counters of the status requests sent: metric state, fed by the transport's callback."""

from __future__ import annotations

import bisect
import math
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from elevate_import_exporter.core.model import ERROR_REASONS, RequestRecord

# Prometheus' default buckets suit request latencies from a few ms to the timeout.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


def cumulative_buckets(bounds: Sequence[float], counts: Sequence[int]) -> list[tuple[str, float]]:
    """A histogram's buckets as a metric family takes them: ``counts`` per bucket of
    ``bounds`` and then +Inf (not cumulative), summed up to each bound."""
    buckets: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip((*bounds, math.inf), counts, strict=True):
        total += count
        buckets.append(("+Inf" if math.isinf(bound) else repr(bound), total))
    return buckets


Family = TypeVar("Family", CounterMetricFamily, GaugeMetricFamily)


# Mapping's key type is invariant: each key shape the families use is named.
Counts = Mapping[str, float] | Mapping[tuple[str, str], float] | Mapping[tuple[str, ...], float]


def labelled(family: Family, counts: Counts) -> Family:
    """``family`` (made with its label names) with one sample a key of ``counts``, in the
    keys' order: a string for one label, a tuple of strings for several."""
    for key, value in sorted(counts.items()):
        family.add_metric([key] if isinstance(key, str) else list(key), value)
    return family


@dataclass(frozen=True)
class ApiStats:
    requests: Mapping[str, int]
    errors: Mapping[str, int]
    bucket_counts: tuple[int, ...]  # per bucket of LATENCY_BUCKETS, then +Inf; not cumulative
    latency_sum: float


class RequestStats:
    """Counters of the status requests sent, fed from the poll worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        self._errors: Counter[str] = Counter(dict.fromkeys(ERROR_REASONS, 0))
        self._buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self._sum = 0.0

    def record(self, request: RequestRecord) -> None:
        # bisect_left puts a value equal to a bound in that bound's bucket (le).
        index = bisect.bisect_left(LATENCY_BUCKETS, request.seconds)
        with self._lock:
            self._requests[request.code] += 1
            if request.error is not None:
                self._errors[request.error] += 1
            self._buckets[index] += 1
            self._sum += request.seconds

    def snapshot(self) -> ApiStats:
        with self._lock:
            return ApiStats(
                dict(self._requests), dict(self._errors), tuple(self._buckets), self._sum
            )
