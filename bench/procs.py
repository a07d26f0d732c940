"""Processes of the benchmark: the simulator and the exporter as child processes.

Everything listens on loopback only. Each child's output goes to a log file under
``bench/results/logs`` so a failed run can be read afterwards.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

REPO = Path(__file__).resolve().parent.parent
API_KEY = "bench-key"
FIRST_GENERATED_ID = 7_000_000_000_000_000_000
FIRST_LIVE_ID = 8_000_000_000_000_000_000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Tree:
    """Which code a child process runs: ``exporter`` is put first on PYTHONPATH (None: the
    package installed in this interpreter, the work tree's); ``root`` is the child's working
    directory. Children are driven only through the command line and HTTP, so a tree of
    another commit, with other module paths inside, runs the same way."""

    name: str = "work tree"
    root: Path = REPO
    exporter: Path | None = None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["ELEVATE_API_KEY"] = API_KEY
        if self.exporter is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                [str(self.exporter), *filter(None, [env.get("PYTHONPATH")])]
            )
        return env


WORK_TREE = Tree()


def generated_ids(n: int) -> list[str]:
    """The ids ``simulate --generate-imports`` serves, in order."""
    return [str(FIRST_GENERATED_ID + i) for i in range(n)]


def live_ids(n: int) -> list[str]:
    """Ids the simulator answers IN_PROGRESS for ever when started with ``live=n``."""
    return [str(FIRST_LIVE_ID + i) for i in range(n)]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far, from /proc (no psutil needed)."""
    text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    # The command name may hold spaces and parentheses: count fields after the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


def status_kib(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/PID/status, e.g. VmHWM (peak RSS) or VmRSS."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    seconds: float


def http_get(
    port: int,
    path: str,
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
    tls: ssl.SSLContext | None = None,
) -> Answer:
    """One GET on a fresh connection; the time covers connect, TLS handshake (with ``tls``),
    request and the whole body."""
    started = time.perf_counter()
    conn = (
        http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        if tls is None
        else http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=tls)
    )
    try:
        # http.client sends Accept-Encoding: identity, so the exporter never gzips.
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    return Answer(response.status, body, time.perf_counter() - started)


def http_post(port: int, path: str, timeout: float = 10.0) -> Answer:
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=b"")
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    return Answer(response.status, body, time.perf_counter() - started)


@dataclass(frozen=True)
class Client:
    """How to reach a child: plain HTTP, or TLS with this context; extra headers (auth)."""

    tls: ssl.SSLContext | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def get(
        self, port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 60.0
    ) -> Answer:
        return http_get(port, path, {**dict(self.headers), **(headers or {})}, timeout, self.tls)


PLAIN = Client()


def _wait_for(
    port: int, path: str, what: str, proc: subprocess.Popen[bytes], client: Client = PLAIN
) -> None:
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} before it served")
        with contextlib.suppress(OSError):
            if client.get(port, path, timeout=2.0).status == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not answer {path} within 30 s")


class Child:
    """A child process serving HTTP on a loopback port; stopped on exit, killed if it must."""

    def __init__(
        self,
        name: str,
        args: list[str],
        port: int,
        ready_path: str,
        logs: Path,
        client: Client = PLAIN,
        tree: Tree = WORK_TREE,
        program: tuple[str, ...] = ("-m", "elevate_import_exporter"),
    ):
        self.name = name
        self.port = port
        self.client = client
        self.tree = tree
        logs.mkdir(parents=True, exist_ok=True)
        self._log = (logs / f"{name}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, *program, *args],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=tree.env(),
            cwd=tree.root,
        )
        try:
            _wait_for(port, ready_path, name, self.proc, client)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class SimulatorProcess(Child):
    """The ``simulate`` command with generated imports that hold one status, and ``live``
    more (ids from :func:`live_ids`) that stay IN_PROGRESS."""

    def __init__(
        self,
        imports: int,
        status: str,
        latency: float,
        logs: Path,
        *,
        live: int = 0,
        tree: Tree = WORK_TREE,
    ) -> None:
        port = free_port()
        scenario: list[str] = []
        if live:
            logs.mkdir(parents=True, exist_ok=True)
            path = logs / f"live-{live}.json"
            steps = [{"status": "IN_PROGRESS"}]
            path.write_text(json.dumps([{"id": i, "steps": steps} for i in live_ids(live)]))
            scenario = ["--scenario", str(path)]
        super().__init__(
            f"simulator-{imports}-{status}{f'-{live}live' if live else ''}-{latency:g}s",
            [
                "simulate",
                *scenario,
                "--web.listen-address",
                f"127.0.0.1:{port}",
                "--generate-imports",
                str(imports),
                "--generated-status",
                status,
                "--latency",
                str(latency),
                "--log.level",
                "warning",
            ],
            port,
            "/-/healthy",
            logs,
            tree=tree,
        )
        self.latency = latency

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests_total(self) -> int:
        answer = http_get(self.port, "/-/sim/stats", timeout=10.0)
        total: int = json.loads(answer.body)["requests_total"]
        return total

    def reset(self) -> None:
        if http_post(self.port, "/-/sim/reset").status != 200:
            raise RuntimeError("the simulator refused POST /-/sim/reset")


class ExporterProcess(Child):
    """``python -m elevate_import_exporter run`` tracking ids from a file, against a simulator.

    ``extra_args`` go after the usual ones (``--web.config.file``, say); ``client`` is how
    the bench reaches it then (TLS context, credentials), for readiness and scrapes alike.
    """

    def __init__(
        self,
        sim: SimulatorProcess,
        ids: list[str],
        concurrency: int,
        logs: Path,
        *,
        extra_args: Sequence[str] = (),
        client: Client = PLAIN,
        label: str = "",
        tree: Tree = WORK_TREE,
    ):
        port = free_port()
        logs.mkdir(parents=True, exist_ok=True)
        ids_file = logs / f"ids-{len(ids)}.txt"
        ids_file.write_text("".join(i + "\n" for i in ids), encoding="ascii")
        super().__init__(
            f"exporter-{len(ids)}ids-c{concurrency}-{sim.latency:g}s{label}",
            [
                "run",
                "--elevate.base-url",
                sim.url,
                "--elevate.import-ids-file",
                str(ids_file),
                "--elevate.concurrency",
                str(concurrency),
                # Every scrape is measured as a poll round, as with the default of old.
                "--elevate.min-poll-interval",
                "0s",
                "--web.listen-address",
                f"127.0.0.1:{port}",
                "--log.level",
                "warning",
                # In memory: the default file under the working directory would be shared
                # by every exporter of the run, and by the next run.
                "--storage.path",
                "",
                *extra_args,
            ],
            port,
            "/-/ready",
            logs,
            client,
            tree,
        )

    def scrape(self, timeout: float = 30.0) -> Answer:
        """A scrape as Prometheus sends it, with a scrape timeout the round may use."""
        answer = self.client.get(
            self.port,
            "/metrics",
            {"X-Prometheus-Scrape-Timeout-Seconds": f"{timeout:g}", "Accept": "text/plain"},
            timeout=timeout + 30.0,
        )
        if answer.status != 200:
            raise RuntimeError(f"scrape answered {answer.status}: {answer.body[:200]!r}")
        return answer


def is_up(body: bytes) -> bool:
    """Whether the scrape's poll got a valid answer for every id it queried."""
    return b"\nelevate_import_up 1.0\n" in body
