"""The import proxy (issue 13): upload throughput through it against a direct upload, the
latency it adds to small requests, and its memory while a large feed streams through.

The upstream is the ``simulate`` command, which reads every import body and hashes it;
the client is this process, sending a body made up on the fly in 1 MiB blocks. Direct and
proxied uploads take turns, so drift of the machine weighs on both alike.
"""

from __future__ import annotations

import http.client
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from procs import (
    API_KEY,
    REPO,
    WORK_TREE,
    Child,
    SimulatorProcess,
    Tree,
    cpu_seconds,
    free_port,
    status_kib,
)

MIB = 1024 * 1024
THROUGHPUT_RATIO_LIMIT = 0.8
RSS_GROWTH_LIMIT_MB = 50.0
IMPORT_PATH = "/api/v2/import/products"
STATUS_PATH = "/api/v2/import/status/5537431447739019570"

# The proxy alone in a process: the class the exporter runs for --proxy.listen-address,
# with a register callback that only counts.
PROXY_CHILD = """
import sys
from elevate_import_exporter.proxy.server import ImportProxy

proxy = ImportProxy(
    [("127.0.0.1", int(sys.argv[2]))], sys.argv[1],
    register=lambda registrations, source: [True] * len(registrations),
    timeout=600, label_header="X-Feed-Name",
)
print("ready", flush=True)
proxy.serve_forever()
"""


@dataclass
class ProxyPlan:
    upload_mb: int = 500
    upload_rounds: int = 9
    small_requests: int = 500


PROXY_QUICK = ProxyPlan(upload_mb=500, upload_rounds=5, small_requests=200)


class ProxyChild:
    """PROXY_CHILD forwarding to ``upstream`` from a free loopback port."""

    def __init__(self, upstream: str, logs: Path) -> None:
        self.port = free_port()
        logs.mkdir(parents=True, exist_ok=True)
        self._log = (logs / "proxy.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PROXY_CHILD, upstream, str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=REPO,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != b"ready":
            self.stop()
            raise RuntimeError("the proxy did not start; see proxy.log")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self._log.close()


class ProxyExporter(Child):
    """``run --proxy.listen-address``: the exporter with its import proxy, as an operator
    starts it, from any tree. Ids the proxy registers are only polled at a scrape, and
    nothing scrapes it: the process does the proxy's work alone."""

    def __init__(self, upstream: str, logs: Path, tree: Tree = WORK_TREE) -> None:
        self.proxy_port = free_port()
        web_port = free_port()
        super().__init__(
            f"proxy-exporter-{tree.name}".replace(" ", "-"),
            [
                "run",
                "--elevate.base-url",
                upstream,
                "--proxy.listen-address",
                f"127.0.0.1:{self.proxy_port}",
                "--web.listen-address",
                f"127.0.0.1:{web_port}",
                "--storage.path",
                "",
                "--log.level",
                "warning",
            ],
            web_port,
            "/-/ready",
            logs,
            tree=tree,
        )


class RssSampler(threading.Thread):
    """VmRSS of a process every ``every`` seconds until stopped; keeps the largest, in MB.

    VmHWM would say the same for one upload, but only since the process began; a sampled
    peak can be taken over any stretch of a process that has served before."""

    def __init__(self, pid: int, every: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak_mb = status_kib(pid, "VmRSS") / 1024
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.every):
            self.peak_mb = max(self.peak_mb, status_kib(self.pid, "VmRSS") / 1024)
            self.samples += 1

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        return self.peak_mb


def upload(port: int, megabytes: int) -> tuple[int, float]:
    """One upload of ``megabytes`` MiB with Content-Length: its status and seconds, from
    the request's first byte to the whole answer."""
    block = bytearray(b"<product>" * (MIB // 9) + b"x" * (MIB % 9))
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.putrequest("POST", IMPORT_PATH)
        conn.putheader("Api-Key", API_KEY)
        conn.putheader("Content-Length", str(megabytes * MIB))
        conn.endheaders()
        for index in range(megabytes):
            block[:8] = index.to_bytes(8, "big")
            conn.send(block)
        response = conn.getresponse()
        response.read()
    finally:
        conn.close()
    return response.status, time.perf_counter() - started


def small_request(port: int) -> float:
    """Seconds for one status request on a new connection, as a feed job's poll sends it."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", STATUS_PATH, headers={"Api-Key": API_KEY})
        response = conn.getresponse()
        response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"a status request answered {response.status}")
    return time.perf_counter() - started


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def proxy_bench(plan: ProxyPlan, logs: Path) -> dict[str, Any]:
    with SimulatorProcess(0, "IN_PROGRESS", 0.0, logs) as sim:
        proxy = ProxyChild(sim.url, logs)
        try:
            result: dict[str, Any] = {"upload_mb": plan.upload_mb}
            result["rss_at_start_mb"] = status_kib(proxy.pid, "VmRSS") / 1024
            small_request(proxy.port)  # threads and buffers in place
            result["rss_before_mb"] = status_kib(proxy.pid, "VmHWM") / 1024
            result.update(_throughput(plan, sim.port, proxy))
            result["peak_rss_mb"] = status_kib(proxy.pid, "VmHWM") / 1024
            result.update(_latency(plan, sim.port, proxy.port))
        finally:
            proxy.stop()
    result["rss_growth_mb"] = result["peak_rss_mb"] - result["rss_before_mb"]
    return result


def _throughput(plan: ProxyPlan, direct_port: int, proxy: ProxyChild) -> dict[str, Any]:
    times: dict[str, list[float]] = {"direct": [], "proxy": []}
    cpu = 0.0
    for _ in range(plan.upload_rounds):
        for side, port in (("direct", direct_port), ("proxy", proxy.port)):
            before = cpu_seconds(proxy.pid)
            status, seconds = upload(port, plan.upload_mb)
            if side == "proxy":
                cpu += cpu_seconds(proxy.pid) - before
            if status != 202:
                raise RuntimeError(f"a {side} upload answered {status}")
            times[side].append(seconds)
    direct, proxied = statistics.median(times["direct"]), statistics.median(times["proxy"])
    return {
        "upload_rounds": plan.upload_rounds,
        "direct_s": times["direct"],
        "proxy_s": times["proxy"],
        "direct_mib_per_s": plan.upload_mb / direct,
        "proxy_mib_per_s": plan.upload_mb / proxied,
        "throughput_ratio": direct / proxied,
        "proxy_cpu_s_per_upload": cpu / plan.upload_rounds,
    }


def _latency(plan: ProxyPlan, direct_port: int, proxy_port: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {"direct": [], "proxy": []}
    for _ in range(plan.small_requests):
        samples["direct"].append(small_request(direct_port))
        samples["proxy"].append(small_request(proxy_port))
    out: dict[str, Any] = {"small_requests": plan.small_requests}
    for side, values in samples.items():
        out[f"{side}_p50_ms"] = 1000 * percentile(values, 0.5)
        out[f"{side}_p99_ms"] = 1000 * percentile(values, 0.99)
    out["added_p50_ms"] = out["proxy_p50_ms"] - out["direct_p50_ms"]
    out["added_p99_ms"] = out["proxy_p99_ms"] - out["direct_p99_ms"]
    return out


def proxy_targets(proxy: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "target": f"proxy: upload throughput of {proxy['upload_mb']} MiB vs direct",
            "measured": f"{proxy['throughput_ratio']:.2f} x ({proxy['proxy_mib_per_s']:.0f} vs "
            f"{proxy['direct_mib_per_s']:.0f} MiB/s)",
            "limit": f">= {THROUGHPUT_RATIO_LIMIT} x",
            "ok": proxy["throughput_ratio"] >= THROUGHPUT_RATIO_LIMIT,
        },
        {
            "target": f"proxy: peak RSS growth while {proxy['upload_mb']} MiB stream through",
            "measured": f"{proxy['rss_growth_mb']:.1f} MB",
            "limit": f"< {RSS_GROWTH_LIMIT_MB:g} MB",
            "ok": proxy["rss_growth_mb"] < RSS_GROWTH_LIMIT_MB,
        },
    ]


def proxy_section(proxy: dict[str, Any], table: Any) -> list[str]:
    def ms(key: str) -> str:
        return f"{proxy[key]:.2f}"

    return [
        f"The import proxy (the ImportProxy class alone in a process, forwarding to the "
        f"simulator, which reads and hashes every body): {proxy['upload_mb']} MiB uploads "
        f"with Content-Length, direct and through the proxy in turns, "
        f"{proxy['upload_rounds']} each (median); {proxy['small_requests']} small status "
        "requests each way, a new connection each (the proxy opens a new one to the upstream "
        "for each request too).",
        "",
        table(
            ["", "direct (floor)", "through the proxy", "ratio / added"],
            [
                [
                    "upload MiB/s",
                    f"{proxy['direct_mib_per_s']:.0f}",
                    f"{proxy['proxy_mib_per_s']:.0f}",
                    f"{proxy['throughput_ratio']:.2f}",
                ],
                [
                    "small request p50 ms",
                    ms("direct_p50_ms"),
                    ms("proxy_p50_ms"),
                    ms("added_p50_ms"),
                ],
                [
                    "small request p99 ms",
                    ms("direct_p99_ms"),
                    ms("proxy_p99_ms"),
                    ms("added_p99_ms"),
                ],
            ],
        ),
        "",
        f"Proxy process RSS: {proxy['rss_at_start_mb']:.1f} MB at start, peak "
        f"{proxy['peak_rss_mb']:.1f} MB (growth {proxy['rss_growth_mb']:.1f} MB over the "
        f"uploads); proxy CPU per {proxy['upload_mb']} MiB upload "
        f"{proxy['proxy_cpu_s_per_upload']:.2f} s.",
    ]
