"""The exporter's Application in a child process that also answers what only the object
knows: ``Application.renders``, the answers to /metrics it has built.

Run as a script, it builds the application from ``load_settings`` options given as JSON,
serves, prints the port once ready, then prints the render count for every line read
from stdin. :class:`AppChild` is the parent's side.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from procs import API_KEY, PLAIN, REPO, Answer, Client, SimulatorProcess

HERE = Path(__file__).resolve().parent


class AppChild:
    """This script as a child process, serving on a loopback port; stopped on exit."""

    client: Client = PLAIN

    def __init__(self, name: str, options: dict[str, Any], logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self._log = (logs / f"{name}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=dict(os.environ, ELEVATE_API_KEY=API_KEY),
            cwd=REPO,
            text=True,
        )
        try:
            self.port: int = self._answer()["port"]
        except BaseException:
            self.stop()
            raise

    @classmethod
    def for_simulator(
        cls, sim: SimulatorProcess, ids: list[str], concurrency: int, logs: Path
    ) -> AppChild:
        ids_file = logs / f"ids-{len(ids)}.txt"
        logs.mkdir(parents=True, exist_ok=True)
        ids_file.write_text("".join(i + "\n" for i in ids), encoding="ascii")
        options = {
            "base_url": sim.url,
            "api_key": API_KEY,
            "ids_file": str(ids_file.resolve()),
            "concurrency": concurrency,
            "min_poll_interval": "0s",
            "listen_address": "127.0.0.1:0",
            "storage_path": None,
        }
        return cls(f"app-{len(ids)}ids-c{concurrency}", options, logs)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def renders(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write("renders\n")
        self.proc.stdin.flush()
        count: int = self._answer()["renders"]
        return count

    def scrape(self, timeout: float = 30.0) -> Answer:
        answer = self.client.get(
            self.port,
            "/metrics",
            {"X-Prometheus-Scrape-Timeout-Seconds": f"{timeout:g}", "Accept": "text/plain"},
            timeout=timeout + 30.0,
        )
        if answer.status != 200:
            raise RuntimeError(f"scrape answered {answer.status}: {answer.body[:200]!r}")
        return answer

    def _answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"app_child.py ended with status {self.proc.wait(30)}; see logs")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def stop(self) -> None:
        if self.proc.poll() is None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # the child stops at the end of its input
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
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


def main() -> None:
    from elevate_import_exporter.app import Application
    from elevate_import_exporter.settings.config import load_settings

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    settings = load_settings(**json.loads(sys.argv[1]))
    app = Application(settings)
    try:
        app.start()
        if not app.wait_ready(120):
            raise RuntimeError("the first poll round did not end within 120 s")
        print(json.dumps({"port": app.port}), flush=True)
        for _line in sys.stdin:
            print(json.dumps({"renders": app.renders}), flush=True)
    finally:
        started = time.monotonic()
        app.stop()
        logging.getLogger("app_child").info("stopped in %.1f s", time.monotonic() - started)


if __name__ == "__main__":
    main()
