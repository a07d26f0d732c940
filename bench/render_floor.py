"""The floor for a scrape of finished imports: ``prometheus_client`` alone rendering them.

The registry holds plain Gauges with the labels and values the exporter publishes
for the same imports, built beforehand; only ``generate_latest`` is timed. For
reference it also times a registry whose collector hands out the same metric
families already filled in: the formatting alone, a floor below any collector.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

STATUSES = ("NOT_FOUND", "WAITING", "BLOCKED", "IN_PROGRESS", "SUCCESS", "FAILURE", "ABORTED")


def registry_of_finished(
    ids: list[str], status: str = "SUCCESS", live: list[str] | None = None
) -> CollectorRegistry:
    """Gauges of ``ids`` with ``status``, and of ``live`` ids IN_PROGRESS."""
    registry = CollectorRegistry()
    prefix = "elevate_import_"
    status_gauge = Gauge(prefix + "status", "s", ["id", "type", "status"], registry=registry)
    info = Gauge(prefix + "info", "i", ["id", "type", "message"], registry=registry)
    first_seen = Gauge(prefix + "first_seen_timestamp_seconds", "f", ["id"], registry=registry)
    changed = Gauge(prefix + "last_status_change_timestamp_seconds", "c", ["id"], registry=registry)
    success = Gauge(prefix + "poll_success", "p", ["id"], registry=registry)
    now = time.time()
    current = dict.fromkeys(ids, status) | dict.fromkeys(live or (), "IN_PROGRESS")
    for import_id, held in current.items():
        for documented in STATUSES:
            status_gauge.labels(import_id, "PRODUCTS", documented).set(
                1.0 if documented == held else 0.0
            )
        info.labels(import_id, "PRODUCTS", "").set(1.0)
        first_seen.labels(import_id).set(now)
        changed.labels(import_id).set(now + 0.25)
        success.labels(import_id).set(1.0)
    return registry


class _Prebuilt(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def registry_of_families(source: CollectorRegistry) -> CollectorRegistry:
    """A registry that hands out ``source``'s families as collected once, already filled."""
    registry = CollectorRegistry()
    registry.register(_Prebuilt(list(source.collect())))
    return registry


def render_once(registry: CollectorRegistry) -> tuple[float, float, int]:
    """Seconds and CPU seconds of one ``generate_latest``, and the size of its output."""
    started, cpu = time.perf_counter(), time.process_time()
    body = generate_latest(registry)
    return time.perf_counter() - started, time.process_time() - cpu, len(body)


def main() -> None:
    """Build the registries, then render once per line read from stdin, one JSON line each.

    bench.py alternates these renderings with scrapes of the exporter, so that a
    machine busy with other work at one moment slows both sides alike.
    """
    import argparse
    import json
    import sys

    from procs import generated_ids, live_ids

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--imports", type=int, required=True)
    parser.add_argument("--live", type=int, default=0)
    args = parser.parse_args()
    gauges = registry_of_finished(generated_ids(args.imports), live=live_ids(args.live))
    families = registry_of_families(gauges)
    generate_latest(gauges)  # warm-up, as the exporter's timed scrapes follow earlier ones
    print(json.dumps({"ready": True}), flush=True)
    for _line in sys.stdin:
        seconds, cpu, size = render_once(gauges)
        formatting, formatting_cpu, _ = render_once(families)
        answer = {
            "seconds": seconds,
            "cpu_seconds": cpu,
            "bytes": size,
            "formatting_seconds": formatting,
            "formatting_cpu_seconds": formatting_cpu,
        }
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
