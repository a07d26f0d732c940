"""TLS against plain HTTP for the same answer (issue 15): scrape time and exporter CPU."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from procs import ExporterProcess, SimulatorProcess, cpu_seconds, generated_ids
from web_load import WebPlan, make_pki


def tls_versus_plain(plan: WebPlan, results_dir: Path, logs: Path) -> dict[str, Any]:
    """The same answer (finished imports, nothing to poll) over TLS and over plain HTTP.

    Each scrape on a new connection, so TLS pays its handshake every time; the two
    exporters take turns against the machine's drift.
    """
    pki = make_pki(results_dir / "web")
    n = plan.compare_imports
    ids = generated_ids(n)
    times: dict[str, list[float]] = {"tls": [], "plain": []}
    cpu: dict[str, float] = {"tls": 0.0, "plain": 0.0}
    sizes: dict[str, int] = {}
    with (
        SimulatorProcess(n, "SUCCESS", 0.0, logs) as sim,
        ExporterProcess(
            sim,
            ids,
            8,
            logs,
            extra_args=["--web.config.file", str(pki.folder / "web-config-tls.yml")],
            client=pki.client(auth=False),
            label="-tls",
        ) as tls,
        ExporterProcess(sim, ids, 8, logs) as plain,
    ):
        sides = {"tls": tls, "plain": plain}
        for exporter in sides.values():
            exporter.scrape()  # the first scrape after start renders once more than the rest
        for _ in range(plan.compare_rounds):
            for side, exporter in sides.items():
                before = cpu_seconds(exporter.pid)
                for _ in range(plan.compare_scrapes):
                    answer = exporter.scrape()
                    times[side].append(answer.seconds)
                    sizes[side] = len(answer.body)
                cpu[side] += cpu_seconds(exporter.pid) - before
    scrapes = plan.compare_rounds * plan.compare_scrapes
    result: dict[str, Any] = {"imports": n, "scrapes_each": scrapes, "bytes": sizes}
    for side in sides:
        result[f"{side}_median_s"] = statistics.median(times[side])
        result[f"{side}_cpu_ms_per_scrape"] = 1000 * cpu[side] / scrapes
    result["time_ratio"] = result["tls_median_s"] / result["plain_median_s"]
    plain_cpu = result["plain_cpu_ms_per_scrape"]
    result["cpu_ratio"] = result["tls_cpu_ms_per_scrape"] / plain_cpu if plain_cpu else None
    return result
