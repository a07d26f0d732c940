"""Benchmark of the exporter against its floors: scrape time, CPU, API load, memory.

Starts ``python -m elevate_import_exporter simulate`` and ``... run`` as child
processes on loopback ports, scrapes the exporter as Prometheus would, prints a
table with PASS/FAIL per target of issues 5, 10 and 13, and issue 15's table of figures
against their floors, and writes bench/results/latest.json and latest.md. ``make bench``
runs it (about 8 minutes on 2 cores); ``--quick`` runs a smaller sweep (about 3
minutes); ``--only PART`` runs some parts only: ``finished`` (10,000 finished and 100
live ids, about 40 s), ``shared`` (simultaneous scrapes: renders and /-/healthy,
shared_scrapes.py, about 30 s), ``large`` (100,000 tracked ids and a restart,
large_store.py, about 20 s), ``registration`` (registration_bench.py, about 10 s),
``web`` (about 25 s: the HTTP side under load, web_load.py, and TLS against plain HTTP,
tls_compare.py), ``proxy`` (about 30 s: the import proxy, proxy_bench.py).
The exit status is 1 if a target that was measured is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from figures import details_section, figure_rows, figures_section
from large_store import LARGE_QUICK, LargePlan, large_store
from procs import (
    API_KEY,
    REPO,
    ExporterProcess,
    SimulatorProcess,
    Tree,
    cpu_seconds,
    generated_ids,
    is_up,
    live_ids,
    status_kib,
)
from proxy_bench import PROXY_QUICK, ProxyPlan, proxy_bench, proxy_section, proxy_targets
from registration_bench import REGISTRATION_QUICK, RegistrationPlan, registration
from render_alone import render_alone
from shared_scrapes import SHARED_QUICK, SharedPlan, shared_scrapes
from side_by_side import export_tree, short_commit
from tls_compare import tls_versus_plain
from web_load import WEB_QUICK, WebPlan, web_load
from web_report import tls_section, web_section, web_targets

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LOGS = RESULTS / "logs"

# Prometheus sends its scrape timeout; the exporter ends its round half a second
# earlier. 30 s lets every round of the sweep finish, except those whose bound is
# longer: they get a timeout of twice the bound so the deadline never cuts them short.
SCRAPE_TIMEOUT = 30.0
# Cases with a bound up to WARMUP_BOUND get an unmeasured warm-up scrape first and
# short_repeats scrapes; up to LONG_BOUND, medium_repeats scrapes; longer ones one.
# The warm-up only opens connections and starts threads: tens of milliseconds at
# most, which matter next to a short bound only.
WARMUP_BOUND = 4.0
LONG_BOUND = 15.0

# Targets of issue 5 (the CPU ratio's from issue 25).
SCRAPE_RATIO_LIMIT = 1.15
CPU_RATIO_LIMIT = 1.1
RENDER_RATIO_LIMIT = 1.25
RSS_LIMIT_MB = 150.0

PARTS = (
    "scrape",
    "cpu",
    "finished",
    "concurrent",
    "shared",
    "large",
    "registration",
    "web",
    "proxy",
)


@dataclass
class Plan:
    sizes: tuple[int, ...] = (10, 100, 1000)
    concurrencies: tuple[int, ...] = (1, 8, 32)
    latencies: tuple[float, ...] = (0.05, 0.1)
    # Cases whose bound is longer are skipped: N=1000 C=1 at 100 ms (100 s) would take a
    # fifth of the run and tells nothing N=1000 C=1 at 50 ms does not.
    max_bound: float = 60.0
    short_repeats: int = 7
    medium_repeats: int = 3
    long_repeats: int = 1
    cpu_imports: int = 1000
    cpu_rounds: int = 5  # exporter and requests loop take turns, against drift of the machine
    cpu_scrapes: int = 2  # per round
    # A git revision whose exporter takes its turn too (--cpu-old): before/after in one run.
    cpu_old: str | None = None
    # Requests of the loop at each latency of the sweep: 200 at 100 ms take 20 s.
    floor_requests_with_latency: int = 200
    finished_imports: int = 10_000
    live_imports: int = 100  # beside the finished ones, asked at every scrape
    finished_scrapes: int = 7
    concurrent_imports: int = 1000
    concurrent_scrapes: int = 5

    def repeats(self, bound: float) -> int:
        if bound <= WARMUP_BOUND:
            return self.short_repeats
        if bound <= LONG_BOUND:
            return self.medium_repeats
        return self.long_repeats


QUICK = Plan(
    latencies=(0.1,),
    max_bound=15.0,
    short_repeats=3,
    medium_repeats=1,
    cpu_rounds=2,
    floor_requests_with_latency=100,
    finished_scrapes=3,
)


@dataclass
class ScrapeCase:
    imports: int
    concurrency: int
    latency_ms: float
    bound_s: float
    scrapes: int = 0
    median_s: float | None = None
    ratio: float | None = None
    seconds: list[float] = field(default_factory=list)
    requests_per_scrape: float | None = None
    cpu_ms_per_request: float | None = None
    all_up: bool | None = None
    note: str = ""
    cpu_s: float = 0.0
    requests: int = 0


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def bound_seconds(imports: int, concurrency: int, latency: float) -> float:
    return math.ceil(imports / concurrency) * latency


# -- 1. scrape time with active imports ---------------------------------------------------


def scrape_times(plan: Plan) -> tuple[list[ScrapeCase], list[dict[str, Any]]]:
    """The sweep, and per latency the CPU per request of the exporter and of the loop."""
    cases: list[ScrapeCase] = []
    cpu_by_latency: list[dict[str, Any]] = []
    largest = max(plan.sizes)
    for latency in plan.latencies:
        with SimulatorProcess(largest, "IN_PROGRESS", latency, LOGS) as sim:
            measured: list[ScrapeCase] = []
            for n in plan.sizes:
                for c in plan.concurrencies:
                    bound = bound_seconds(n, c, latency)
                    case = ScrapeCase(n, c, latency * 1000, bound)
                    cases.append(case)
                    if bound > plan.max_bound:
                        case.note = f"skipped: bound {bound:g} s over {plan.max_bound:g} s"
                        log(f"N={n} C={c} {latency * 1000:g} ms: {case.note}")
                        continue
                    _measure_case(case, sim, plan.repeats(bound))
                    measured.append(case)
            sim.reset()
            floor = _floor_loop(sim, largest, plan.floor_requests_with_latency)
        exporter_cpu = sum(c.cpu_s for c in measured)
        exporter_requests = sum(c.requests for c in measured)
        entry = {
            "latency_ms": latency * 1000,
            "exporter_requests": exporter_requests,
            "exporter_us_per_request": 1e6 * exporter_cpu / exporter_requests,
            "floor_requests": floor["requests"],
            "floor_us_per_request": 1e6 * floor["cpu_seconds"] / floor["requests"],
        }
        entry["ratio"] = entry["exporter_us_per_request"] / entry["floor_us_per_request"]
        cpu_by_latency.append(entry)
        log(
            f"CPU per request at {latency * 1000:g} ms: exporter over the sweep "
            f"{entry['exporter_us_per_request']:.0f} us, requests loop "
            f"{entry['floor_us_per_request']:.0f} us, ratio {entry['ratio']:.2f}"
        )
    return cases, cpu_by_latency


def _measure_case(case: ScrapeCase, sim: SimulatorProcess, repeats: int) -> None:
    timeout = max(SCRAPE_TIMEOUT, 2 * case.bound_s + 5)
    ids = generated_ids(case.imports)
    with ExporterProcess(sim, ids, case.concurrency, LOGS) as exporter:
        if case.bound_s <= WARMUP_BOUND:
            # One unmeasured scrape opens the pooled connections and starts the threads,
            # as every scrape but the first after a start finds them open.
            exporter.scrape(timeout)
        sim.reset()
        cpu_before = cpu_seconds(exporter.pid)
        up = True
        for _ in range(repeats):
            answer = exporter.scrape(timeout)
            case.seconds.append(answer.seconds)
            up = up and is_up(answer.body)
        cpu = cpu_seconds(exporter.pid) - cpu_before
        requests = sim.requests_total()
    case.scrapes = repeats
    case.median_s = statistics.median(case.seconds)
    case.ratio = case.median_s / case.bound_s
    case.requests_per_scrape = requests / repeats
    case.cpu_s = cpu
    case.requests = requests
    case.cpu_ms_per_request = 1000 * cpu / requests if requests else None
    case.all_up = up
    if case.bound_s > WARMUP_BOUND:
        case.note = "no warm-up scrape"
    log(
        f"N={case.imports} C={case.concurrency} {case.latency_ms:g} ms: "
        f"median {case.median_s:.3f} s, bound {case.bound_s:.3f} s, ratio {case.ratio:.3f}"
        f"{'' if up else ' (NOT UP: a round was cut short or failed)'}"
    )


# -- 2. CPU per status request --------------------------------------------------------------


def cpu_per_request(plan: Plan) -> dict[str, Any]:
    """Exporter CPU per status request next to a plain ``requests`` loop's, taking turns.

    Latency 0 for both: a client's CPU per request does not depend on how long it
    waits, and this way the loop's thousands of requests take seconds, not minutes.
    With ``plan.cpu_old``, that commit's exporter takes its turn as well, so that a
    change is measured before and after under the same load of the machine.
    """
    if plan.cpu_old is None:
        return _cpu_turns(plan, None)
    with tempfile.TemporaryDirectory(prefix="bench-cpu-old-") as folder:
        old = export_tree(plan.cpu_old, Path(folder) / "old", short_commit(plan.cpu_old))
        return _cpu_turns(plan, old)


def _cpu_turns(plan: Plan, old: Tree | None) -> dict[str, Any]:
    n, scrapes = plan.cpu_imports, plan.cpu_scrapes
    cpu = {"new": 0.0, "old": 0.0, "loop": 0.0}
    requests = {"new": 0, "old": 0, "loop": 0}
    rounds: list[dict[str, float]] = []
    up = True
    with contextlib.ExitStack() as stack:
        sim = stack.enter_context(SimulatorProcess(n, "IN_PROGRESS", 0.0, LOGS))
        exporters = {"new": stack.enter_context(ExporterProcess(sim, generated_ids(n), 8, LOGS))}
        if old is not None:
            exporters["old"] = stack.enter_context(
                ExporterProcess(sim, generated_ids(n), 8, LOGS, label="-old", tree=old)
            )
        for exporter in exporters.values():
            exporter.scrape(SCRAPE_TIMEOUT)
        turns = [*exporters, "loop"]
        for index in range(plan.cpu_rounds):
            per_round: dict[str, float] = {}
            # The order turns every round: no side always follows the same one.
            for side in turns if index % 2 == 0 else turns[::-1]:
                sim.reset()
                if side == "loop":
                    floor = _floor_loop(sim, n, n * scrapes)
                    # The loop's own count leaves out its unmeasured first request.
                    if sim.requests_total() != floor["requests"] + 1:
                        raise RuntimeError("the simulator did not see the loop's requests")
                    spent, sent = floor["cpu_seconds"], floor["requests"]
                else:
                    pid = exporters[side].pid
                    before = cpu_seconds(pid)
                    for _ in range(scrapes):
                        up = is_up(exporters[side].scrape(SCRAPE_TIMEOUT).body) and up
                    spent, sent = cpu_seconds(pid) - before, sim.requests_total()
                cpu[side] += spent
                requests[side] += sent
                per_round[side] = 1e6 * spent / sent
            rounds.append(
                {
                    "exporter_us_per_request": per_round["new"],
                    "floor_us_per_request": per_round["loop"],
                    **({"old_us_per_request": per_round["old"]} if old is not None else {}),
                }
            )
    result: dict[str, Any] = {
        "imports": n,
        "latency_ms": 0,
        "exporter_concurrency": 8,
        "exporter_requests": requests["new"],
        "exporter_cpu_s": cpu["new"],
        "exporter_all_up": up,
        "exporter_us_per_request": 1e6 * cpu["new"] / requests["new"],
        "floor_requests": requests["loop"],
        "floor_cpu_s": cpu["loop"],
        "floor_us_per_request": 1e6 * cpu["loop"] / requests["loop"],
        "rounds": rounds,
    }
    result["ratio"] = result["exporter_us_per_request"] / result["floor_us_per_request"]
    result["round_ratios"] = [
        r["exporter_us_per_request"] / r["floor_us_per_request"] for r in rounds
    ]
    if old is not None:
        result["old"] = old.name
        result["old_us_per_request"] = 1e6 * cpu["old"] / requests["old"]
        result["old_ratio"] = result["old_us_per_request"] / result["floor_us_per_request"]
    log(
        f"CPU per request: exporter {result['exporter_us_per_request']:.0f} us, "
        f"requests loop {result['floor_us_per_request']:.0f} us, ratio {result['ratio']:.2f}"
        + (
            f"; {old.name}: {result['old_us_per_request']:.0f} us, ratio {result['old_ratio']:.2f}"
            if old is not None
            else ""
        )
    )
    return result


def _floor_loop(sim: SimulatorProcess, imports: int, requests: int) -> dict[str, Any]:
    env = dict(os.environ, ELEVATE_API_KEY=API_KEY)
    done = subprocess.run(
        [
            sys.executable,
            str(HERE / "floor_client.py"),
            "--base-url",
            sim.url,
            "--imports",
            str(imports),
            "--requests",
            str(requests),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    floor: dict[str, Any] = json.loads(done.stdout)
    return floor


# -- 3. and 5. finished imports: scrape cost and memory -----------------------------------------


def finished_imports(plan: Plan) -> dict[str, Any]:
    """Finished imports beside a few live ones: the finished are never asked again, and
    their lines are rendered once; each scrape polls the live ones and renders them.

    Floor: prometheus_client's generate_latest of the same series, on a registry of
    Gauges, in another process; scrapes and renderings take turns.
    """
    n, live = plan.finished_imports, plan.live_imports
    result: dict[str, Any] = {"imports": n, "live": live}
    with (
        SimulatorProcess(n, "SUCCESS", 0.0, LOGS, live=live) as sim,
        ExporterProcess(
            sim,
            generated_ids(n) + live_ids(live),
            8,
            LOGS,
            # An allowlisted label, so that the page holds issue 22's families in full:
            # elevate_import_labels has a series per import (the floor has none of them).
            extra_args=[
                "--imports.max-tracked",
                str(n + live),
                "--imports.metric-labels",
                "feed_name",
            ],
        ) as exporter,
        RenderFloor(n, live) as floor,
    ):
        result["rss_at_start_mb"] = status_kib(exporter.pid, "VmRSS") / 1024
        first = exporter.scrape(SCRAPE_TIMEOUT)
        result["first_scrape_s"] = first.seconds
        result["first_scrape_requests"] = sim.requests_total()
        result["first_scrape_up"] = is_up(first.body)
        sim.reset()
        times: list[float] = []
        cpu: list[float] = []
        renders: list[dict[str, float]] = []
        size = 0
        # Taking turns, so that other load on the machine weighs on both sides alike.
        for _ in range(plan.finished_scrapes):
            before = cpu_seconds(exporter.pid)
            answer = exporter.scrape(SCRAPE_TIMEOUT)
            cpu.append(cpu_seconds(exporter.pid) - before)
            times.append(answer.seconds)
            size = len(answer.body)
            renders.append(floor.render())
        result["later_requests"] = sim.requests_total()
        result["peak_rss_mb"] = status_kib(exporter.pid, "VmHWM") / 1024
    result["requests_per_later_scrape"] = result["later_requests"] / len(times)
    result["scrape_s"] = times
    result["scrape_median_s"] = statistics.median(times)
    result["scrape_bytes"] = size
    result["render_floor_s"] = statistics.median(r["seconds"] for r in renders)
    result["render_floor_bytes"] = int(renders[-1]["bytes"])
    result["formatting_only_s"] = statistics.median(r["formatting_seconds"] for r in renders)
    result["ratio"] = result["scrape_median_s"] / result["render_floor_s"]
    # CPU over all the scrapes: /proc counts in ticks of 10 ms, a scrape takes a few.
    result["scrape_cpu_s"] = sum(cpu) / len(cpu)
    result["floor_cpu_s"] = sum(r["cpu_seconds"] for r in renders) / len(renders)
    result["cpu_ratio"] = result["scrape_cpu_s"] / result["floor_cpu_s"]
    result["render_alone"] = render_alone(n, live)
    log(
        f"{n} finished + {live} live imports: {result['requests_per_later_scrape']:g} requests "
        f"per scrape, scrape {result['scrape_median_s']:.3f} s and "
        f"{1000 * result['scrape_cpu_s']:.0f} ms CPU, prometheus_client alone "
        f"{result['render_floor_s']:.3f} s and {1000 * result['floor_cpu_s']:.0f} ms CPU: "
        f"ratio {result['ratio']:.2f} (time), {result['cpu_ratio']:.3f} (CPU); "
        f"peak RSS {result['peak_rss_mb']:.1f} MB"
    )
    return result


class RenderFloor:
    """render_floor.py as a child process that renders its registries on request."""

    def __init__(self, imports: int, live: int = 0) -> None:
        script = str(HERE / "render_floor.py")
        self._proc = subprocess.Popen(
            [sys.executable, script, "--imports", str(imports), "--live", str(live)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            self._answer()  # ready
        except BaseException:
            self.close()
            raise

    def render(self) -> dict[str, float]:
        assert self._proc.stdin is not None
        self._proc.stdin.write("render\n")
        self._proc.stdin.flush()
        return self._answer()

    def _answer(self) -> dict[str, float]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"render_floor.py ended with status {self._proc.wait(10)}")
        answer: dict[str, float] = json.loads(line)
        return answer

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def __enter__(self) -> RenderFloor:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


# -- 4. simultaneous scrapes --------------------------------------------------------------------


def concurrent_scrapes(plan: Plan) -> dict[str, Any]:
    n, k = plan.concurrent_imports, plan.concurrent_scrapes
    latency = 0.1
    with (
        SimulatorProcess(n, "IN_PROGRESS", latency, LOGS) as sim,
        ExporterProcess(sim, generated_ids(n), 32, LOGS) as exporter,
    ):
        sim.reset()
        barrier = threading.Barrier(k)
        bodies: list[bytes | None] = [None] * k
        errors: list[str] = []

        def one(index: int) -> None:
            try:
                barrier.wait(timeout=30)
                bodies[index] = exporter.scrape(SCRAPE_TIMEOUT).body
            except Exception as exc:  # reported below, the count alone would hide it
                errors.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=one, args=(i,)) for i in range(k)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        requests = sim.requests_total()
    result: dict[str, Any] = {
        "imports": n,
        "scrapes": k,
        "latency_ms": latency * 1000,
        "concurrency": 32,
        "requests": requests,
        "answered": sum(body is not None for body in bodies),
        "all_up": all(body is not None and is_up(body) for body in bodies),
        "errors": errors,
    }
    log(f"{k} simultaneous scrapes of {n} active imports: {requests} requests")
    return result


# -- report ---------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{os.cpu_count()} x {model}",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "prometheus_client": metadata.version("prometheus-client"),
        "commit": _commit(),
    }


def _commit() -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip()


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: on 2 cores, above 2 other work competes."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target of issue 5 whose part was run, with its verdict."""
    rows: list[dict[str, Any]] = []
    target = next(
        (
            c
            for c in results.get("scrape_times", [])
            if c["imports"] == 1000 and c["concurrency"] == 32 and c["latency_ms"] == 100
        ),
        None,
    )
    if target is not None and target["ratio"] is not None:
        rows.append(
            {
                "target": "scrape time, N=1000 C=32 100 ms, vs ceil(N/C) x latency (3.2 s)",
                "measured": f"{target['ratio']:.3f} x ({target['median_s']:.3f} s)",
                "limit": f"<= {SCRAPE_RATIO_LIMIT} x",
                "ok": target["ratio"] <= SCRAPE_RATIO_LIMIT and bool(target["all_up"]),
            }
        )
    if "cpu" in results:
        cpu = results["cpu"]
        rows.append(
            {
                "target": "exporter CPU per status request vs plain requests loop",
                "measured": f"{cpu['ratio']:.2f} x ({cpu['exporter_us_per_request']:.0f} us "
                f"vs {cpu['floor_us_per_request']:.0f} us)",
                "limit": f"<= {CPU_RATIO_LIMIT} x",
                "ok": cpu["ratio"] <= CPU_RATIO_LIMIT,
            }
        )
    if "finished" in results:
        fin = results["finished"]
        rows.append(
            {
                "target": f"{fin['imports']} finished + {fin['live']} live ids: API requests "
                "per scrape after the first (the live ones only)",
                "measured": f"{fin['requests_per_later_scrape']:g}",
                "limit": f"{fin['live']}",
                "ok": fin["requests_per_later_scrape"] == fin["live"],
            }
        )
        rows.append(
            {
                "target": f"{fin['imports']} finished + {fin['live']} live ids: scrape time vs "
                "prometheus_client alone",
                "measured": f"{fin['ratio']:.2f} x ({fin['scrape_median_s']:.3f} s "
                f"vs {fin['render_floor_s']:.3f} s)",
                "limit": f"<= {RENDER_RATIO_LIMIT} x",
                "ok": fin["ratio"] <= RENDER_RATIO_LIMIT,
            }
        )
    if "concurrent" in results:
        conc = results["concurrent"]
        rows.append(
            {
                "target": f"{conc['scrapes']} simultaneous scrapes of {conc['imports']} "
                "active ids: requests received",
                "measured": f"{conc['requests']}",
                "limit": f"== {conc['imports']}",
                "ok": conc["requests"] == conc["imports"] and conc["answered"] == conc["scrapes"],
            }
        )
    if "web" in results:
        rows += web_targets(results["web"])
    if "proxy" in results:
        rows += proxy_targets(results["proxy"])
    if "finished" in results:
        fin = results["finished"]
        rows.append(
            {
                "target": f"peak RSS with {fin['imports'] + fin['live']} ids (VmHWM)",
                "measured": f"{fin['peak_rss_mb']:.1f} MB",
                "limit": f"<= {RSS_LIMIT_MB:g} MB",
                "ok": fin["peak_rss_mb"] <= RSS_LIMIT_MB,
            }
        )
    return rows


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    return "\n".join(lines)


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(results: dict[str, Any]) -> str:
    m = results["machine"]
    loads = "; ".join(f"{part} {load}" for part, load in results["load"].items())
    parts = [
        f"Machine: {m['cpu']}, {m['os']}, Python {m['python']}, prometheus_client "
        f"{m['prometheus_client']}; commit {m['commit']}; run {m['date']}"
        f"{' (--quick)' if results['quick'] else ''}, {results['duration_s']:.0f} s.",
        f"Load average (1, 5, 15 min) after each part: {loads}.",
        "",
        *figures_section(results["figures"], _table),
        "",
        "Targets (issues 5, 10 and 13):",
        "",
        _table(
            ["verdict", "target", "measured", "limit"],
            [
                [_verdict(r["ok"]), r["target"], r["measured"], r["limit"]]
                for r in results["targets"]
            ],
        ),
    ]
    if "scrape_times" in results:
        parts += ["", *_scrape_times_section(results["scrape_times"])]
    if "cpu" in results:
        parts += ["", *_cpu_section(results["cpu"])]
    if "cpu_with_latency" in results:
        parts += ["", *_cpu_with_latency_section(results["cpu_with_latency"])]
    if "finished" in results:
        parts += ["", *_finished_section(results["finished"])]
    if "concurrent" in results:
        conc = results["concurrent"]
        parts += [
            "",
            f"{conc['scrapes']} simultaneous scrapes of {conc['imports']} active imports "
            f"({conc['latency_ms']:g} ms latency, C={conc['concurrency']}): "
            f"{conc['requests']} requests reached the simulator, "
            f"{conc['answered']} scrapes answered"
            f"{', all up' if conc['all_up'] else ', NOT all up'}"
            f"{'; errors: ' + '; '.join(conc['errors']) if conc['errors'] else ''}.",
        ]
    if "web" in results:
        parts += ["", *web_section(results["web"], _table)]
    if "tls" in results:
        parts += ["", *tls_section(results["tls"], _table)]
    parts += details_section(results, _table)
    if "proxy" in results:
        parts += ["", *proxy_section(results["proxy"], _table)]
    return "\n".join(parts) + "\n"


def _scrape_times_section(cases: list[dict[str, Any]]) -> list[str]:
    return [
        "Scrape time with active imports (median scrape, HTTP round trip included; "
        "bound = ceil(N/C) x latency):",
        "",
        _table(
            [
                "ratio",
                "N",
                "C",
                "latency ms",
                "median s",
                "bound s",
                "scrapes",
                "requests/scrape",
                "exporter CPU ms/request",
                "note",
            ],
            [
                [
                    _num(c["ratio"]),
                    str(c["imports"]),
                    str(c["concurrency"]),
                    f"{c['latency_ms']:g}",
                    _num(c["median_s"]),
                    _num(c["bound_s"]),
                    str(c["scrapes"]),
                    _num(c["requests_per_scrape"], 0),
                    _num(c["cpu_ms_per_request"], 2),
                    c["note"] + ("" if c["all_up"] in (None, True) else " NOT UP"),
                ]
                for c in cases
            ],
        ),
    ]


def _cpu_section(cpu: dict[str, Any]) -> list[str]:
    rows = [
        [
            "work tree",
            f"{cpu['ratio']:.2f}",
            f"{cpu['exporter_us_per_request']:.0f}",
            f"{cpu['floor_us_per_request']:.0f}",
            f"{cpu['exporter_requests']} / {cpu['floor_requests']}",
        ]
    ]
    if "old" in cpu:
        rows.append(
            [
                cpu["old"],
                f"{cpu['old_ratio']:.2f}",
                f"{cpu['old_us_per_request']:.0f}",
                f"{cpu['floor_us_per_request']:.0f}",
                f"{cpu['exporter_requests']} / {cpu['floor_requests']}",
            ]
        )
    spread = cpu.get("round_ratios", [])
    return [
        f"CPU per status request ({cpu['imports']} active ids, simulator latency 0 for both, "
        f"exporter concurrency {cpu['exporter_concurrency']}; exporter CPU includes serving "
        "and rendering its scrapes):",
        "",
        _table(
            [
                "exporter",
                "ratio",
                "exporter us/request",
                "requests loop us/request",
                "requests each",
            ],
            rows,
        ),
        "",
        "Ratio per round (work tree): " + ", ".join(f"{r:.2f}" for r in spread),
    ]


def _cpu_with_latency_section(entries: list[dict[str, Any]]) -> list[str]:
    return [
        "CPU per status request at the sweep's latencies (for reference, no target: the "
        "exporter's CPU over all the sweep's scrapes at that latency, the loop's over its "
        "own requests to the same simulator):",
        "",
        _table(
            ["ratio", "latency ms", "exporter us/request", "requests loop us/request", "requests"],
            [
                [
                    f"{e['ratio']:.2f}",
                    f"{e['latency_ms']:g}",
                    f"{e['exporter_us_per_request']:.0f}",
                    f"{e['floor_us_per_request']:.0f}",
                    f"{e['exporter_requests']} / {e['floor_requests']}",
                ]
                for e in entries
            ],
        ),
    ]


def _finished_section(fin: dict[str, Any]) -> list[str]:
    return [
        f"{fin['imports']} finished and {fin['live']} live imports (text format 0.0.4, no "
        "gzip; the exporter's time is a whole HTTP scrape from a client, its poll of the live "
        "ids included, its CPU is the process's over the scrape; prometheus_client's is "
        "generate_latest alone, on a registry of Gauges and, for reference, on pre-built "
        "metric families):",
        "",
        _table(
            [
                "ratio",
                "scrape median s",
                "generate_latest s (Gauges)",
                "CPU ratio",
                "scrape CPU ms",
                "generate_latest CPU ms",
                "formatting only s",
                "requests/scrape after first",
                "first scrape s (requests)",
                "body bytes (exporter / floor)",
                "peak RSS MB",
            ],
            [
                [
                    f"{fin['ratio']:.2f}",
                    f"{fin['scrape_median_s']:.3f}",
                    f"{fin['render_floor_s']:.3f}",
                    f"{fin['cpu_ratio']:.3f}",
                    f"{1000 * fin['scrape_cpu_s']:.0f}",
                    f"{1000 * fin['floor_cpu_s']:.0f}",
                    f"{fin['formatting_only_s']:.3f}",
                    f"{fin['requests_per_later_scrape']:g}",
                    f"{fin['first_scrape_s']:.2f} ({fin['first_scrape_requests']})",
                    f"{fin['scrape_bytes']} / {fin['render_floor_bytes']}",
                    f"{fin['peak_rss_mb']:.1f}",
                ]
            ],
        ),
    ]


def _web_line(web: dict[str, Any]) -> str:
    return (
        f"web load: threads max {web['max_threads']} (bound {web['thread_bound']}), "
        f"open files max {web['max_fds']}, scrapes {web['scrapes_200']} x 200 + "
        f"{web['scrapes_503']} x 503, health p99 {web['health_load']['p99_ms'] or 0:.1f} ms"
    )


def run_part(part: str, plan: Plan, quick: bool, results: dict[str, Any]) -> None:
    if part == "scrape":
        cases, cpu_by_latency = scrape_times(plan)
        results["scrape_times"] = [asdict(c) for c in cases]
        results["cpu_with_latency"] = cpu_by_latency
    elif part == "cpu":
        results["cpu"] = cpu_per_request(plan)
    elif part == "finished":
        results["finished"] = finished_imports(plan)
    elif part == "concurrent":
        results["concurrent"] = concurrent_scrapes(plan)
    elif part == "shared":
        shared = results["shared"] = shared_scrapes(SHARED_QUICK if quick else SharedPlan(), LOGS)
        log(
            f"simultaneous scrapes: {shared['renders']} renders in {shared['rounds']:g} rounds, "
            f"/-/healthy p99 {shared['health_load']['p99_ms']:.1f} ms"
        )
    elif part == "large":
        large = results["large"] = large_store(
            LARGE_QUICK if quick else LargePlan(), RESULTS / "large", LOGS
        )
        big = large["large"]
        log(
            f"{large['rows']} tracked ids: ready in {big['ready_s']:.2f} s, gzip scrape "
            f"{big['gzip_scrape_s']:.2f} s, peak RSS {big['peak_rss_gzip_mb']:.0f} MB"
        )
    elif part == "registration":
        reg = results["registration"] = registration(
            REGISTRATION_QUICK if quick else RegistrationPlan(), RESULTS / "registration", LOGS
        )
        log(
            f"registration: {reg['posts_per_s']:.0f} POSTs/s, batch of {reg['batch']} "
            f"{1000 * reg['batch_s']:.0f} ms"
        )
    elif part == "web":
        web_plan = WEB_QUICK if quick else WebPlan()
        results["web"] = web_load(web_plan, RESULTS, LOGS)
        log(_web_line(results["web"]))
        results["tls"] = tls_versus_plain(web_plan, RESULTS, LOGS)
        log(
            f"TLS vs plain HTTP: scrape {results['tls']['time_ratio']:.2f} x, "
            f"CPU {results['tls']['cpu_ratio'] or 0:.2f} x"
        )
    elif part == "proxy":
        proxy = results["proxy"] = proxy_bench(PROXY_QUICK if quick else ProxyPlan(), LOGS)
        log(
            f"proxy: throughput {proxy['throughput_ratio']:.2f} x direct, added latency "
            f"p50 {proxy['added_p50_ms']:.2f} ms p99 {proxy['added_p99_ms']:.2f} ms, "
            f"RSS growth {proxy['rss_growth_mb']:.1f} MB"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="latency 100 ms only, bounds up to 15 s, fewer scrapes"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=PARTS,
        help="run only this part (repeatable); the default is all of them",
    )
    parser.add_argument(
        "--cpu-old",
        metavar="REV",
        help="a git revision whose exporter takes its turns in the CPU part too (before/after)",
    )
    args = parser.parse_args()
    plan = dataclasses.replace(QUICK if args.quick else Plan(), cpu_old=args.cpu_old)
    parts = args.only or PARTS
    started = time.monotonic()
    log(f"benchmarking the exporter of {REPO}")
    results: dict[str, Any] = {"machine": machine(), "quick": args.quick, "plan": asdict(plan)}
    results["load"] = {"start": load_average()}
    for part in PARTS:
        if part in parts:
            run_part(part, plan, args.quick, results)
            results["load"][part] = load_average()
    results["targets"] = targets(results)
    results["figures"] = figure_rows(results)
    results["duration_s"] = time.monotonic() - started
    text = report(results)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (RESULTS / "latest.md").write_text(text, encoding="utf-8")
    log(f"done in {results['duration_s']:.0f} s; wrote {RESULTS / 'latest.md'} and latest.json")
    verdicts = [r["ok"] for r in results["targets"] + results["figures"] if r["ok"] is not None]
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
