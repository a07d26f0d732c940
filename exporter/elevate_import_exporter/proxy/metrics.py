"""The import proxy's metrics: fresh families from its counters on every scrape."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from elevate_import_exporter.metrics.stats import cumulative_buckets, labelled
from elevate_import_exporter.proxy.stats import DURATION_BUCKETS, ProxySnapshot, ProxyStats


class ProxyCollector(Collector):
    def __init__(self, stats: ProxyStats) -> None:
        self._stats = stats

    def describe(self) -> Iterator[Metric]:
        yield from _families(ProxyStats().snapshot())

    def collect(self) -> Iterator[Metric]:
        yield from _families(self._stats.snapshot())


def _families(stats: ProxySnapshot) -> Iterator[Metric]:
    yield labelled(
        CounterMetricFamily(
            "elevate_import_proxy_requests",
            "Requests through the import proxy, by method (other: outside the usual ones) and "
            "the code answered: Elevate's, or the proxy's own (502 Elevate not reached, 504 no "
            "answer in time, 499 the client left first, 4xx a request refused here).",
            labels=["method", "code"],
        ),
        stats.requests,
    )
    yield _duration(stats)
    yield labelled(
        CounterMetricFamily(
            "elevate_import_proxy_bytes",
            "Body bytes forwarded by the import proxy: upload (feed job to Elevate), download "
            "(Elevate's answers back).",
            labels=["direction"],
        ),
        stats.bytes,
    )
    yield labelled(
        CounterMetricFamily(
            "elevate_import_proxy_tracked",
            "Import ids the proxy found in 202 answers and registered for tracking, by type.",
            labels=["type"],
        ),
        stats.tracked,
    )
    yield labelled(
        CounterMetricFamily(
            "elevate_import_proxy_imports",
            "Import requests through the proxy by type and outcome: accepted (202), finished "
            "(2xx; success, failure or aborted when the answer names it), refused (4xx), "
            "failed (5xx or Elevate not reached), cut (the client left first).",
            labels=["type", "outcome"],
        ),
        stats.imports,
    )
    yield labelled(
        CounterMetricFamily(
            "elevate_import_proxy_upstream_errors",
            "Requests through the proxy that Elevate refused or failed, or that did not reach it, "
            "by reason (the reasons of elevate_import_api_errors).",
            labels=["reason"],
        ),
        stats.upstream_errors,
    )
    yield CounterMetricFamily(
        "elevate_import_proxy_registration_failures",
        "Import ids from 202 answers that could not be registered (the store failed).",
        value=stats.registration_failures,
    )
    yield GaugeMetricFamily(
        "elevate_import_proxy_requests_in_flight",
        "Requests being forwarded by the import proxy now.",
        value=stats.in_flight,
    )


def _duration(stats: ProxySnapshot) -> Metric:
    family = HistogramMetricFamily(
        "elevate_import_proxy_request_duration_seconds",
        "Time from a request's head to the end of its answer through the import proxy, "
        "bodies included.",
    )
    family.add_metric(
        [], cumulative_buckets(DURATION_BUCKETS, stats.bucket_counts), stats.duration_sum
    )
    return family
