"""The custom collector: fresh metric families on every scrape, from the poller's state."""

from __future__ import annotations

import math
import platform
from collections.abc import Iterator, Mapping
from typing import Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from elevate_import_exporter import __version__
from elevate_import_exporter.model import DOCUMENTED_STATUSES
from elevate_import_exporter.poller import ImportState, Poller, RoundResult, Snapshot
from elevate_import_exporter.stats import LATENCY_BUCKETS, ApiStats, RequestStats


class IdCounts(Protocol):
    """What the collector reads of the tracked ids (:class:`~.sources.TrackedIds`)."""

    @property
    def refused(self) -> int: ...

    def counts(self) -> dict[str, int]: ...


class ImportCollector(Collector):
    def __init__(self, poller: Poller, stats: RequestStats, ids: IdCounts | None = None) -> None:
        self._poller = poller
        self._stats = stats
        self._ids = ids

    def describe(self) -> Iterator[Metric]:
        # The same families without samples: lets the registry refuse a clashing
        # collector without running a poll.
        yield from _families(Snapshot({}, None), RequestStats().snapshot())
        if self._ids is not None:
            yield from _source_families(0, {})

    def collect(self) -> Iterator[Metric]:
        yield from _families(self._poller.snapshot(), self._stats.snapshot())
        if self._ids is not None:
            yield from _source_families(self._ids.refused, self._ids.counts())


def _families(snapshot: Snapshot, api: ApiStats) -> Iterator[Metric]:
    yield from _import_families(snapshot.imports)
    yield from _round_families(snapshot.last_round, len(snapshot.imports))
    yield from _api_families(api)
    yield _build_info()


def _import_families(imports: Mapping[str, ImportState]) -> Iterator[Metric]:
    status = GaugeMetricFamily(
        "elevate_import_status",
        "Status of the import as the API reports it: 1 for the current status, "
        "0 for the other documented ones.",
        labels=["id", "type", "status"],
    )
    info = GaugeMetricFamily(
        "elevate_import_info",
        "Always 1; the type and the API's last message (at most 200 characters).",
        labels=["id", "type", "message"],
    )
    first_seen = GaugeMetricFamily(
        "elevate_import_first_seen_timestamp_seconds",
        "When the exporter began tracking the import id.",
        labels=["id"],
    )
    last_change = GaugeMetricFamily(
        "elevate_import_last_status_change_timestamp_seconds",
        "When the exporter first saw the import's current status.",
        labels=["id"],
    )
    poll_success = GaugeMetricFamily(
        "elevate_import_poll_success",
        "1 if the latest status query for the id returned valid import information "
        "(a final status held from earlier counts), else 0.",
        labels=["id"],
    )
    # Samples are built directly rather than through add_metric: with thousands of
    # ids this loop is most of a scrape's cost, and add_metric zips label dicts anew
    # for every sample.
    for import_id, state in imports.items():
        first_seen.samples.append(Sample(first_seen.name, {"id": import_id}, state.first_seen))
        poll_success.samples.append(
            Sample(poll_success.name, {"id": import_id}, 1.0 if state.poll_success else 0.0)
        )
        current = state.info
        if current is None:
            continue
        kind = current.type
        for documented in DOCUMENTED_STATUSES:
            status.samples.append(
                Sample(
                    status.name,
                    {"id": import_id, "type": kind, "status": documented},
                    1.0 if documented == current.status else 0.0,
                )
            )
        if current.status not in DOCUMENTED_STATUSES:
            status.samples.append(
                Sample(status.name, {"id": import_id, "type": kind, "status": current.status}, 1.0)
            )
        info.samples.append(
            Sample(info.name, {"id": import_id, "type": kind, "message": current.message}, 1.0)
        )
        if state.status_since is not None:
            last_change.samples.append(
                Sample(last_change.name, {"id": import_id}, state.status_since)
            )
    yield from (status, info, first_seen, last_change, poll_success)


def _round_families(last_round: RoundResult | None, tracked: int) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "elevate_import_tracked_imports", "Number of import ids tracked.", value=tracked
    )
    up = GaugeMetricFamily(
        "elevate_import_up",
        "1 if this scrape's poll got valid answers for every id it queried, else 0.",
    )
    duration = GaugeMetricFamily(
        "elevate_import_scrape_duration_seconds", "How long this scrape's poll round took."
    )
    if last_round is not None:
        up.add_metric([], 1.0 if last_round.up else 0.0)
        duration.add_metric([], last_round.seconds)
    yield from (up, duration)


def _source_families(refused: int, counts: Mapping[str, int]) -> Iterator[Metric]:
    by_source = GaugeMetricFamily(
        "elevate_import_source_imports",
        "Number of import ids tracked, by the source they come from "
        "(an id in several sources counts for the first).",
        labels=["source"],
    )
    for source, count in counts.items():
        by_source.add_metric([source], count)
    yield by_source
    yield GaugeMetricFamily(
        "elevate_import_refused_imports",
        "Number of import ids not tracked because --imports.max-tracked was reached.",
        value=refused,
    )


def _api_families(api: ApiStats) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "elevate_import_api_requests_total",
        "Status requests sent to Elevate, by HTTP status code, 'timeout' or 'connection_error'.",
        labels=["code"],
    )
    for code, count in sorted(api.requests.items()):
        requests.add_metric([code], count)
    errors = CounterMetricFamily(
        "elevate_import_api_errors",
        "Failed status requests to Elevate, by reason.",
        labels=["reason"],
    )
    for reason, count in sorted(api.errors.items()):
        errors.add_metric([reason], count)
    latency = HistogramMetricFamily(
        "elevate_import_api_request_duration_seconds", "Latency of status requests to Elevate."
    )
    cumulative = 0
    buckets: list[tuple[str, float]] = []
    for bound, count in zip((*LATENCY_BUCKETS, math.inf), api.bucket_counts, strict=True):
        cumulative += count
        buckets.append(("+Inf" if math.isinf(bound) else repr(bound), cumulative))
    latency.add_metric([], buckets, api.latency_sum)
    yield from (requests, errors, latency)


def _build_info() -> Metric:
    family = GaugeMetricFamily(
        "elevate_import_exporter_build_info",
        "Always 1; the exporter's version and the Python it runs on.",
        labels=["version", "python_version"],
    )
    family.add_metric([__version__, platform.python_version()], 1.0)
    return family
