"""Registration over HTTP (issue 15): single POSTs per second over one keep-alive
connection, and the time to commit a batch of 1,000 ids.

The exporter runs with ``--web.enable-registration`` and a store file under
bench/results. Floor: the same writes through ``Store.register`` alone, in this process,
on a file in the same folder: one committed transaction per registration (synced, as the
exporter's store always is), the work no HTTP server can skip. The two take turns.
"""

from __future__ import annotations

import http.client
import json
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from procs import ExporterProcess, SimulatorProcess

from elevate_import_exporter.core.records import ImportRecord
from elevate_import_exporter.lifecycle.store import Store

FIRST_ID = 9_000_000_000_000_000_000


@dataclass
class RegistrationPlan:
    singles: int = 300
    batches: int = 10
    batch: int = 1000
    rounds: int = 2  # exporter and floor take turns


REGISTRATION_QUICK = RegistrationPlan(singles=150, batches=5)


class Ids:
    def __init__(self) -> None:
        self.next = FIRST_ID

    def take(self, n: int) -> list[str]:
        self.next += n
        return [str(i) for i in range(self.next - n, self.next)]


def registration(plan: RegistrationPlan, work: Path, logs: Path) -> dict[str, Any]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ids = Ids()
    seconds: dict[str, list[float]] = {"singles": [], "floor_singles": []}
    batches: dict[str, list[float]] = {"exporter": [], "floor": []}
    per_round = plan.singles // plan.rounds
    try:
        floor = Store.open(work / "floor.db")
        with (
            SimulatorProcess(0, "IN_PROGRESS", 0.0, logs) as sim,
            ExporterProcess(
                sim,
                [],
                8,
                logs,
                extra_args=[
                    "--web.enable-registration",
                    "--storage.path",
                    str(work / "exporter.db"),
                    "--imports.max-tracked",
                    "200000",
                ],
                label="-registration",
            ) as exporter,
        ):
            conn = http.client.HTTPConnection("127.0.0.1", exporter.port, timeout=60)
            try:
                for _ in range(plan.rounds):
                    seconds["singles"].append(_singles(conn, ids.take(per_round)))
                    seconds["floor_singles"].append(_floor_singles(floor, ids.take(per_round)))
                for _ in range(plan.batches):
                    batches["exporter"].append(_post(conn, ids.take(plan.batch)))
                    batches["floor"].append(_floor_batch(floor, ids.take(plan.batch)))
            finally:
                conn.close()
        floor.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    singles = per_round * plan.rounds
    result: dict[str, Any] = {
        "singles": singles,
        "posts_per_s": singles / sum(seconds["singles"]),
        "floor_commits_per_s": singles / sum(seconds["floor_singles"]),
        "batch": plan.batch,
        "batches": plan.batches,
        "batch_s": statistics.median(batches["exporter"]),
        "batch_max_s": max(batches["exporter"]),
        "floor_batch_s": statistics.median(batches["floor"]),
    }
    result["singles_ratio"] = result["posts_per_s"] / result["floor_commits_per_s"]
    result["batch_ratio"] = result["batch_s"] / result["floor_batch_s"]
    return result


def _singles(conn: http.client.HTTPConnection, ids: list[str]) -> float:
    started = time.perf_counter()
    for import_id in ids:
        _post(conn, {"id": import_id})
    return time.perf_counter() - started


def _post(conn: http.client.HTTPConnection, what: list[str] | dict[str, str]) -> float:
    """One POST /api/v1/imports on the kept-alive connection; its seconds."""
    document: Any = [{"id": i} for i in what] if isinstance(what, list) else what
    body = json.dumps(document).encode()
    started = time.perf_counter()
    conn.request("POST", "/api/v1/imports", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    answer = response.read()
    if response.status != 201:
        raise RuntimeError(f"a registration answered {response.status}: {answer[:200]!r}")
    return time.perf_counter() - started


def _floor_singles(store: Store, ids: list[str]) -> float:
    started = time.perf_counter()
    for import_id in ids:
        store.register([_record(import_id)])
    return time.perf_counter() - started


def _floor_batch(store: Store, ids: list[str]) -> float:
    started = time.perf_counter()
    store.register([_record(i) for i in ids])
    return time.perf_counter() - started


def _record(import_id: str) -> ImportRecord:
    # As the catalog makes it for a registration.
    return ImportRecord(import_id, "api", first_seen=time.time())
