"""The HTTP side under load (issue 10): threads, open files, health latency, scrapes, cuts.

A real exporter process serves TLS with basic auth (certificates made by trustme, a bcrypt
hash of low cost, all under bench/results/web) in front of a simulator with active imports.
At once: simultaneous scrapes, connections that finish TLS and then send half a request
line (``GET /metr``) and stop, and connections that never finish their TLS handshake (TCP
only, or half a ClientHello); all the while ``/-/healthy`` is asked every 50 ms over TLS
with credentials, on a new connection each time as a liveness probe does. Threads and open
files of the process are sampled from /proc. Everything on loopback, bounded in count; the
stalled connections are watched until the server closes them, at most the header timeout
plus a margin.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from httpload import HealthProbe, latency_summary, make_pki, scrape_all
from procs import ExporterProcess, SimulatorProcess, generated_ids

from elevate_import_exporter.site.web import HEADER_TIMEOUT, MAX_CONNECTIONS, MAX_THREADS

# Threads besides the handler and poll workers: the main thread (the accept loop), the
# first poll round's (gone once it has ended) and the reaper of request deadlines.
FIXED_THREADS = 3
# A ClientHello cut short: record header and the start of the handshake message.
PARTIAL_CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
SAMPLE_EVERY = 0.02
# Past the header timeout, how long the stalled connections are watched for their close.
CUT_MARGIN = 5.0


@dataclass
class WebPlan:
    imports: int = 1000
    latency: float = 0.1
    concurrency: int = 32
    scrapes: int = 50
    half_open: int = 300
    stalled_handshakes: int = 100
    health_every: float = 0.05
    idle_probes: int = 60  # the floor: the same probes before the load
    compare_imports: int = 1000  # TLS against plain: finished imports, the same answer
    compare_rounds: int = 3
    # Per round and side: a scrape costs a few ms of CPU, /proc counts in 10 ms ticks.
    compare_scrapes: int = 20


WEB_QUICK = WebPlan(
    scrapes=20, half_open=100, stalled_handshakes=30, idle_probes=30, compare_rounds=2
)


def thread_bound(concurrency: int) -> int:
    return MAX_THREADS + concurrency + FIXED_THREADS


# -- sampling and probing ---------------------------------------------------------------------


class Sampler(threading.Thread):
    """Threads and open files of a process, from /proc, until stopped; keeps the maxima."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.max_threads = self.max_fds = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(SAMPLE_EVERY):
            threads, fds = process_counts(self.pid)
            self.max_threads = max(self.max_threads, threads)
            self.max_fds = max(self.max_fds, fds)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def process_counts(pid: int) -> tuple[int, int]:
    """Threads (``Threads:`` of /proc/PID/status) and open files (/proc/PID/fd)."""
    threads = 0
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("Threads:"):
            threads = int(line.split()[1])
    return threads, len(list(Path(f"/proc/{pid}/fd").iterdir()))


@contextlib.contextmanager
def stalled_connections(
    port: int, context: ssl.SSLContext, half_open: int, handshakes: int
) -> Iterator[list[tuple[socket.socket, float, str]]]:
    """Open them all; each is (socket, opened at, kind); all closed at the end."""
    opened: list[tuple[socket.socket, float, str]] = []
    try:
        for _ in range(half_open):
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock: socket.socket = context.wrap_socket(raw, server_hostname="127.0.0.1")
            sock.sendall(b"GET /metr")
            opened.append((sock, time.monotonic(), "half-open"))
        for n in range(handshakes):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            if n % 2:
                sock.sendall(PARTIAL_CLIENT_HELLO)
            opened.append((sock, time.monotonic(), "handshake"))
        yield opened
    finally:
        for sock, _at, _kind in opened:
            sock.close()


def watch_cuts(opened: list[tuple[socket.socket, float, str]], until: float) -> dict[str, Any]:
    """Wait until the server has closed every connection, or ``until``; seconds each lived."""
    lived: dict[str, list[float]] = {"half-open": [], "handshake": []}
    with selectors.DefaultSelector() as selector:
        for entry in opened:
            entry[0].setblocking(False)
            selector.register(entry[0], selectors.EVENT_READ, entry)
        left = len(opened)
        while left and time.monotonic() < until:
            for key, _events in selector.select(max(0.0, until - time.monotonic())):
                sock, at, kind = key.data
                if _closed(sock):
                    lived[kind].append(time.monotonic() - at)
                    selector.unregister(sock)
                    left -= 1
    return {
        kind: {"cut": len(times), "max_s": max(times, default=None)}
        for kind, times in lived.items()
    }


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096) == b""
    except (ssl.SSLWantReadError, BlockingIOError):
        return False
    except OSError:  # reset, or TLS ended without close_notify
        return True


# -- the load --------------------------------------------------------------------------------


def web_load(plan: WebPlan, results_dir: Path, logs: Path) -> dict[str, Any]:
    pki = make_pki(results_dir / "web")
    client = pki.client(auth=True)
    config = ["--web.config.file", str(pki.folder / "web-config.yml")]
    result: dict[str, Any] = {
        "imports": plan.imports,
        "latency_ms": plan.latency * 1000,
        "concurrency": plan.concurrency,
        "scrapes": plan.scrapes,
        "half_open": plan.half_open,
        "stalled_handshakes": plan.stalled_handshakes,
        "health_auth": "basic auth on every probe (not exempt)",
        "thread_bound": thread_bound(plan.concurrency),
        "connection_bound": MAX_CONNECTIONS,
        "header_timeout_s": HEADER_TIMEOUT,
    }
    with (
        SimulatorProcess(plan.imports, "IN_PROGRESS", plan.latency, logs) as sim,
        ExporterProcess(
            sim,
            generated_ids(plan.imports),
            plan.concurrency,
            logs,
            extra_args=config,
            client=client,
            label="-tls-auth",
        ) as exporter,
    ):
        result["idle_threads"], result["idle_fds"] = process_counts(exporter.pid)
        idle = HealthProbe(exporter, plan.health_every, limit=plan.idle_probes)
        idle.start()
        idle.join()
        result["health_idle"] = latency_summary(idle.seconds)
        sampler = Sampler(exporter.pid)
        sampler.start()
        probe = HealthProbe(exporter, plan.health_every)
        context = ssl.create_default_context(cafile=str(pki.ca))
        with stalled_connections(
            exporter.port, context, plan.half_open, plan.stalled_handshakes
        ) as stalled:
            probe.start()
            began = time.monotonic()
            scrapes = scrape_all(exporter, plan.scrapes)
            result["scrapes_s"] = time.monotonic() - began
            cuts = watch_cuts(stalled, stalled[0][1] + HEADER_TIMEOUT + CUT_MARGIN)
        probe.stop()
        sampler.stop()
    result["max_threads"], result["max_fds"] = sampler.max_threads, sampler.max_fds
    result["health_load"] = latency_summary(probe.seconds)
    result["health_probes"] = len(probe.seconds) + len(probe.failures)
    result["health_failures"] = probe.failures[:10]
    result["health_failed"] = len(probe.failures)
    ok = [s for status, s in scrapes if status == 200]
    busy = [s for status, s in scrapes if status == 503]
    result["scrapes_200"], result["scrapes_503"] = len(ok), len(busy)
    result["scrape_200_max_s"] = max(ok, default=None)
    result["scrape_503_max_s"] = max(busy, default=None)
    result["scrape_other"] = [str(status) for status, _s in scrapes if status not in (200, 503)]
    result["cuts"] = cuts
    return result
