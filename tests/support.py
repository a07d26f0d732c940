"""Helpers shared by the tests: outside tools, free ports, polling."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

if TYPE_CHECKING:
    from elevate_import_exporter.polling.poller import Snapshot

T = TypeVar("T")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing(reason: str) -> None:
    """Skip on a developer's laptop, but fail in CI, where every tool must be there."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true, so this is a failure, not a skip)")
    pytest.skip(reason)


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing(f"{name} is not installed")
        raise AssertionError("unreachable")
    return path


def post_json(url: str, document: object, timeout: float = 30.0) -> tuple[int, str]:
    """Status and text of a POST of ``document`` as JSON; an error status is an answer too."""
    request = urllib.request.Request(
        url, data=json.dumps(document).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8", "replace")


def answers_200(url: str) -> bool:
    """Whether ``url`` answers 200 now: a readiness probe to poll."""
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def prometheus_api(base: str, path: str, **params: str) -> Any:
    """The ``data`` of a Prometheus HTTP API answer (``/api/v1/<path>``); an error answer
    fails the test with Prometheus' own words."""
    url = f"{base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            body = json.load(answer)
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{url}: {exc.code} {exc.read().decode()}") from exc
    assert body["status"] == "success", body
    return body["data"]


def assert_promtool_approves(promtool: str, text: str) -> None:
    """``promtool check metrics`` passes ``text`` (an exposition) without a word: no error,
    and none of its lint warnings either."""
    checked = subprocess.run(
        [promtool, "check", "metrics"],
        input=text.encode("utf-8"),
        capture_output=True,
        timeout=60,
        check=False,
    )
    report = (checked.stdout + checked.stderr).decode("utf-8", "replace")
    assert checked.returncode == 0, report
    assert report.strip() == "", report


def stop_process(process: subprocess.Popen[bytes], grace: float = 10.0) -> int:
    """SIGTERM, then SIGKILL if the process has not ended within ``grace`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    probe: Callable[[], T | None], *, timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or probe!r}")
        time.sleep(interval)


class Scrape:
    """One parsed scrape of the exporter: sample values by name and labels."""

    def __init__(self, text: str) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        self.text = text
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def series(self, name: str) -> dict[frozenset[tuple[str, str]], float]:
        return {labels: v for (n, labels), v in self.samples.items() if n == name}

    def current_status(self, import_id: str) -> str | None:
        """The status whose series is 1 for the id, or None if it has none."""
        ones = [
            dict(labels)["status"]
            for labels, value in self.series("elevate_import_status").items()
            if dict(labels)["id"] == import_id and value == 1
        ]
        assert len(ones) <= 1, f"{import_id} has several statuses at 1: {ones}"
        return ones[0] if ones else None


def scrape(base_url: str, path: str = "/metrics", timeout: float = 30.0, **headers: str) -> Scrape:
    import urllib.request

    request = urllib.request.Request(
        base_url + path, headers={k.replace("_", "-"): v for k, v in headers.items()}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return Scrape(response.read().decode("utf-8"))


class Exporters:
    """In-process exporters on free loopback ports, all stopped by :meth:`stop_all`."""

    def __init__(self) -> None:
        self._started: list[Any] = []

    def start(self, base_url: str, ids: Iterable[str] = (), **options: Any) -> Any:
        """A started exporter, returned once its start-up poll round has ended.

        ``options`` are load_settings keywords; unless given, the key is ``sim-key``,
        the address a free loopback port and ``min_poll_interval`` ``"0s"``.
        """
        from elevate_import_exporter.app import Application
        from elevate_import_exporter.settings.config import load_settings

        options.setdefault("api_key", "sim-key")
        options.setdefault("listen_address", "127.0.0.1:0")
        # Every scrape polls, unless a test is about the minimum interval.
        options.setdefault("min_poll_interval", "0s")
        # In memory unless a test is about the store.
        options.setdefault("storage_path", "")
        exporter = Application(load_settings(base_url=base_url, import_ids=list(ids), **options))
        self._started.append(exporter)
        exporter.start()
        # The first round runs at start-up; tests begin once it has ended.
        assert exporter.wait_ready(60), "the first poll round did not end"
        return exporter

    def stop_all(self) -> None:
        for exporter in reversed(self._started):
            exporter.stop()


# The contract's error reasons, and `unexpected_status` (1xx, 3xx) that docs/metrics.md adds:
# written out here, not taken from the code, so that a changed list fails a test.
ERROR_REASONS = (
    "forbidden",
    "cluster_not_found",
    "server_error",
    "rate_limited",
    "client_error",
    "unexpected_status",
    "timeout",
    "connection_error",
    "invalid_response",
)


def scrape_text(url: str, timeout: float = 30.0) -> str:
    """The text of one scrape of ``url``'s /metrics."""
    with urllib.request.urlopen(url + "/metrics", timeout=timeout) as response:
        text: str = response.read().decode("utf-8")
        return text


def ids_in_every_series(text: str) -> set[str]:
    """Every id that any series of a scrape names."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        sample.labels["id"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if "id" in sample.labels
    }


# The stores of the exporters the tests start, removed when the tests end.
_STORES = tempfile.mkdtemp(prefix="elevate-stores-")
atexit.register(shutil.rmtree, _STORES, ignore_errors=True)


def fresh_store_path() -> str:
    """A path for an exporter's store in a folder of its own, not yet created."""
    return str(Path(tempfile.mkdtemp(prefix="store-", dir=_STORES)) / "elevate-import-exporter.db")


class BareSite:
    """The smallest site an HttpServer serves: an empty registry, nothing to poll, and a
    real catalog on an in-memory store. Tests subclass it for what they watch."""

    telemetry_path = "/metrics"
    registration_enabled = False

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry

        from elevate_import_exporter.lifecycle.catalog import Catalog
        from elevate_import_exporter.lifecycle.store import Store
        from elevate_import_exporter.settings.config import load_settings

        self.registry = CollectorRegistry()
        self.fresh_registry: CollectorRegistry | None = None
        self.settings = load_settings(base_url="http://127.0.0.1:9", api_key="k", storage_path="")
        self.store = Store.open(None)
        self.catalog = Catalog.load(
            self.store, retention=86400.0, history=86400.0, max_registered=10_000
        )

    def poll(self, budget: float) -> None:
        pass

    def snapshot(self) -> Snapshot:
        from elevate_import_exporter.polling.poller import Snapshot

        return Snapshot({}, None)

    def is_ready(self) -> bool:
        return True


def finishes(call: Callable[[], object], timeout: float = 10.0) -> BaseException | None:
    """Run ``call`` in a thread; fail if it is still blocked after ``timeout`` seconds."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"still blocked after {timeout} s")
    return outcome[0]
