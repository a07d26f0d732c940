"""HTTP load that any exporter child takes, whatever code it runs: a liveness probe of
``/-/healthy``, simultaneous scrapes, and a CA with web configs for TLS and basic auth.

Nothing here imports the exporter's package, so the side-by-side benchmark can point it
at a tree of another commit.
"""

from __future__ import annotations

import base64
import ssl
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import bcrypt
import trustme
from procs import Client

USER, PASSWORD = "prometheus", "bench-password"


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
