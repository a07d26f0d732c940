"""The custom collector: fresh metric families on every scrape, from the poller's state
(the lines of final imports are kept: lines.py)."""

from __future__ import annotations

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

from elevate_import_exporter import __version__
from elevate_import_exporter.core.outcomes import (
    DURATION_STATUSES,
    FINISHED_STATUSES,
    Histogram,
    Outcomes,
    View,
)
from elevate_import_exporter.core.state import RoundResult, Snapshot
from elevate_import_exporter.metrics.lines import (
    FinalLines,
    ImportFamily,
    LabelSeries,
    import_families,
    labels_family,
)
from elevate_import_exporter.metrics.stats import (
    LATENCY_BUCKETS,
    ApiStats,
    RequestStats,
    cumulative_buckets,
    labelled,
)


class IdCounts(Protocol):
    """What the collector reads of the tracked ids (:class:`~.sources.TrackedIds`)."""

    @property
    def refused(self) -> int: ...

    def counts(self) -> dict[str, int]: ...


class Lifecycle(Protocol):
    """What the collector reads of registrations and retirements (:class:`~.catalog.Catalog`)."""

    @property
    def registrations(self) -> Mapping[str, int]: ...

    @property
    def retired_counts(self) -> Mapping[str, int]: ...

    @property
    def skipped_rows(self) -> int: ...


class Snapshots(Protocol):
    """What the collector reads of the poller (:class:`~.poller.Poller`)."""

    def snapshot(self) -> Snapshot: ...


class ImportCollector(Collector):
    def __init__(
        self,
        poller: Snapshots,
        stats: RequestStats,
        ids: IdCounts | None = None,
        lifecycle: Lifecycle | None = None,
        outcomes: Outcomes | None = None,
    ) -> None:
        self._poller = poller
        self._stats = stats
        self._ids = ids
        self._lifecycle = lifecycle
        self._outcomes = outcomes
        # The lines of final imports, rendered once (see lines.py).
        self.final_lines = FinalLines()

    def describe(self) -> Iterator[Metric]:
        # The same families without samples: lets the registry refuse a clashing
        # collector without running a poll.
        yield from _families(Snapshot({}, None), RequestStats().snapshot(), FinalLines())
        if self._ids is not None:
            yield from _source_families(0, {})
        if self._lifecycle is not None:
            yield from _lifecycle_families({}, {}, 0)
        if self._outcomes is not None:
            yield from outcome_families(Outcomes(self._outcomes.names).view())
            yield from _label_family(self._outcomes, Snapshot({}, None))

    def collect(self) -> Iterator[Metric]:
        snapshot = self._poller.snapshot()
        yield from _families(snapshot, self._stats.snapshot(), self.final_lines)
        if self._outcomes is not None:
            yield from outcome_families(self._outcomes.view())
            yield from _label_family(self._outcomes, snapshot)
        if self._ids is not None:
            yield from _source_families(self._ids.refused, self._ids.counts())
        if self._lifecycle is not None:
            lifecycle = self._lifecycle
            yield from _lifecycle_families(
                lifecycle.registrations, lifecycle.retired_counts, lifecycle.skipped_rows
            )


def _families(snapshot: Snapshot, api: ApiStats, final: FinalLines) -> Iterator[Metric]:
    yield from import_families(snapshot.imports, final)
    yield _failure_family(snapshot)
    yield from _round_families(snapshot.last_round, len(snapshot.imports))
    yield from _api_families(api)
    yield _build_info()


def outcome_families(view: View) -> Iterator[Metric]:
    """The aggregates that outlive retention (issue 22): every final status at 0 for each
    type (and allowlisted values) seen, so that increase() sees the first import."""
    names = list(view.names)
    finished = CounterMetricFamily(
        "elevate_import_finished",
        "Imports that reached a final status (NOT_FOUND: retired as such), counted once per "
        "import, when the store first kept the end.",
        labels=["type", "status", *names],
    )
    durations = HistogramMetricFamily(
        "elevate_import_duration_seconds",
        "Seconds from the start of an import (the proxy's 202 or a registration's "
        "accepted_at, else first seen) to the first poll that saw its final status.",
        labels=["type", "status", *names],
    )
    queues = HistogramMetricFamily(
        "elevate_import_queue_seconds",
        "Seconds from the start of an import to the first poll that saw it leave WAITING/BLOCKED.",
        labels=["type", *names],
    )
    empty_durations, empty_queues = Histogram(view.duration_buckets), Histogram(view.queue_buckets)
    for kind, values in view.combos:
        for status in FINISHED_STATUSES:
            key = (kind, status, values)
            finished.add_metric([kind, status, *values], float(view.finished.get(key, 0)))
        for status in DURATION_STATUSES:
            histogram = view.durations.get((kind, status, values), empty_durations)
            durations.add_metric([kind, status, *values], histogram.cumulative(), histogram.sum)
        histogram = view.queues.get((kind, values), empty_queues)
        queues.add_metric([kind, *values], histogram.cumulative(), histogram.sum)
    last = GaugeMetricFamily(
        "elevate_import_last_final_timestamp_seconds",
        "When the last import of the type reached the status (Unix seconds); kept across "
        "restarts and retention.",
        labels=["type", "status", *names],
    )
    for (kind, status, values), at in sorted(view.last_final.items()):
        last.add_metric([kind, status, *values], at)
    overflow = labelled(
        CounterMetricFamily(
            "elevate_import_metric_label_overflow",
            "Imports whose value of the allowlisted label was published as 'other' "
            "(past --imports.metric-labels-max-values).",
            labels=["label"],
        ),
        view.overflow,
    )
    yield from (finished, durations, queues, last, overflow)


def _label_family(outcomes: Outcomes, snapshot: Snapshot) -> Iterator[Metric]:
    names, values_of, blank = outcomes.labels_of()
    if not names:  # only worth its series when there are labels to join
        return
    family = labels_family(names)
    yield ImportFamily(family, LabelSeries(family, names, snapshot.imports, values_of, blank))


def _failure_family(snapshot: Snapshot) -> Metric:
    # Only the ids without an answer: few while Elevate answers, and what a per-id alert
    # needs to say why.
    family = GaugeMetricFamily(
        "elevate_import_poll_failure",
        "1 for each id whose latest poll round got no valid answer, by why: an error reason "
        "of elevate_import_api_errors_total, deadline, not_sent or retry_after.",
        labels=["id", "reason"],
    )
    for import_id, state in snapshot.imports.items():
        if state.failure is not None and not state.poll_success:
            family.add_metric([import_id, state.failure], 1.0)
    return family


def _round_families(last_round: RoundResult | None, tracked: int) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "elevate_import_tracked_imports", "Number of import ids tracked.", value=tracked
    )
    up = GaugeMetricFamily(
        "elevate_import_up",
        "1 if this scrape's poll got valid answers for every id it queried, else 0.",
    )
    reachable = GaugeMetricFamily(
        "elevate_import_api_reachable",
        "1 if the latest poll round got a valid answer for at least one id (with nothing to "
        "ask: the latest probe of the key did), else 0; what ElevateApiUnreachable watches.",
    )
    duration = GaugeMetricFamily(
        "elevate_import_scrape_duration_seconds", "How long this scrape's poll round took."
    )
    if last_round is not None:
        up.add_metric([], 1.0 if last_round.up else 0.0)
        reachable.add_metric([], 1.0 if last_round.reachable else 0.0)
        duration.add_metric([], last_round.seconds)
    yield from (up, reachable, duration)


def _source_families(refused: int, counts: Mapping[str, int]) -> Iterator[Metric]:
    yield labelled(
        GaugeMetricFamily(
            "elevate_import_source_imports",
            "Number of import ids tracked, by the source they come from "
            "(an id in several sources counts for the first).",
            labels=["source"],
        ),
        counts,
    )
    yield GaugeMetricFamily(
        "elevate_import_refused_imports",
        "Number of import ids not tracked because --imports.max-tracked was reached.",
        value=refused,
    )


def _lifecycle_families(
    registrations: Mapping[str, int], retired: Mapping[str, int], skipped: int
) -> Iterator[Metric]:
    yield labelled(
        CounterMetricFamily(
            "elevate_import_registrations",
            "Registrations over /api/v1/imports and by the proxy: ids created or known "
            "already, and requests refused as invalid, disabled or failed (the store could "
            "not take them).",
            labels=["result"],
        ),
        registrations,
    )
    yield labelled(
        CounterMetricFamily(
            "elevate_import_retired",
            "Imports retired (their series left the metrics) after --imports.retention, by "
            "the status they had.",
            labels=["status"],
        ),
        retired,
    )
    yield GaugeMetricFamily(
        "elevate_import_store_skipped_rows",
        "Damaged rows of the store skipped at start-up; they stay in the file untouched, and "
        "the log names each.",
        value=skipped,
    )


def _api_families(api: ApiStats) -> Iterator[Metric]:
    requests = labelled(
        CounterMetricFamily(
            "elevate_import_api_requests_total",
            "Status requests sent to Elevate, by HTTP status code, 'timeout' or "
            "'connection_error'.",
            labels=["code"],
        ),
        api.requests,
    )
    errors = labelled(
        CounterMetricFamily(
            "elevate_import_api_errors",
            "Failed status requests to Elevate, by reason.",
            labels=["reason"],
        ),
        api.errors,
    )
    latency = HistogramMetricFamily(
        "elevate_import_api_request_duration_seconds", "Latency of status requests to Elevate."
    )
    buckets = cumulative_buckets(LATENCY_BUCKETS, api.bucket_counts)
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
