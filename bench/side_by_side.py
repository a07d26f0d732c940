"""The HTTP front ends of an old commit and of the work tree, measured side by side in one run.

    .venv/bin/python bench/side_by_side.py --old c7bb7ef            # about 3 minutes
    .venv/bin/python bench/side_by_side.py --old c7bb7ef --new HEAD --only proxy,small

``--old`` (and ``--new``, if it is not the work tree) is exported with ``git archive`` into
a temporary folder; each side runs in child processes started with PYTHONPATH at its tree's
``exporter/`` folder, driven only through the command line (``python -m
elevate_import_exporter run``/``simulate``) and HTTP, since module paths differ between
commits. One simulator, from the old tree unless ``--upstream new``, serves both sides.
The two sides take turns within each scenario, the order swapped every round (old, new,
new, old, ...), so that drift of a shared machine weighs on both alike.

Scenarios: ``health`` (``/-/healthy`` every 50 ms on a new connection while bursts of 50
simultaneous scrapes of 1,000 active ids run), ``tls`` (the same 1,000-id answer over TLS
and plain HTTP, a new connection per scrape), ``proxy`` (a large upload through ``run
--proxy.listen-address`` against the same upload straight to the simulator), ``small``
(small status requests through the proxy, a new connection each, from a few threads) and
``rss`` (the proxy process's VmRSS, sampled from /proc every 5 ms, during a 500 MiB
upload). The table shows old, new and new/old for each figure, and the spread of the
per-round new/old ratios where a figure has rounds: the noise to judge a ratio by.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from httpload import HealthProbe, latency_summary, make_pki, scrape_all
from procs import (
    CLOCK_TICKS,
    REPO,
    ExporterProcess,
    SimulatorProcess,
    Tree,
    cpu_seconds,
    generated_ids,
    status_kib,
)
from proxy_bench import ProxyExporter, RssSampler, percentile, small_request, upload
from tls_compare import Turns, tls_and_plain

RESULTS = Path(__file__).resolve().parent / "results"
SCENARIOS = ("health", "tls", "proxy", "small", "rss")
SIDES = ("old", "new")
# The floor for the proxy: its throughput against a direct upload, quiet machine.
PROXY_FLOOR = 0.9
# Rounds that must all agree before a change is called one: by chance, 2 x 2^-5 = 6 %.
MIN_ROUNDS = 5
# RSS moves by a few MB with allocator timing alone: below this, a difference is noise.
RSS_SLACK_MB = 4.0


@dataclass
class Plan:
    rounds: int = 6  # turns of each side in health, tls, proxy and small
    imports: int = 1000  # health: active ids, at `latency` each, `concurrency` at once
    latency: float = 0.1
    concurrency: int = 32
    scrapes: int = 50  # health: simultaneous scrapes in a burst, one burst a turn
    health_every: float = 0.05
    idle_probes: int = 30  # health: the same probes before the load, for reference
    tls_imports: int = 1000
    tls_scrapes: int = 50  # per turn and kind; CPU is counted in 10 ms ticks
    upload_mib: int = 500
    rss_mib: int = 500
    small_requests: int = 200  # per turn
    small_threads: int = 4


@dataclass
class Figure:
    """One line of the table: a figure of both sides, and its per-round new/old ratios."""

    scenario: str
    name: str
    better: str  # "lower" or "higher": which way is an improvement
    old: float
    new: float
    per_round: list[float] = field(default_factory=list)
    # A difference up to this, in the figure's unit, is noise whatever the ratio: a few MB
    # of RSS, a tick of CPU time.
    slack: float = 0.0

    @property
    def ratio(self) -> float:
        return self.new / self.old if self.old else float("nan")


# Side -> rounds -> samples.
Samples = dict[str, list[list[float]]]


def _samples() -> Samples:
    return {side: [] for side in SIDES}


def figure(
    scenario: str, name: str, better: str, samples: Samples, stat: Callable[[list[float]], float]
) -> Figure:
    """``stat`` over each side's samples of all rounds, and over each round's, as ratios."""
    per_round = [
        stat(new) / stat(old)
        for old, new in zip(samples["old"], samples["new"], strict=True)
        if stat(old)
    ]
    return Figure(
        scenario,
        name,
        better,
        stat(_flat(samples["old"])),
        stat(_flat(samples["new"])),
        per_round,
    )


def _flat(rounds: list[list[float]]) -> list[float]:
    return [value for values in rounds for value in values]


def p50(values: list[float]) -> float:
    return statistics.median(values)


def p99(values: list[float]) -> float:
    return percentile(values, 0.99)


def turn_order(round_index: int, sides: Sequence[str]) -> list[str]:
    """The sides of a round, rotated every round (AB BA AB ..., ABC BCA CAB ...), so that
    none always goes first, after the same neighbour."""
    shift = round_index % len(sides)
    return [*sides[shift:], *sides[:shift]]


# -- the trees --------------------------------------------------------------------------------


def export_tree(rev: str, into: Path, name: str) -> Tree:
    """``git archive`` of the commit's ``exporter/`` folder: no worktree, no git state."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", rev, "exporter"],
        check=True,
        capture_output=True,
    ).stdout
    into.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return Tree(name, into, into / "exporter")


def short_commit(rev: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", rev],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def package_folder(tree: Tree) -> Path:
    """Where a child of ``tree`` imports the package from: checked, not assumed."""
    out = subprocess.run(
        [sys.executable, "-c", "import elevate_import_exporter as p; print(p.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        env=tree.env(),
        cwd=tree.root,
    ).stdout.strip()
    folder = Path(out).parent
    expected = (tree.exporter or REPO / "exporter") / "elevate_import_exporter"
    if folder.resolve() != expected.resolve():
        raise RuntimeError(f"the {tree.name} tree imports {folder}, not {expected}")
    return folder


@contextlib.contextmanager
def trees(old: str, new: str) -> Iterator[dict[str, Tree]]:
    with tempfile.TemporaryDirectory(prefix="side-by-side-") as tmp:
        folder = Path(tmp)
        found = {"old": export_tree(old, folder / "old", "old")}
        found["new"] = Tree("new") if new == "worktree" else export_tree(new, folder / "new", "new")
        for tree in found.values():
            package_folder(tree)
        yield found


# -- 1. /-/healthy under simultaneous scrapes -------------------------------------------------


def health(plan: Plan, sides: dict[str, Tree], upstream: Tree, logs: Path) -> dict[str, Any]:
    ids = generated_ids(plan.imports)
    latencies, bursts, idle = _samples(), _samples(), {}
    answered: dict[str, dict[str, int]] = {side: {} for side in SIDES}
    failed = dict.fromkeys(SIDES, 0)
    with contextlib.ExitStack() as stack:
        sim = stack.enter_context(
            SimulatorProcess(plan.imports, "IN_PROGRESS", plan.latency, logs, tree=upstream)
        )
        exporters = {
            side: stack.enter_context(
                ExporterProcess(
                    sim, ids, plan.concurrency, logs, label=f"-health-{side}", tree=sides[side]
                )
            )
            for side in SIDES
        }
        for side, exporter in exporters.items():
            exporter.scrape()  # connections to the simulator open, first render done
            probe = HealthProbe(exporter, plan.health_every, limit=plan.idle_probes)
            probe.start()
            probe.join()
            idle[side] = latency_summary(probe.seconds)
        for index in range(plan.rounds):
            for side in turn_order(index, SIDES):
                probe = HealthProbe(exporters[side], plan.health_every)
                probe.start()
                began = time.perf_counter()
                statuses = scrape_all(exporters[side], plan.scrapes)
                bursts[side].append([time.perf_counter() - began])
                probe.stop()
                latencies[side].append(probe.seconds)
                failed[side] += len(probe.failures)
                for status, _seconds in statuses:
                    answered[side][str(status)] = answered[side].get(str(status), 0) + 1
    figures = [
        figure("health", "/-/healthy p50 under scrapes, ms", "lower", _ms(latencies), p50),
        figure("health", "/-/healthy p99 under scrapes, ms", "lower", _ms(latencies), p99),
        figure("health", f"burst of {plan.scrapes} scrapes, s", "lower", bursts, p50),
    ]
    return {
        "figures": figures,
        "idle": idle,
        "probes": {side: len(_flat(latencies[side])) for side in SIDES},
        "probes_failed": failed,
        "scrapes_answered": answered,
    }


def _ms(samples: Samples) -> Samples:
    return {side: [[1000 * s for s in values] for values in r] for side, r in samples.items()}


# -- 2. TLS against plain HTTP ----------------------------------------------------------------


def tls(plan: Plan, sides: dict[str, Tree], upstream: Tree, logs: Path) -> dict[str, Any]:
    pki = make_pki(logs / "pki")
    ids = generated_ids(plan.tls_imports)
    kinds = ("tls", "plain")
    # Side -> kind -> one Turns per round.
    turns: dict[str, dict[str, list[Turns]]] = {s: {k: [] for k in kinds} for s in SIDES}
    with contextlib.ExitStack() as stack:
        sim = stack.enter_context(
            SimulatorProcess(plan.tls_imports, "SUCCESS", 0.0, logs, tree=upstream)
        )
        exporters = {
            side: stack.enter_context(tls_and_plain(sim, pki, ids, logs, sides[side]))
            for side in SIDES
        }
        for index in range(plan.rounds):
            for side in turn_order(index, SIDES):
                for kind in kinds:
                    one = Turns()
                    one.take(exporters[side][kind], plan.tls_scrapes)
                    turns[side][kind].append(one)

    def samples(value: Callable[[Turns, Turns], float]) -> Samples:
        return {
            side: [
                [value(tls_turn, plain_turn)]
                for tls_turn, plain_turn in zip(by["tls"], by["plain"], strict=True)
            ]
            for side, by in turns.items()
        }

    def times(kind: str) -> Samples:
        return {side: [one.times for one in by[kind]] for side, by in turns.items()}

    figures = [
        figure("tls", "TLS scrape p50, ms", "lower", _ms(times("tls")), p50),
        figure("tls", "plain scrape p50, ms", "lower", _ms(times("plain")), p50),
        figure(
            "tls",
            "TLS / plain scrape time",
            "lower",
            samples(lambda t, p: p50(t.times) / p50(p.times)),
            p50,
        ),
        figure(
            "tls",
            "TLS CPU per scrape, ms",
            "lower",
            samples(lambda t, _p: t.cpu_ms_per_scrape()),
            statistics.mean,
        ),
        figure(
            "tls",
            "plain CPU per scrape, ms",
            "lower",
            samples(lambda _t, p: p.cpu_ms_per_scrape()),
            statistics.mean,
        ),
        figure(
            "tls",
            "TLS / plain CPU per scrape",
            "lower",
            samples(lambda t, p: t.cpu / p.cpu if p.cpu else float("nan")),
            p50,
        ),
    ]
    return {"figures": figures, "bytes": {s: turns[s]["tls"][0].size for s in SIDES}}


# -- 3, 4, 5. the import proxy ----------------------------------------------------------------


def proxy(
    plan: Plan, sides: dict[str, Tree], upstream: Tree, logs: Path, parts: set[str]
) -> dict[str, Any]:
    """The proxy scenarios asked for, on one simulator and one proxy process per side: RSS
    first, while the processes have served only small requests, then throughput, then
    small requests."""
    out: dict[str, Any] = {"figures": []}
    with contextlib.ExitStack() as stack:
        sim = stack.enter_context(SimulatorProcess(0, "IN_PROGRESS", 0.0, logs, tree=upstream))
        proxies = {
            side: stack.enter_context(ProxyExporter(sim.url, logs, sides[side])) for side in SIDES
        }
        ports = {"direct": sim.port} | {side: p.proxy_port for side, p in proxies.items()}
        for side in SIDES:
            for _ in range(20):  # threads, connections and buffers in place
                small_request(ports[side])
        if "rss" in parts:
            out.update(_rss(plan, proxies))
        if "proxy" in parts:
            out.update(_throughput(plan, proxies, ports))
        if "small" in parts:
            out.update(_small(plan, ports))
    for key in ("rss_figures", "throughput_figures", "small_figures"):
        out["figures"] += out.pop(key, [])
    return out


def _rss(plan: Plan, proxies: dict[str, ProxyExporter]) -> dict[str, Any]:
    before, peak, hwm = {}, {}, {}
    for side in SIDES:
        pid = proxies[side].pid
        before[side] = status_kib(pid, "VmRSS") / 1024
        sampler = RssSampler(pid)
        sampler.start()
        try:
            status, _seconds = upload(proxies[side].proxy_port, plan.rss_mib)
        finally:
            peak[side] = sampler.stop()
        if status != 202:
            raise RuntimeError(f"an upload through the {side} proxy answered {status}")
        hwm[side] = status_kib(pid, "VmHWM") / 1024

    def row(name: str, values: dict[str, float]) -> Figure:
        return Figure("rss", name, "lower", values["old"], values["new"], slack=RSS_SLACK_MB)

    return {
        "rss_figures": [
            row("proxy process RSS before, MB", before),
            row(f"proxy RSS peak during {plan.rss_mib} MiB upload, MB", peak),
            row("proxy RSS growth, MB", {s: peak[s] - before[s] for s in SIDES}),
        ],
        "rss_vmhwm_mb": hwm,
    }


def _throughput(
    plan: Plan, proxies: dict[str, ProxyExporter], ports: dict[str, int]
) -> dict[str, Any]:
    seconds: dict[str, list[float]] = {side: [] for side in ports}
    cpu: Samples = _samples()
    for index in range(plan.rounds):
        for side in turn_order(index, list(ports)):
            pid = proxies[side].pid if side in proxies else None
            before = cpu_seconds(pid) if pid else 0.0
            status, took = upload(ports[side], plan.upload_mib)
            if status != 202:
                raise RuntimeError(f"a {side} upload answered {status}")
            seconds[side].append(took)
            if pid:
                cpu[side].append([cpu_seconds(pid) - before])
    mib_s = {side: [[plan.upload_mib / s] for s in seconds[side]] for side in SIDES}
    versus = {
        side: [[d / s] for d, s in zip(seconds["direct"], seconds[side], strict=True)]
        for side in SIDES
    }
    direct = p50(seconds["direct"])
    return {
        "throughput_figures": [
            figure(
                "proxy", f"upload of {plan.upload_mib} MiB via proxy, MiB/s", "higher", mib_s, p50
            ),
            Figure(
                "proxy",
                "proxy / direct throughput",
                "higher",
                direct / p50(seconds["old"]),
                direct / p50(seconds["new"]),
                [n[0] / o[0] for o, n in zip(versus["old"], versus["new"], strict=True)],
            ),
            figure("proxy", "proxy CPU per upload, s", "lower", cpu, statistics.mean),
        ],
        "direct_mib_per_s": plan.upload_mib / direct,
        "upload_seconds": seconds,
    }


def small_turn(port: int, count: int, threads: int) -> tuple[list[float], float]:
    """``count`` status requests from ``threads`` threads, a new connection each: their
    seconds each, and the wall time of the whole turn."""
    seconds: list[float] = []
    errors: list[BaseException] = []
    left = iter(range(count))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if next(left, None) is None:
                    return
            try:
                seconds.append(small_request(port))
            except (OSError, RuntimeError) as exc:
                errors.append(exc)
                return

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    began = time.perf_counter()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=300)
    wall = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"small requests to port {port} failed: {errors[0]!r}")
    return seconds, wall


def _small(plan: Plan, ports: dict[str, int]) -> dict[str, Any]:
    latencies: dict[str, list[list[float]]] = {side: [] for side in ports}
    rates: dict[str, list[list[float]]] = {side: [] for side in ports}
    for index in range(plan.rounds):
        for side in turn_order(index, list(ports)):
            seconds, wall = small_turn(ports[side], plan.small_requests, plan.small_threads)
            latencies[side].append([1000 * s for s in seconds])
            rates[side].append([len(seconds) / wall])
    ms = {side: latencies[side] for side in SIDES}
    per_s = {side: rates[side] for side in SIDES}
    return {
        "small_figures": [
            figure(
                "small",
                f"small proxied requests per s ({plan.small_threads} threads)",
                "higher",
                per_s,
                p50,
            ),
            figure("small", "small proxied request p50, ms", "lower", ms, p50),
            figure("small", "small proxied request p99, ms", "lower", ms, p99),
        ],
        "small_direct": {
            "per_s": p50(_flat(rates["direct"])),
            "p50_ms": p50(_flat(latencies["direct"])),
            "p99_ms": p99(_flat(latencies["direct"])),
        },
    }


# -- the machine ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Machine:
    """CPU time the whole machine and this run (this process and its reaped children) had
    used at a moment: the difference of two is the work of others that shared the run."""

    at: float
    busy: float
    ours: float

    @classmethod
    def now(cls) -> Machine:
        # cpu  user nice system idle iowait irq softirq steal ...: busy is all but idle,
        # iowait and steal (the host's).
        fields = [int(f) for f in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
        user, nice, system, _idle, _iowait, irq, softirq, _steal = fields
        busy = (user + nice + system + irq + softirq) / CLOCK_TICKS
        t = os.times()
        return cls(time.monotonic(), busy, t.user + t.system + t.children_user + t.children_system)

    def others_since(self, before: Machine) -> dict[str, float]:
        """CPUs' worth of work by others between ``before`` and this moment."""
        seconds = self.at - before.at
        others = max(0.0, (self.busy - before.busy) - (self.ours - before.ours))
        return {"seconds": seconds, "others_cpus": others / seconds if seconds else 0.0}


# -- the report -------------------------------------------------------------------------------


def verdict(fig: Figure, tolerance: float) -> str:
    """``~`` when new/old is within ``tolerance`` of 1 (or the difference within the
    figure's slack), or when the rounds disagree on its direction (some new/old above 1,
    some below): noise. Otherwise which way the new code moved it, every round agreeing."""
    ratio = fig.ratio
    if abs(fig.new - fig.old) <= fig.slack or abs(ratio - 1) <= tolerance:
        return "~"
    if fig.per_round and min(fig.per_round) <= 1 <= max(fig.per_round):
        return "~ (rounds disagree)"
    if fig.per_round and len(fig.per_round) < MIN_ROUNDS:
        return "? (too few rounds)"
    return "better" if (ratio > 1) == (fig.better == "higher") else "WORSE"


def number(value: float) -> str:
    if value != value:  # NaN
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join(
        [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        + [line(r) for r in rows]
    )


def report(figures: list[Figure], meta: dict[str, Any], tolerance: float) -> str:
    rows = [
        [
            f.scenario,
            f.name,
            number(f.old),
            number(f.new),
            f"{f.ratio:.3f}",
            f"{min(f.per_round):.2f}-{max(f.per_round):.2f}" if f.per_round else "-",
            f.better,
            verdict(f, tolerance),
        ]
        for f in figures
    ]
    lines = [
        f"Side by side: old = {meta['old']}, new = {meta['new']}; simulator from the "
        f"{meta['upstream']} tree; {meta['rounds']} rounds, the sides taking turns; "
        f"{meta['seconds']:.0f} s; {meta['cpus']} CPUs.",
        "",
        table(
            ["scenario", "figure", "old", "new", "new/old", "per round", "better", "verdict"],
            rows,
        ),
        "",
        "per round: the range of the new/old ratios of single rounds, the noise of this run. "
        f"verdict: `~` when new/old is within {tolerance:.0%} of 1, or when the rounds "
        "disagree on the direction; else `better` or `WORSE`, every round agreeing.",
    ]
    if "health" in meta:
        h = meta["health"]
        lines.append(
            "Health: probes under load (failed) "
            + ", ".join(f"{s} {h['probes'][s]} ({h['probes_failed'][s]})" for s in SIDES)
            + "; scrapes answered "
            + ", ".join(f"{s} {h['scrapes_answered'][s]}" for s in SIDES)
            + "; idle p50/p99 ms "
            + ", ".join(
                f"{s} {h['idle'][s]['p50_ms']:.2f}/{h['idle'][s]['p99_ms']:.2f}" for s in SIDES
            )
            + "."
        )
    if "direct_mib_per_s" in meta:
        lines.append(
            f"Direct upload to the simulator: {meta['direct_mib_per_s']:.0f} MiB/s; issue 21's "
            f"floor for proxy / direct is {PROXY_FLOOR} on a quiet machine."
        )
    if "small_direct" in meta:
        d = meta["small_direct"]
        lines.append(
            f"Small requests straight to the simulator: {d['per_s']:.0f} per s, "
            f"p50 {d['p50_ms']:.2f} ms, p99 {d['p99_ms']:.2f} ms."
        )
    others = ", ".join(
        f"{name} {one['others_cpus']:.2f} ({one['seconds']:.0f} s)"
        for name, one in meta["others"].items()
    )
    load = ", ".join(f"{at} {one:.2f}" for at, one in meta["load"])
    lines.append(
        f"Machine: {meta['cpus']} CPUs. Work of other processes during each scenario, in "
        f"CPUs busy (all CPU time of the machine from /proc/stat less this run's): {others}. "
        f"Load average (1 min; it counts this run too): {load}. When others kept a CPU or "
        "more busy, the sides still shared it alike, so trust the ratios more than the "
        "absolute figures, and the throughput floor not at all."
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    defaults = Plan()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--old", required=True, help="commit (or any git revision) to compare")
    parser.add_argument(
        "--new", default="worktree", help="'worktree' (the default) or a git revision"
    )
    parser.add_argument("--upstream", choices=SIDES, default="old", help="the simulator's tree")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--rounds", type=int, default=defaults.rounds)
    parser.add_argument("--scrapes", type=int, default=defaults.scrapes)
    parser.add_argument("--imports", type=int, default=defaults.imports)
    parser.add_argument("--tls-scrapes", type=int, default=defaults.tls_scrapes)
    parser.add_argument("--upload-mib", type=int, default=defaults.upload_mib)
    parser.add_argument("--rss-mib", type=int, default=defaults.rss_mib)
    parser.add_argument("--small-requests", type=int, default=defaults.small_requests)
    parser.add_argument("--small-threads", type=int, default=defaults.small_threads)
    parser.add_argument(
        "--tolerance", type=float, default=0.10, help="new/old within it counts as noise"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "side-by-side")
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))
    if parts - set(SCENARIOS):
        parser.error(f"unknown scenario(s): {', '.join(sorted(parts - set(SCENARIOS)))}")
    plan = Plan(
        rounds=args.rounds,
        imports=args.imports,
        scrapes=args.scrapes,
        tls_scrapes=args.tls_scrapes,
        upload_mib=args.upload_mib,
        rss_mib=args.rss_mib,
        small_requests=args.small_requests,
        small_threads=args.small_threads,
    )
    logs = args.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    load = [("at start", os.getloadavg()[0])]
    new_name = "work tree" if args.new == "worktree" else short_commit(args.new)
    meta: dict[str, Any] = {
        "old": short_commit(args.old),
        "new": f"{new_name} (HEAD {short_commit('HEAD')})",
        "upstream": args.upstream,
        "rounds": plan.rounds,
        "cpus": os.cpu_count(),
        "plan": asdict(plan),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "others": {},
    }
    figures: list[Figure] = []
    with trees(args.old, args.new) as sides:
        upstream = sides[args.upstream]
        steps: list[tuple[str, Callable[[], dict[str, Any]]]] = []
        if "health" in parts:
            steps.append(("health", lambda: health(plan, sides, upstream, logs)))
        if "tls" in parts:
            steps.append(("tls", lambda: tls(plan, sides, upstream, logs)))
        if parts & {"proxy", "small", "rss"}:
            steps.append(("proxy", lambda: proxy(plan, sides, upstream, logs, parts)))
        for name, step in steps:
            print(f"{name}...", file=sys.stderr, flush=True)
            before = Machine.now()
            out = step()
            meta["others"][name] = Machine.now().others_since(before)
            figures += out.pop("figures")
            meta[name] = out
            meta.update({k: out[k] for k in ("direct_mib_per_s", "small_direct") if k in out})
            load.append((f"after {name}", os.getloadavg()[0]))
    meta["seconds"] = time.monotonic() - started
    meta["load"] = load
    text = report(figures, meta, args.tolerance)
    print(text)
    (args.out / "latest.md").write_text(text + "\n", encoding="utf-8")
    (args.out / "latest.json").write_text(
        json.dumps({"meta": meta, "figures": [asdict(f) for f in figures]}, indent=2, default=str)
        + "\n",
        encoding="utf-8",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
