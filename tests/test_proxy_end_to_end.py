"""The import proxy inside the exporter: one URL changed in a feed job, and its imports are
on the metrics, the page and the API at the next scrape, with nothing else configured.

Expects ``Application.proxy`` (the ImportProxy, None without --proxy.listen-address), its
collector in the application's registry, and ``run --proxy.listen-address``.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from elevate_import_exporter.simulator import Simulator
from tests.conftest import ExporterFor, ExporterProcessFor, exporter_env
from tests.support import free_port, scrape, stop_process, wait_until
from tests.test_proxy import FEED, KEY, send
from tests.test_proxy_streaming import MIB, upload

FEED_KEY = "feed-KEY-71d2e0-NEVER-SHOW"


def proxy_port(exporter: Any) -> int:
    port: int = exporter.proxy.ports[0]
    return port


def wait_tracked(exporter: Any, count: int) -> None:
    """Until the proxy has registered ``count`` ids: it tracks once the client has its whole
    answer, and the client may read that answer sooner."""
    proxy = exporter.proxy
    assert proxy is not None
    wait_until(
        lambda: sum(proxy.stats.snapshot().tracked.values()) == count,
        what=f"the proxy's registration of {count} ids",
    )


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        text: str = response.read().decode()
        return text


def test_a_feed_pushed_through_the_exporters_proxy_is_polled_at_the_next_scrape(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    exporter = exporter_for(simulator.url, (), proxy_listen_address="127.0.0.1:0")
    got = send(
        proxy_port(exporter),
        "POST",
        "/api/v2/import/products?name=nightly",
        FEED,
        {"Api-Key": KEY, "X-Feed-Name": "shop-se"},
    )
    assert got.status == 202
    import_id = json.loads(got.body)["id"]
    wait_tracked(exporter, 1)
    result = scrape(exporter.url)
    assert result.current_status(import_id) == "WAITING"
    assert result.value("elevate_import_source_imports", source="proxy") == 1
    assert result.value("elevate_import_proxy_tracked_total", type="PRODUCTS") == 1
    record = json.loads(get(f"{exporter.url}/api/v1/imports/{import_id}"))
    assert record["source"] == "proxy"
    assert record["labels"] == {
        "feed_name": "shop-se",
        "name": "nightly",
        "path": "/api/v2/import/products",
    }
    assert import_id in get(exporter.url + "/")


def test_the_feeds_key_is_in_no_page_metric_api_answer_or_log_line(
    exporter_for: ExporterFor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with Simulator(api_key=FEED_KEY) as sim:
        exporter = exporter_for(sim.url, (), proxy_listen_address="127.0.0.1:0", log_level="debug")
        port = proxy_port(exporter)
        got = send(port, "POST", "/api/v2/import/ads", FEED, {"Api-Key": FEED_KEY})
        assert got.status == 202
        import_id = json.loads(got.body)["id"]
        wait_tracked(exporter, 1)
        sim.api_key = "rotated"
        assert send(port, "POST", "/api/v2/import/ads", FEED, {"Api-Key": FEED_KEY}).status == 403
        served = [
            get(exporter.url + path)
            for path in ("/metrics", "/", "/api/v1/imports", f"/api/v1/imports/{import_id}")
        ]
    assert all(FEED_KEY not in text for text in served)
    assert import_id in served[2]
    assert all(FEED_KEY not in record.getMessage() for record in caplog.records)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
def test_the_exporter_process_streams_a_500_mb_feed_in_bounded_memory(
    exporter_process: ExporterProcessFor,
) -> None:
    address = f"127.0.0.1:{free_port()}"
    with Simulator(api_key=KEY) as sim:
        proc = exporter_process(
            "--elevate.base-url",
            sim.url,
            "--proxy.listen-address",
            address,
            env={"ELEVATE_API_KEY": KEY},
        )
        port = int(address.rsplit(":", 1)[1])
        assert upload(port, 1, {"Api-Key": KEY})[0] == 202
        before = _kib(proc.process.pid, "VmHWM")
        status, _body, sent = upload(port, 500, {"Api-Key": KEY})
        peak = _kib(proc.process.pid, "VmHWM")
        assert status == 202
        assert (sim.uploads[-1].bytes, sim.uploads[-1].sha256) == (500 * MIB, sent)
    assert (peak - before) / 1024 < 50


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def test_demo_with_proxy_fills_its_page_by_itself(tmp_path: Path) -> None:
    exporter, simulator, proxy = free_port(), free_port(), free_port()
    output = tmp_path / "demo.out"
    with output.open("wb") as sink:
        demo = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "elevate_import_exporter",
                "demo",
                "--proxy",
                "--web.listen-address",
                f"127.0.0.1:{exporter}",
                "--simulator.listen-address",
                f"127.0.0.1:{simulator}",
                "--proxy.listen-address",
                f"127.0.0.1:{proxy}",
            ],
            env=exporter_env(),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{exporter}"

        def proxied() -> float | None:
            try:
                value = scrape(url).value("elevate_import_source_imports", source="proxy")
            except OSError:
                return None
            return value if value and value >= 4 else None

        wait_until(proxied, timeout=60, interval=0.5, what="the feed job's imports tracked")
        listed = json.loads(get(url + "/api/v1/imports?source=proxy"))["imports"]
        feeds = {record["labels"]["feed_name"] for record in listed}
        assert feeds >= {"shop-se", "shop-no", "campaigns", "start-page"}
        page = get(url + "/")
        assert all(record["id"] in page for record in listed)
    finally:
        assert stop_process(demo) == 0, output.read_text()
    assert f"127.0.0.1:{proxy}" in output.read_text()
