"""The render alone, in this process, without HTTP or polling: the exporter's collector and
exposition over a fixed snapshot of finished and live imports, against prometheus_client's
generate_latest of the same registry (which reads the same families' samples).

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


def render_alone(finished: int, live: int, repeats: int = 5) -> dict[str, Any]:
    rounds = _Rounds(finished, live)
    registry = CollectorRegistry()
    registry.register(ImportCollector(rounds, RequestStats()))
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
