"""The standalone ``elevate-import-exporter proxy`` command as a child process, for every test
that runs it: one way to start it (``Proxies``), one handle on it (``ProxyProcess``).

Its feed port takes the uploads; its web port has /metrics, /-/healthy and /-/ready. Its
stderr goes to a file under the test's tmp_path, read at will.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from elevate_import_exporter.settings.options import PROXY_OPTIONS, REGISTRATION_PASSWORD_ENV
from tests.conftest import REPO, exporter_env
from tests.support import Scrape, free_port, stop_process, wait_until

LABEL_HEADER = "X-Feed-Name"

WAITING = "elevate_import_proxy_registrations_waiting"
DELIVERED = "elevate_import_proxy_registrations_delivered_total"
RETRIES = "elevate_import_proxy_registration_retries_total"
DROPPED = "elevate_import_proxy_registrations_dropped_total"


@dataclass
class ProxyProcess:
    """``elevate-import-exporter proxy`` in a child process; stderr in a file."""

    process: subprocess.Popen[bytes]
    feed_port: int
    web_url: str
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        """The JSON lines of stderr (a proxy started with ``--log.format json``)."""
        lines = []
        for line in self.stderr().splitlines():
            with contextlib.suppress(ValueError):
                document = json.loads(line)
                if isinstance(document, dict):
                    lines.append(document)
        return lines

    def warnings(self) -> list[str]:
        return [line["msg"] for line in self.log_lines() if line.get("level") == "warning"]

    def get(self, path: str, timeout: float = 30.0) -> tuple[int, str]:
        """Status and text of a GET on the web port; an error status is an answer too."""
        try:
            with urllib.request.urlopen(self.web_url + path, timeout=timeout) as response:
                return response.status, response.read().decode("utf-8")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode("utf-8", "replace")

    def ready_status(self) -> int | None:
        """What /-/ready answers; None if the web port does not answer at all. A proxy that
        has exited fails the test: nothing it could answer is worth waiting for."""
        if self.process.poll() is not None:
            pytest.fail(f"the proxy exited with {self.process.returncode}:\n{self.stderr()}")
        try:
            return self.get("/-/ready", timeout=10)[0]
        except OSError:
            return None

    def wait_ready(self, status: int = 200, timeout: float = 40.0) -> None:
        wait_until(
            lambda: self.ready_status() == status,
            timeout=timeout,
            interval=0.1,
            what=f"/-/ready at {self.web_url} to answer {status}",
        )

    def metrics(self) -> Scrape:
        status, text = self.get("/metrics")
        assert status == 200, text
        return Scrape(text)

    def value(self, name: str, **labels: str) -> float:
        """A sample of the proxy's metrics; a series that is not there fails the test."""
        found = self.metrics().value(name, **labels)
        assert found is not None, f"the proxy publishes no {name} {labels or ''}"
        return found

    def dropped(self) -> float:
        return sum(self.metrics().series(DROPPED).values())

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(30)


class Proxies:
    """Standalone proxies started by a test, all ended when it ends.

    ``label_header`` and ``log_format`` are passed as flags unless None (then the proxy's
    defaults hold, which a test may be about). ``grace`` None kills the proxies at the end;
    a number sends SIGTERM and kills only those still draining after that many seconds.
    """

    def __init__(
        self,
        folder: Path,
        *,
        label_header: str | None = LABEL_HEADER,
        log_format: str | None = "json",
        grace: float | None = None,
    ) -> None:
        self._folder = folder
        self._label_header = label_header
        self._log_format = log_format
        self._grace = grace
        self._started: list[ProxyProcess] = []

    def start(
        self,
        elevate_url: str,
        registration_url: str,
        *extra: str,
        ready: int | None = 200,
    ) -> ProxyProcess:
        """A proxy in front of ``elevate_url`` handing ids to ``registration_url``; returned
        once /-/ready answers ``ready`` (at once if None)."""
        feed_port, web_port = free_port(), free_port()
        argv = [
            sys.executable,
            "-m",
            "elevate_import_exporter",
            "proxy",
            "--proxy.listen-address",
            f"127.0.0.1:{feed_port}",
            "--web.listen-address",
            f"127.0.0.1:{web_port}",
            "--elevate.base-url",
            elevate_url,
            "--registration.url",
            registration_url,
        ]
        if self._label_header is not None:
            argv += ["--proxy.label-header", self._label_header]
        if self._log_format is not None:
            argv += ["--log.format", self._log_format]
        argv += extra
        # A proxy is stateless: no store, and no key of its own (the feed's is forwarded);
        # nothing from the environment configures it behind the test's flags.
        env = exporter_env()
        for name in (
            "ELEVATE_EXPORTER_STORAGE_PATH",
            *(option.env for option in PROXY_OPTIONS),
            REGISTRATION_PASSWORD_ENV,
        ):
            env.pop(name, None)
        stderr_path = self._folder / f"proxy-{len(self._started)}.stderr"
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                argv,
                env=env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        proxy = ProxyProcess(process, feed_port, f"http://127.0.0.1:{web_port}", stderr_path)
        self._started.append(proxy)
        if ready is not None:
            proxy.wait_ready(ready)
        return proxy

    def stop_all(self) -> None:
        for proxy in self._started:
            if self._grace is not None:
                stop_process(proxy.process, grace=self._grace)
            elif proxy.process.poll() is None:
                proxy.kill()


ProxyFor = Callable[..., ProxyProcess]


@pytest.fixture
def proxy_process(tmp_path: Path) -> Iterator[ProxyFor]:
    """``Proxies.start`` for a proxy on its defaults (label header, log format), each
    stopped with SIGTERM at the end and given a minute to drain."""
    proxies = Proxies(tmp_path, label_header=None, log_format=None, grace=60)
    yield proxies.start
    proxies.stop_all()
