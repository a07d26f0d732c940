"""The render alone, in this process, without HTTP or polling: the exporter's collector and
exposition over a fixed snapshot of finished and live imports, against prometheus_client's
generate_latest of the same registry (which reads the same families' samples).

The aggregates of issue 22 are included, as a deployment that allowlists a label has them:
``feed_name`` on every import (a few distinct values), so ``elevate_import_labels`` has a
series per import, and the finished imports counted with a duration and a queue time.

Each render after the first is of a new snapshot, as after a poll round: the live imports'
states are new, the finished ones' the same objects.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from procs import generated_ids, live_ids
from prometheus_client import CollectorRegistry, generate_latest

from elevate_import_exporter.core.model import ImportInfo
from elevate_import_exporter.core.outcomes import Finish, LeftQueue, Outcomes
from elevate_import_exporter.core.state import ImportState
from elevate_import_exporter.metrics.collector import ImportCollector
from elevate_import_exporter.metrics.exposition import render
from elevate_import_exporter.metrics.stats import RequestStats
from elevate_import_exporter.polling.poller import RoundResult, Snapshot


class _Rounds:
    """Snapshots as rounds leave them: the live imports' states replaced each time."""

    def __init__(self, finished: int, live: int) -> None:
        now = time.time()
        self._now = now
        self._finished = {
            i: ImportState(
                i, now - 7200, ImportInfo(i, "SUCCESS", "PRODUCTS", ""), now - 3600, True
            )
            for i in generated_ids(finished)
        }
        self._live = live_ids(live)
        self.next_round()

    def next_round(self) -> None:
        self._now += 15
        live = {
            i: ImportState(
                i,
                self._now - 60,
                ImportInfo(i, "IN_PROGRESS", "PRODUCTS", ""),
                self._now - 30,
                True,
                self._now,
            )
            for i in self._live
        }
        imports = self._finished | live
        self._snapshot = Snapshot(imports, RoundResult(True, 0.1, len(live), self._now))

    def snapshot(self) -> Snapshot:
        return self._snapshot

    @property
    def now(self) -> float:
        return self._now


# Distinct feeds among the imports: a feed job per type and shop, say.
FEEDS = 20


def outcomes_of(finished: list[str], live: list[str], now: float) -> Outcomes:
    """The aggregates after ``finished`` imports ended and with ``live`` ones tracked."""
    outcomes = Outcomes(("feed_name",))
    for n, import_id in enumerate([*finished, *live]):
        labels = (("feed_name", f"feed-{n % FEEDS}"),)
        outcomes.track(import_id, "PRODUCTS", labels)
    for n, import_id in enumerate(finished):
        labels = (("feed_name", f"feed-{n % FEEDS}"),)
        outcomes.left_queue(import_id, LeftQueue("PRODUCTS", labels, 5.0 + n % 300))
        finish = Finish("PRODUCTS", "SUCCESS", labels, now - 3600, 60.0 + n % 7200)
        outcomes.finished(import_id, finish)
    return outcomes


def render_alone(finished: int, live: int, repeats: int = 5) -> dict[str, Any]:
    rounds = _Rounds(finished, live)
    registry = CollectorRegistry()
    outcomes = outcomes_of(generated_ids(finished), live_ids(live), rounds.now)
    registry.register(ImportCollector(rounds, RequestStats(), outcomes=outcomes))
    first = _cpu(lambda: render(registry, "text/plain", ""))
    cpu: dict[str, list[float]] = {"text": [], "gzip": [], "generate_latest": []}
    for _ in range(repeats):
        rounds.next_round()
        cpu["text"].append(_cpu(lambda: render(registry, "text/plain", "")))
        rounds.next_round()
        cpu["gzip"].append(_cpu(lambda: render(registry, "text/plain", "gzip")))
        cpu["generate_latest"].append(_cpu(lambda: generate_latest(registry)))
    result = {f"{kind}_cpu_s": statistics.median(values) for kind, values in cpu.items()}
    result["first_cpu_s"] = first
    result["ratio"] = result["text_cpu_s"] / result["generate_latest_cpu_s"]
    return result


def _cpu(call: Any) -> float:
    started = time.process_time()
    call()
    return time.process_time() - started
