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

import base64
import contextlib
import selectors
import socket
import ssl
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import bcrypt
import trustme
from procs import (
    Client,
    ExporterProcess,
    SimulatorProcess,
    generated_ids,
)

from elevate_import_exporter.site.web import HEADER_TIMEOUT, MAX_CONNECTIONS, MAX_THREADS

USER, PASSWORD = "prometheus", "bench-password"
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


@dataclass(frozen=True)
class Pki:
    folder: Path
    ca: Path

    def client(self, *, auth: bool) -> Client:
        context = ssl.create_default_context(cafile=str(self.ca))
        if not auth:
            return Client(context)
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        return Client(context, (("Authorization", f"Basic {token}"),))


def make_pki(folder: Path) -> Pki:
    """CA, server certificate and two web configs: TLS with basic auth, and TLS alone."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.private_key_and_cert_chain_pem.write_to_path(str(folder / "server.pem"))
    server.private_key_pem.write_to_path(str(folder / "server.key"))
    tls = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
    # Cost 4, the lowest: the bench measures the server, not bcrypt (checks are cached).
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    (folder / "web-config.yml").write_text(
        f"{tls}basic_auth_users:\n  {USER}: '{hashed}'\n", encoding="utf-8"
    )
    (folder / "web-config-tls.yml").write_text(tls, encoding="utf-8")
    return Pki(folder, folder / "ca.pem")


class Served(Protocol):
    """An exporter child, however started: where it listens and how to reach it."""

    @property
    def client(self) -> Client: ...

    @property
    def port(self) -> int: ...


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


class HealthProbe(threading.Thread):
    """``/-/healthy`` every ``every`` seconds on a new connection; latencies and failures."""

    def __init__(self, exporter: Served, every: float, limit: int | None = None):
        super().__init__(daemon=True)
        self.exporter, self.every, self.limit = exporter, every, limit
        self.seconds: list[float] = []
        self.failures: list[str] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        n = 0
        while not self._stop_event.is_set() and (self.limit is None or n < self.limit):
            began = time.perf_counter()
            try:
                answer = self.exporter.client.get(self.exporter.port, "/-/healthy", timeout=10.0)
                if answer.status == 200:
                    self.seconds.append(time.perf_counter() - began)
                else:
                    self.failures.append(f"status {answer.status}")
            except OSError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            n += 1
            self._stop_event.wait(max(0.0, start + n * self.every - time.monotonic()))

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def latency_summary(seconds: list[float]) -> dict[str, float | None]:
    if not seconds:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * p99,
        "max_ms": 1000 * ordered[-1],
    }


# -- the stalled connections ------------------------------------------------------------------


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


def scrape_all(exporter: Served, count: int) -> list[tuple[int | str, float]]:
    """``count`` scrapes at once, each on its own connection: status (or error) and seconds."""
    barrier = threading.Barrier(count)
    results: list[tuple[int | str, float]] = [("not run", 0.0)] * count

    def one(index: int) -> None:
        barrier.wait(timeout=30)
        began = time.perf_counter()
        try:
            answer = exporter.client.get(
                exporter.port,
                "/metrics",
                {"X-Prometheus-Scrape-Timeout-Seconds": "10", "Accept": "text/plain"},
                timeout=60.0,
            )
            results[index] = (answer.status, time.perf_counter() - began)
        except OSError as exc:
            results[index] = (f"{type(exc).__name__}", time.perf_counter() - began)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


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
