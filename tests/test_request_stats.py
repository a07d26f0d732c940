"""The request counters and latency histogram that the client feeds from its threads."""

from __future__ import annotations

import threading

from elevate_import_exporter.core.model import RequestRecord as Request
from elevate_import_exporter.metrics.stats import RequestStats
from tests.support import ERROR_REASONS

# The Prometheus client library's default buckets (Histogram.DEFAULT_BUCKETS without +Inf).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


def test_a_latency_equal_to_a_bucket_bound_lands_in_that_bucket_and_a_huge_one_in_inf() -> None:
    stats = RequestStats()
    for seconds in (0.005, 0.0051, 10.0, 60.0):
        stats.record(Request("200", seconds, None))
    counts = stats.snapshot().bucket_counts
    assert len(counts) == len(BUCKETS) + 1
    assert counts[BUCKETS.index(0.005)] == 1
    assert counts[BUCKETS.index(0.01)] == 1
    assert counts[BUCKETS.index(10.0)] == 1
    assert counts[-1] == 1
    assert sum(counts) == 4


def test_every_error_reason_is_counted_from_zero_and_codes_only_once_seen() -> None:
    snapshot = RequestStats().snapshot()
    assert snapshot.errors == dict.fromkeys(ERROR_REASONS, 0)
    assert snapshot.requests == {}


def test_counts_from_many_threads_add_up() -> None:
    stats = RequestStats()

    def record() -> None:
        for _ in range(1000):
            stats.record(Request("503", 0.01, "server_error"))

    threads = [threading.Thread(target=record) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    snapshot = stats.snapshot()
    assert snapshot.requests == {"503": 8000}
    assert snapshot.errors["server_error"] == 8000
    assert sum(snapshot.bucket_counts) == 8000
    assert abs(snapshot.latency_sum - 80.0) < 1e-6
