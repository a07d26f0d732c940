"""Memory at 10,000 tracked ids by how they arrived (issue 25): registration and proxy
uploads with scrapes meanwhile, against the same ids given in an ids file, in one run.

```sh
.venv/bin/python bench/mixed_memory.py                    # about 2.5 minutes
.venv/bin/python bench/mixed_memory.py --old efb8eef      # that commit's mixed case too
.venv/bin/python bench/mixed_memory.py --trace            # tracemalloc top sites per child
```

One simulator (latency 0) serves every exporter. It knows ``--registered`` generated ids as
SUCCESS; an upload of more than 64 bytes to it is a 202 with a fresh id that goes
WAITING 2 s, IN_PROGRESS 6 s, then SUCCESS. The **mixed** exporter runs as an operator
starts it (``run --web.enable-registration --proxy.listen-address ...``, the store in
memory) and is fed, over ``--feed`` seconds, from three threads at once: registrations
(batches of 1 to 1,000 ids on one keep-alive connection, and single POSTs on new
connections), uploads through its proxy (one per new connection, each one 202 and
tracked) and a scrape every ``--scrape-every`` seconds. The feed ends at ``--ids`` tracked
ids; the scrapes go on until every id is final. With ``--old REV`` that commit's exporter
gets the same feed in the same turns. Then the **flags** exporter starts on the mixed
exporter's 10,000 ids (an ids file, the store in memory too), and every exporter is
scraped in turns ``--settle-scrapes`` times; after ``--settle`` idle seconds, VmRSS
(settled) and VmHWM (peak) are read from /proc, with the thread count and a split of
/proc/PID/smaps: the main heap (brk), malloc's thread arenas (anonymous mappings of 64
MiB reserved, at 64 MiB alignment), other anonymous mappings, and files.

With ``--trace`` each exporter runs under tracemalloc (25 frames) and writes its top
allocation sites (live at settle time, grouped by file and line) into the logs; the
figures of a traced run are not the plain ones.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import random
import re
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from procs import (
    API_KEY,
    REPO,
    WORK_TREE,
    Child,
    SimulatorProcess,
    Tree,
    free_port,
    generated_ids,
    http_get,
    status_kib,
)

RESULTS = REPO / "bench" / "results" / "mixed-memory"
UPLOAD_PATH = "/api/v2/import/products"
SETTLED_RATIO_LIMIT = 1.1
MIB = 1024 * 1024
ARENA = 64 * MIB

# Runs the command line as ``python -m elevate_import_exporter`` does, optionally under
# tracemalloc: a thread writes the top sites when the file named by the second argument
# appears (a debug hook of the bench, not of the product).
CHILD = """
import os, runpy, sys, threading, time
trace = sys.argv[1]
if trace:
    import tracemalloc
    tracemalloc.start(25)
    def dump():
        ask = trace + ".ask"
        while True:
            time.sleep(0.2)
            if os.path.exists(ask):
                snap = tracemalloc.take_snapshot().filter_traces(
                    [tracemalloc.Filter(False, tracemalloc.__file__)])
                with open(trace + ".tmp", "w") as out:
                    current, peak = tracemalloc.get_traced_memory()
                    out.write(f"traced {current / 2**20:.1f} MiB, peak {peak / 2**20:.1f}\\n")
                    names = {}
                    for thread in threading.enumerate():
                        name = thread.name.rstrip("0123456789-")
                        names[name] = names.get(name, 0) + 1
                    out.write(f"threads {sorted(names.items())}\\n")
                    for kind in ("lineno", "traceback"):
                        out.write(f"\\n== by {kind}\\n")
                        for stat in snap.statistics(kind)[:25]:
                            out.write(f"{stat.size / 2**20:8.2f} MiB {stat.count:8d}  ")
                            if kind == "lineno":
                                out.write(f"{stat.traceback[0]}\\n")
                            else:
                                out.write("\\n" + "\\n".join(
                                    "      " + line for line in stat.traceback.format()[-12:]))
                                out.write("\\n")
                os.replace(trace + ".tmp", trace)
                os.remove(ask)
    threading.Thread(target=dump, daemon=True).start()
if os.environ.get("BENCH_MALLOC_TRIM"):
    # Experiment only: what malloc could give back if asked.
    import ctypes
    libc = ctypes.CDLL("libc.so.6")
    def trim():
        while True:
            time.sleep(float(os.environ["BENCH_MALLOC_TRIM"]))
            libc.malloc_trim(0)
    threading.Thread(target=trim, daemon=True).start()
sys.argv = ["elevate-import-exporter", *sys.argv[2:]]
runpy.run_module("elevate_import_exporter", run_name="__main__", alter_sys=True)
"""


class Exporter(Child):
    """``run`` through CHILD, on a free loopback port; ``trace`` is where its tracemalloc
    report goes (None: no tracemalloc). Stopped with SIGTERM on exit."""

    def __init__(
        self, name: str, args: list[str], logs: Path, tree: Tree, trace: Path | None
    ) -> None:
        self.trace = trace
        port = free_port()
        super().__init__(
            name,
            [*args, "--web.listen-address", f"127.0.0.1:{port}"],
            port,
            "/-/ready",
            logs,
            tree=tree,
            program=("-c", CHILD, str(trace or "")),
        )

    def scrape(self) -> bytes:
        answer = http_get(
            self.port, "/metrics", {"X-Prometheus-Scrape-Timeout-Seconds": "30"}, timeout=90
        )
        if answer.status != 200:
            raise RuntimeError(f"{self.name}: scrape answered {answer.status}")
        return answer.body

    def traced(self, timeout: float = 120.0) -> str:
        assert self.trace is not None
        self.trace.unlink(missing_ok=True)
        Path(str(self.trace) + ".ask").touch()
        deadline = time.monotonic() + timeout
        while not self.trace.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no tracemalloc report within {timeout} s")
            time.sleep(0.2)
        return self.trace.read_text()


@dataclass
class Plan:
    ids: int = 10_000
    registered: int = 8_000  # the rest arrive through the proxy
    feed_s: float = 60.0
    scrape_every: float = 3.0
    settle_scrapes: int = 4
    settle_s: float = 10.0
    singles_share: float = 0.1  # of the registered ids, sent one POST each
    trace: bool = False
    old: str | None = None


@dataclass
class Side:
    """One mixed exporter and the feed it has had."""

    name: str
    exporter: Exporter
    proxy_port: int
    registered: int = 0
    uploaded: int = 0
    scrapes: int = 0
    conn: http.client.HTTPConnection | None = None
    peak_during_feed_kib: int = 0
    notes: list[str] = field(default_factory=list)


def smaps_split(pid: int) -> dict[str, float]:
    """RSS in MB of the process's mappings by kind: heap (brk), malloc thread arenas,
    other anonymous mappings, files; and the count of arenas."""
    kinds = {"heap": 0, "arenas": 0, "anon": 0, "files": 0, "stack": 0}
    arenas = 0
    head: list[str] | None = None
    text = Path(f"/proc/{pid}/smaps").read_text()
    for line in text.splitlines():
        parts = line.split()
        if parts and re.fullmatch(r"[0-9a-f]+-[0-9a-f]+", parts[0]):
            head = parts
            continue
        if head is None or not line.startswith("Rss:"):
            continue
        rss = int(parts[1])
        start, end = (int(x, 16) for x in head[0].split("-"))
        path = head[5] if len(head) > 5 else ""
        if path == "[heap]":
            kinds["heap"] += rss
        elif path.startswith("[stack"):
            kinds["stack"] += rss
        elif path:  # files, and [vdso] and the like
            kinds["files"] += rss
        elif start % ARENA == 0 and end - start <= ARENA and "rw-p" in head[1]:
            # A thread arena's first part: malloc maps 64 MiB aligned and trims it.
            kinds["arenas"] += rss
            arenas += 1
        else:
            kinds["anon"] += rss
    split = {kind: kib / 1024 for kind, kib in kinds.items()}
    split["arena_count"] = arenas
    return split


def memory(pid: int) -> dict[str, Any]:
    threads = int(
        next(
            line.split()[1]
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("Threads:")
        )
    )
    return {
        "settled_mb": status_kib(pid, "VmRSS") / 1024,
        "peak_mb": status_kib(pid, "VmHWM") / 1024,
        "threads": threads,
        "smaps": smaps_split(pid),
    }


def export_tree(rev: str, into: Path) -> Tree:
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", rev, "exporter"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return Tree(name=rev, root=into, exporter=into / "exporter")


# -- the feed -----------------------------------------------------------------------------


def _post(side: Side, ids: list[str], keep_alive: bool) -> None:
    document: Any = [{"id": i} for i in ids] if len(ids) > 1 else {"id": ids[0]}
    body = json.dumps(document).encode()
    if keep_alive:
        if side.conn is None:
            side.conn = http.client.HTTPConnection("127.0.0.1", side.exporter.port, timeout=60)
        conn = side.conn
    else:
        conn = http.client.HTTPConnection("127.0.0.1", side.exporter.port, timeout=60)
    try:
        conn.request("POST", "/api/v1/imports", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        answer = response.read()
    finally:
        if not keep_alive:
            conn.close()
    if response.status not in (200, 201):
        raise RuntimeError(f"{side.name}: registration answered {response.status} {answer!r}")
    side.registered += len(ids)


def _upload(side: Side, index: int) -> None:
    # Over 64 bytes: the simulator answers 202 with a fresh id, which the proxy tracks.
    body = b"<products>" + b"<product id='%d'/>" % index * 20 + b"</products>"
    conn = http.client.HTTPConnection("127.0.0.1", side.proxy_port, timeout=60)
    try:
        conn.request(
            "POST", UPLOAD_PATH, body, {"Api-Key": API_KEY, "Content-Type": "application/xml"}
        )
        response = conn.getresponse()
        response.read()
    finally:
        conn.close()
    if response.status != 202:
        raise RuntimeError(f"{side.name}: upload answered {response.status}")
    side.uploaded += 1


def _registration_work(plan: Plan, rng: random.Random) -> list[tuple[list[str], bool]]:
    """The registrations in order: (ids, over the kept-alive connection)."""
    ids = generated_ids(plan.registered)
    singles = int(plan.registered * plan.singles_share)
    work: list[tuple[list[str], bool]] = []
    at = 0
    while at < plan.registered - singles:
        size = min(rng.randint(1, 1000), plan.registered - singles - at)
        work.append((ids[at : at + size], True))
        at += size
    work += [([i], False) for i in ids[at:]]
    rng.shuffle(work)
    return work


def _paced(items: int, seconds: float, stop: threading.Event) -> Iterator[int]:
    started = time.monotonic()
    for index in range(items):
        wait = started + seconds * index / items - time.monotonic()
        if wait > 0 and stop.wait(wait):
            return
        yield index


def feed(plan: Plan, sides: list[Side]) -> None:
    """Registrations, uploads and scrapes at once; every side gets each step in turn."""
    rng = random.Random(25)
    work = _registration_work(plan, rng)
    uploads = plan.ids - plan.registered
    stop = threading.Event()
    errors: list[BaseException] = []

    def guarded(target: Any) -> Any:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)
                stop.set()

        return run

    def registrations() -> None:
        for index in _paced(len(work), plan.feed_s, stop):
            ids, keep_alive = work[index]
            for side in sides:
                _post(side, ids, keep_alive)

    def proxied() -> None:
        for index in _paced(uploads, plan.feed_s, stop):
            for side in sides:
                _upload(side, index)

    threads = [
        threading.Thread(target=guarded(registrations), name="registrations"),
        threading.Thread(target=guarded(proxied), name="uploads"),
    ]
    for thread in threads:
        thread.start()
    # Scrapes from this thread until the feed is done and every id is final.
    deadline = time.monotonic() + plan.feed_s + 300
    while True:
        if stop.wait(plan.scrape_every):
            break
        done = all(not t.is_alive() for t in threads)
        finals = []
        for side in sides:
            body = side.exporter.scrape()
            side.scrapes += 1
            side.peak_during_feed_kib = status_kib(side.exporter.pid, "VmHWM")
            finals.append(_finals(body))
        if done and all(f >= plan.ids for f in finals):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"ids not all final in time: {finals} of {plan.ids}")
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    for side in sides:
        if side.conn is not None:
            side.conn.close()
            side.conn = None


_SUCCESS = re.compile(
    rb'^elevate_import_status\{id="([^"]+)",[^}]*\bstatus="SUCCESS"[^}]*\} 1\.0$', re.M
)


def _finals(body: bytes) -> int:
    return len(_SUCCESS.findall(body))


def tracked_ids(body: bytes) -> list[str]:
    return sorted(match.decode() for match in _SUCCESS.findall(body))


# -- the run ------------------------------------------------------------------------------


def mixed_args(sim: SimulatorProcess, proxy_port: int, plan: Plan) -> list[str]:
    return [
        "run",
        "--elevate.base-url",
        sim.url,
        "--web.enable-registration",
        "--proxy.listen-address",
        f"127.0.0.1:{proxy_port}",
        *common_args(plan),
    ]


def common_args(plan: Plan) -> list[str]:
    return [
        "--storage.path",
        "",
        "--elevate.min-poll-interval",
        "0s",
        "--imports.max-tracked",
        str(plan.ids * 2),
        "--log.level",
        "warning",
    ]


def start(name: str, args: list[str], logs: Path, tree: Tree, plan: Plan) -> Exporter:
    trace = logs / f"{name}.tracemalloc.txt" if plan.trace else None
    return Exporter(name, args, logs, tree, trace)


def run(plan: Plan, logs: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"plan": plan.__dict__.copy()}
    with contextlib.ExitStack() as stack:
        trees: dict[str, Tree] = {"mixed": WORK_TREE}
        if plan.old:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mixed-old-")))
            trees[f"mixed {plan.old}"] = export_tree(plan.old, folder)
        sim = stack.enter_context(SimulatorProcess(plan.registered, "SUCCESS", 0.0, logs))
        sides = []
        for name, tree in trees.items():
            proxy_port = free_port()
            exporter = stack.enter_context(
                start(name.replace(" ", "-"), mixed_args(sim, proxy_port, plan), logs, tree, plan)
            )
            sides.append(Side(name, exporter, proxy_port))
        began = time.monotonic()
        feed(plan, sides)
        result["feed_s"] = time.monotonic() - began
        ids = tracked_ids(sides[0].exporter.scrape())
        if len(ids) != plan.ids:
            raise RuntimeError(f"the mixed exporter tracks {len(ids)} final ids, not {plan.ids}")
        ids_file = logs / "mixed-ids.txt"
        ids_file.write_text("".join(i + "\n" for i in ids))
        # Each tree's exporter on the same ids from a file: the floor of that tree's
        # mixed case (the store in memory too).
        flags: dict[str, Exporter] = {}
        for name, tree in trees.items():
            flags_name = name.replace("mixed", "flags")
            flags[flags_name] = stack.enter_context(
                start(
                    flags_name.replace(" ", "-"),
                    [
                        "run",
                        "--elevate.base-url",
                        sim.url,
                        "--elevate.import-ids-file",
                        str(ids_file),
                        *common_args(plan),
                    ],
                    logs,
                    tree,
                    plan,
                )
            )
        # Their first rounds ask for all 10,000 (more than one round under tracemalloc).
        deadline = time.monotonic() + 300
        for exporter in flags.values():
            while _finals(exporter.scrape()) < plan.ids:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{exporter.name} did not see every id final in 300 s")
        everyone = {side.name: side.exporter for side in sides} | flags
        for index in range(plan.settle_scrapes):
            names = list(everyone)
            for name in names if index % 2 == 0 else reversed(names):
                body = everyone[name].scrape()
                if _finals(body) != plan.ids:
                    raise RuntimeError(f"{name}: {_finals(body)} final ids, not {plan.ids}")
        time.sleep(plan.settle_s)
        result["exporters"] = {name: memory(e.pid) for name, e in everyone.items()}
        for side in sides:
            result["exporters"][side.name].update(
                registered=side.registered,
                uploaded=side.uploaded,
                scrapes_during_feed=side.scrapes,
                peak_during_feed_mb=side.peak_during_feed_kib / 1024,
            )
        if plan.trace:
            for name, exporter in everyone.items():
                (logs / f"{name.replace(' ', '-')}.top.txt").write_text(exporter.traced())
    for name, mem in result["exporters"].items():
        floor = result["exporters"][name.replace("mixed", "flags")]
        mem["settled_ratio"] = mem["settled_mb"] / floor["settled_mb"]
        mem["peak_ratio"] = mem["peak_mb"] / floor["peak_mb"]
    return result


def report(result: dict[str, Any]) -> str:
    plan = result["plan"]
    lines = [
        f"{plan['ids']:,} ids: {plan['registered']:,} registered, "
        f"{plan['ids'] - plan['registered']:,} uploaded through the proxy, "
        f"fed over {result['feed_s']:.0f} s",
        "",
        "| exporter | settled RSS | ratio | peak RSS | ratio | heap | arenas (n) | other anon"
        " | files | threads |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, mem in result["exporters"].items():
        smaps = mem["smaps"]
        lines.append(
            f"| {name} | {mem['settled_mb']:.0f} MB | {mem['settled_ratio']:.2f} x "
            f"| {mem['peak_mb']:.0f} MB | {mem['peak_ratio']:.2f} x | {smaps['heap']:.0f} MB "
            f"| {smaps['arenas']:.0f} MB ({smaps['arena_count']:.0f}) | {smaps['anon']:.0f} MB "
            f"| {smaps['files']:.0f} MB | {mem['threads']} |"
        )
    mixed = result["exporters"]["mixed"]
    verdict = "PASS" if mixed["settled_ratio"] <= SETTLED_RATIO_LIMIT else "FAIL"
    lines += [
        "",
        "Ratios: each mixed exporter against the flags exporter of the same tree.",
        f"{verdict}: settled RSS, mixed / flags = {mixed['settled_ratio']:.2f} x "
        f"(limit {SETTLED_RATIO_LIMIT} x)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = Plan()
    parser.add_argument("--ids", type=int, default=defaults.ids)
    parser.add_argument("--registered", type=int, default=defaults.registered)
    parser.add_argument("--feed", type=float, default=defaults.feed_s, help="seconds")
    parser.add_argument("--scrape-every", type=float, default=defaults.scrape_every)
    parser.add_argument("--settle-scrapes", type=int, default=defaults.settle_scrapes)
    parser.add_argument("--settle", type=float, default=defaults.settle_s, help="seconds")
    parser.add_argument("--old", help="also feed this commit's exporter, in the same turns")
    parser.add_argument("--trace", action="store_true", help="tracemalloc in every exporter")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of results and logs")
    args = parser.parse_args(argv)
    plan = Plan(
        ids=args.ids,
        registered=args.registered,
        feed_s=args.feed,
        scrape_every=args.scrape_every,
        settle_scrapes=args.settle_scrapes,
        settle_s=args.settle,
        trace=args.trace,
        old=args.old,
    )
    logs = args.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    result = run(plan, logs)
    text = report(result)
    print(text)
    (args.out / "latest.md").write_text(text + "\n")
    (args.out / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["exporters"]["mixed"]["settled_ratio"] <= SETTLED_RATIO_LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
