"""Simultaneous scrapes share one render per poll round (issue 15), and /-/healthy stays
quick meanwhile.

The application runs in a child process (app_child.py) that reports how many answers it
has built. Bursts of simultaneous scrapes, each burst one poll round of active ids;
/-/healthy is asked every 50 ms on a new connection throughout, as a liveness probe does.
Floor of the health latency: the same probes before the load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app_child import AppChild
from httpload import HealthProbe, latency_summary, scrape_all
from procs import SimulatorProcess, generated_ids


@dataclass
class SharedPlan:
    imports: int = 1000
    latency: float = 0.1
    concurrency: int = 32
    scrapes: int = 50
    bursts: int = 4
    health_every: float = 0.05
    idle_probes: int = 60


SHARED_QUICK = SharedPlan(bursts=2, idle_probes=30)


def shared_scrapes(plan: SharedPlan, logs: Path) -> dict[str, Any]:
    result: dict[str, Any] = {
        "imports": plan.imports,
        "latency_ms": plan.latency * 1000,
        "concurrency": plan.concurrency,
        "scrapes": plan.scrapes,
        "bursts": plan.bursts,
    }
    with (
        SimulatorProcess(plan.imports, "IN_PROGRESS", plan.latency, logs) as sim,
        AppChild.for_simulator(sim, generated_ids(plan.imports), plan.concurrency, logs) as app,
    ):
        # The first scrape of a kind also renders once to learn how long that takes.
        app.scrape()
        idle = HealthProbe(app, plan.health_every, limit=plan.idle_probes)
        idle.start()
        idle.join()
        sim.reset()
        before = app.renders()
        probe = HealthProbe(app, plan.health_every)
        probe.start()
        statuses: list[int | str] = []
        try:
            for _ in range(plan.bursts):
                statuses += [status for status, _seconds in scrape_all(app, plan.scrapes)]
        finally:
            probe.stop()
        result["renders"] = app.renders() - before
        result["requests"] = sim.requests_total()
    result["rounds"] = result["requests"] / plan.imports
    result["renders_per_round"] = result["renders"] / result["rounds"]
    result["answered_200"] = statuses.count(200)
    result["answered_503"] = statuses.count(503)
    result["other"] = [str(s) for s in statuses if s not in (200, 503)]
    result["health_idle"] = latency_summary(idle.seconds)
    result["health_load"] = latency_summary(probe.seconds)
    result["health_probes"] = len(probe.seconds) + len(probe.failures)
    result["health_failed"] = len(probe.failures)
    return result
