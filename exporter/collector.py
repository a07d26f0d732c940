"""The custom collector: fresh metric families on every scrape, from the poller's state."""

from __future__ import annotations

import platform
from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from exporter import __version__
from exporter.client import DOCUMENTED_STATUSES
from exporter.poller import LATENCY_BUCKETS, Poller, Snapshot

PREFIX = "elevate_import_"


class ImportCollector(Collector):
    def __init__(self, poller: Poller) -> None:
        self._poller = poller

    def describe(self) -> Iterator[Metric]:
        # Names only, so the registry can refuse a clashing collector without a poll.
        yield from _families()

    def collect(self) -> Iterator[Metric]:
        snapshot = self._poller.snapshot()
        families = _families()
        _fill(families, snapshot)
        yield from families


def _families() -> list[Metric]:
    return [
        GaugeMetricFamily(
            PREFIX + "status",
            "Status of the import as the API reports it: 1 for the current status, "
            "0 for the other documented ones.",
            labels=["id", "type", "status"],
        ),
        GaugeMetricFamily(
            PREFIX + "info",
            "Always 1; the type and the API's last message (at most 200 characters).",
            labels=["id", "type", "message"],
        ),
        GaugeMetricFamily(
            PREFIX + "first_seen_timestamp_seconds",
            "When the exporter began tracking the import id.",
            labels=["id"],
        ),
        GaugeMetricFamily(
            PREFIX + "last_status_change_timestamp_seconds",
            "When the exporter first saw the import's current status.",
            labels=["id"],
        ),
        GaugeMetricFamily(
            PREFIX + "poll_success",
            "1 if the latest status query for the id returned valid import information "
            "(a final status held from earlier counts), else 0.",
            labels=["id"],
        ),
        GaugeMetricFamily(PREFIX + "tracked_imports", "Number of import ids tracked."),
        GaugeMetricFamily(
            PREFIX + "up",
            "1 if this scrape's poll got valid answers for every id it queried, else 0.",
        ),
        GaugeMetricFamily(
            PREFIX + "scrape_duration_seconds", "How long this scrape's poll round took."
        ),
        CounterMetricFamily(
            PREFIX + "api_requests",
            "Status requests sent to Elevate, by HTTP status code, 'timeout' "
            "or 'connection_error'.",
            labels=["code"],
        ),
        CounterMetricFamily(
            PREFIX + "api_errors",
            "Failed status requests to Elevate, by reason.",
            labels=["reason"],
        ),
        HistogramMetricFamily(
            PREFIX + "api_request_duration_seconds",
            "Latency of status requests to Elevate.",
        ),
        GaugeMetricFamily(
            PREFIX + "exporter_build_info",
            "Always 1; the exporter's version and the Python it runs on.",
            labels=["version", "python_version"],
        ),
    ]


def _fill(families: list[Metric], snapshot: Snapshot) -> None:
    (status, info, first_seen, last_change, poll_success, tracked, up, duration) = families[:8]
    requests, errors, latency, build_info = families[8:]

    # Samples are built directly rather than through add_metric: with thousands of
    # ids this loop is most of a scrape's cost, and add_metric zips label dicts anew
    # for every sample.
    status_samples = status.samples
    status_name = status.name
    for import_id, state in snapshot.imports.items():
        first_seen.samples.append(Sample(first_seen.name, {"id": import_id}, state.first_seen))
        poll_success.samples.append(
            Sample(poll_success.name, {"id": import_id}, 1.0 if state.poll_success else 0.0)
        )
        current = state.info
        if current is None:
            continue
        kind = current.type
        for documented in DOCUMENTED_STATUSES:
            status_samples.append(
                Sample(
                    status_name,
                    {"id": import_id, "type": kind, "status": documented},
                    1.0 if documented == current.status else 0.0,
                )
            )
        if current.status not in DOCUMENTED_STATUSES:
            status_samples.append(
                Sample(status_name, {"id": import_id, "type": kind, "status": current.status}, 1.0)
            )
        info.samples.append(
            Sample(info.name, {"id": import_id, "type": kind, "message": current.message}, 1.0)
        )
        if state.status_since is not None:
            last_change.samples.append(
                Sample(last_change.name, {"id": import_id}, state.status_since)
            )

    tracked.samples.append(Sample(tracked.name, {}, float(len(snapshot.imports))))
    last_round = snapshot.last_round
    if last_round is not None:
        up.samples.append(Sample(up.name, {}, 1.0 if last_round.up else 0.0))
        duration.samples.append(Sample(duration.name, {}, last_round.seconds))

    api = snapshot.api
    assert isinstance(requests, CounterMetricFamily)
    assert isinstance(errors, CounterMetricFamily)
    for code, count in sorted(api.requests.items()):
        requests.add_metric([code], count)
    for reason, count in sorted(api.errors.items()):
        errors.add_metric([reason], count)

    assert isinstance(latency, HistogramMetricFamily)
    cumulative = 0
    buckets: list[tuple[str, float]] = []
    for bound, count in zip((*LATENCY_BUCKETS, float("inf")), api.bucket_counts, strict=True):
        cumulative += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
    latency.add_metric([], buckets, api.latency_sum)

    build_info.samples.append(
        Sample(
            build_info.name,
            {"version": __version__, "python_version": platform.python_version()},
            1.0,
        )
    )
