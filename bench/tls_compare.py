"""TLS against plain HTTP for the same answer (issue 15): scrape time and exporter CPU."""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from httpload import Pki, make_pki
from procs import (
    WORK_TREE,
    ExporterProcess,
    SimulatorProcess,
    Tree,
    cpu_seconds,
    generated_ids,
)

if TYPE_CHECKING:
    # Only a type: web_load imports the exporter's package, which side_by_side.py avoids.
    from web_load import WebPlan


@dataclass
class Turns:
    """Scrape times and exporter CPU of one exporter, summed over its turns."""

    times: list[float] = field(default_factory=list)
    cpu: float = 0.0
    size: int = 0

    def take(self, exporter: ExporterProcess, scrapes: int) -> None:
        """One turn: ``scrapes`` scrapes in a row, each on a new connection."""
        before = cpu_seconds(exporter.pid)
        for _ in range(scrapes):
            answer = exporter.scrape()
            self.times.append(answer.seconds)
            self.size = len(answer.body)
        self.cpu += cpu_seconds(exporter.pid) - before

    def cpu_ms_per_scrape(self) -> float:
        return 1000 * self.cpu / len(self.times)


@contextlib.contextmanager
def tls_and_plain(
    sim: SimulatorProcess, pki: Pki, ids: list[str], logs: Path, tree: Tree = WORK_TREE
) -> Iterator[dict[str, ExporterProcess]]:
    """Two exporters of ``tree`` over the same ids, one serving TLS, one plain HTTP; each
    scraped once, as the first scrape after start renders once more than the rest."""
    label = "" if tree is WORK_TREE else f"-{tree.name}"
    with (
        ExporterProcess(
            sim,
            ids,
            8,
            logs,
            extra_args=["--web.config.file", str(pki.folder / "web-config-tls.yml")],
            client=pki.client(auth=False),
            label=f"-tls{label}",
            tree=tree,
        ) as tls,
        ExporterProcess(sim, ids, 8, logs, label=f"-plain{label}", tree=tree) as plain,
    ):
        sides = {"tls": tls, "plain": plain}
        for exporter in sides.values():
            exporter.scrape()
        yield sides


def tls_versus_plain(plan: WebPlan, results_dir: Path, logs: Path) -> dict[str, Any]:
    """The same answer (finished imports, nothing to poll) over TLS and over plain HTTP.

    Each scrape on a new connection, so TLS pays its handshake every time; the two
    exporters take turns against the machine's drift.
    """
    pki = make_pki(results_dir / "web")
    n = plan.compare_imports
    turns = {"tls": Turns(), "plain": Turns()}
    with (
        SimulatorProcess(n, "SUCCESS", 0.0, logs) as sim,
        tls_and_plain(sim, pki, generated_ids(n), logs) as sides,
    ):
        for _ in range(plan.compare_rounds):
            for side, exporter in sides.items():
                turns[side].take(exporter, plan.compare_scrapes)
    scrapes = plan.compare_rounds * plan.compare_scrapes
    result: dict[str, Any] = {
        "imports": n,
        "scrapes_each": scrapes,
        "bytes": {side: t.size for side, t in turns.items()},
    }
    for side, t in turns.items():
        result[f"{side}_median_s"] = statistics.median(t.times)
        result[f"{side}_cpu_ms_per_scrape"] = t.cpu_ms_per_scrape()
    result["time_ratio"] = result["tls_median_s"] / result["plain_median_s"]
    plain_cpu = result["plain_cpu_ms_per_scrape"]
    result["cpu_ratio"] = result["tls_cpu_ms_per_scrape"] / plain_cpu if plain_cpu else None
    return result
