"""100,000 tracked imports (issue 15): the restart with them in the store, the memory, and
a scrape of them all within its timeout.

The store is filled through ``Store`` directly: most rows final (never asked again), a
share live (the simulator answers IN_PROGRESS). The exporter then starts on it, as after
a restart, with ``--imports.max-tracked`` raised; it is scraped as Prometheus scrapes,
with gzip and a 10 s timeout, then once more without gzip. Floor: the same start and
scrapes on a store of the live rows alone.
"""

from __future__ import annotations

import gzip
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from procs import ExporterProcess, SimulatorProcess, generated_ids, is_up, status_kib

from elevate_import_exporter.core.records import ImportRecord
from elevate_import_exporter.lifecycle.store import Store

FILL_BATCH = 10_000


@dataclass
class LargePlan:
    rows: int = 100_000
    live: int = 1_000
    max_tracked: int = 200_000
    scrape_timeout: float = 10.0


LARGE_QUICK = LargePlan()


def fill(path: Path, ids: list[str], live: int, now: float) -> None:
    """Rows for ``ids``: the first ``live`` never answered yet, the rest final an hour ago."""
    records = [_record(import_id, n < live, now) for n, import_id in enumerate(ids)]
    store = Store.open(path)
    try:
        for start in range(0, len(records), FILL_BATCH):
            store.register(records[start : start + FILL_BATCH])
    finally:
        store.close()


def _record(import_id: str, live: bool, now: float) -> ImportRecord:
    if live:
        return ImportRecord(import_id, "api", first_seen=now - 7200, type="PRODUCTS")
    done = now - 3600
    return ImportRecord(
        import_id,
        "api",
        first_seen=now - 7200,
        type="PRODUCTS",
        status="SUCCESS",
        message="",
        status_since=done,
        last_answer=done,
        final_at=done,
    )


def large_store(plan: LargePlan, work: Path, logs: Path) -> dict[str, Any]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ids = generated_ids(plan.rows)
    now = time.time()
    started = time.perf_counter()
    fill(work / "floor.db", ids[: plan.live], plan.live, now)
    fill(work / "large.db", ids, plan.live, now)
    result: dict[str, Any] = {
        "rows": plan.rows,
        "live": plan.live,
        "max_tracked": plan.max_tracked,
        "scrape_timeout_s": plan.scrape_timeout,
        "fill_s": time.perf_counter() - started,
    }
    try:
        with SimulatorProcess(plan.live, "IN_PROGRESS", 0.0, logs) as sim:
            result["floor"] = _start_and_scrape(plan, sim, work / "floor.db", logs)
            result["large"] = _start_and_scrape(plan, sim, work / "large.db", logs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def _start_and_scrape(
    plan: LargePlan, sim: SimulatorProcess, store: Path, logs: Path
) -> dict[str, Any]:
    started = time.perf_counter()
    with ExporterProcess(
        sim,
        [],
        8,
        logs,
        extra_args=[
            "--storage.path",
            str(store),
            "--imports.max-tracked",
            str(plan.max_tracked),
        ],
        label=f"-{store.stem}",
    ) as exporter:
        out: dict[str, Any] = {"ready_s": time.perf_counter() - started}
        out["rss_ready_mb"] = status_kib(exporter.pid, "VmRSS") / 1024
        headers = {
            "X-Prometheus-Scrape-Timeout-Seconds": f"{plan.scrape_timeout:g}",
            "Accept": "text/plain",
            "Accept-Encoding": "gzip",
        }
        answer = exporter.client.get(exporter.port, "/metrics", headers, timeout=120)
        body = gzip.decompress(answer.body)
        out["gzip_scrape_s"] = answer.seconds
        out["gzip_status"] = answer.status
        out["gzip_bytes"] = len(answer.body)
        out["text_bytes"] = len(body)
        out["up"] = is_up(body)
        out["series"] = body.count(b"\n") - body.count(b"\n#")
        out["peak_rss_gzip_mb"] = status_kib(exporter.pid, "VmHWM") / 1024
        plain = exporter.scrape(plan.scrape_timeout)
        out["plain_scrape_s"] = plain.seconds
        out["peak_rss_plain_mb"] = status_kib(exporter.pid, "VmHWM") / 1024
    return out
