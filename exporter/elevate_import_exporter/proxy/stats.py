"""Counters of the import proxy: metric state, fed by its connection threads.

Every label value is bounded whatever clients send: methods outside :data:`METHODS` count
as ``other``; codes are three digits, from Elevate or the proxy itself.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from elevate_import_exporter.core.model import ERROR_REASONS
from elevate_import_exporter.core.model import reason_for_status as model_reason
from elevate_import_exporter.proxy.tracking import IMPORT_TYPES, OTHER_TYPE, OUTCOMES

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
OTHER_METHOD = "other"
# upload: from feed jobs to Elevate (request bodies); download: back (answer bodies).
DIRECTIONS = ("upload", "download")
# From a quick status query to an import that holds its request for Elevate's maximum.
DURATION_BUCKETS = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0
)  # fmt: skip
# The code counted when the client closed its connection before the exchange was over
# (as nginx counts it): no answer reached it.
CLIENT_GONE = 499


def method_label(method: str) -> str:
    return method if method in METHODS else OTHER_METHOD


def reason_for_status(status: int) -> str | None:
    """The status client's reason for an answer of Elevate, None for a 2xx."""
    return None if 200 <= status < 300 else model_reason(status)


@dataclass(frozen=True)
class ProxySnapshot:
    requests: Mapping[tuple[str, str], int]  # (method, code)
    bucket_counts: tuple[int, ...]  # per bucket of DURATION_BUCKETS, then +Inf
    duration_sum: float
    bytes: Mapping[str, int]  # by direction, both present
    tracked: Mapping[str, int]  # by type
    imports: Mapping[tuple[str, str], int]  # (type, outcome)
    upstream_errors: Mapping[str, int]  # by reason, every reason present
    registration_failures: int
    in_flight: int


class ProxyStats:
    """The proxy's counters; every method is safe from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str]] = Counter()
        self._buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self._sum = 0.0
        self._bytes: Counter[str] = Counter(dict.fromkeys(DIRECTIONS, 0))
        # Every type and outcome at 0 from the start: rate() and increase() see a series
        # only from its second sample, so one born at 1 would hide the first upload.
        types = (*IMPORT_TYPES, OTHER_TYPE)
        self._tracked: Counter[str] = Counter(dict.fromkeys(types, 0))
        self._imports: Counter[tuple[str, str]] = Counter(
            {(kind, outcome): 0 for kind in types for outcome in OUTCOMES}
        )
        self._errors: Counter[str] = Counter(dict.fromkeys(ERROR_REASONS, 0))
        self._registration_failures = 0
        self._in_flight = 0

    def started(self) -> None:
        with self._lock:
            self._in_flight += 1

    def answered(self, method: str, code: int, seconds: float) -> None:
        """One request is over: ``code`` is what the client was answered (or 499)."""
        index = bisect.bisect_left(DURATION_BUCKETS, seconds)
        with self._lock:
            self._in_flight -= 1
            self._requests[(method_label(method), str(code))] += 1
            self._buckets[index] += 1
            self._sum += seconds

    def moved(self, direction: str, count: int) -> None:
        with self._lock:
            self._bytes[direction] += count

    def upstream_error(self, reason: str) -> None:
        with self._lock:
            self._errors[reason] += 1

    def import_answered(self, kind: str, outcome: str) -> None:
        with self._lock:
            self._imports[(kind, outcome)] += 1

    def tracked(self, kind: str) -> None:
        with self._lock:
            self._tracked[kind] += 1

    def registration_failed(self) -> None:
        with self._lock:
            self._registration_failures += 1

    def snapshot(self) -> ProxySnapshot:
        with self._lock:
            return ProxySnapshot(
                requests=dict(self._requests),
                bucket_counts=tuple(self._buckets),
                duration_sum=self._sum,
                bytes=dict(self._bytes),
                tracked=dict(self._tracked),
                imports=dict(self._imports),
                upstream_errors=dict(self._errors),
                registration_failures=self._registration_failures,
                in_flight=self._in_flight,
            )
