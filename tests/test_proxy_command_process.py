"""`elevate-import-exporter proxy` as a real process: between a feed job and the simulator
as Elevate, handing the ids of accepted imports to a real exporter (run with
--web.enable-registration); its own /metrics and health; its drain on SIGTERM."""

from __future__ import annotations

import hashlib
import json
import signal
import socket
from pathlib import Path

import pytest

from elevate_import_exporter.httpd.auth import hash_password
from elevate_import_exporter.simulator import Simulator
from tests.conftest import SIM_KEY, ExporterProcess, ExporterProcessFor
from tests.standalone_proxy import ProxyFor, proxy_process  # noqa: F401 (a fixture)
from tests.support import Scrape, assert_promtool_approves, free_port, need_tool, wait_until
from tests.test_proxy import FEED, send

MIB = 1024 * 1024
UPLOAD_PATH = "/api/v2/import/products"


@pytest.fixture
def exporter(simulator: Simulator, exporter_process: ExporterProcessFor) -> ExporterProcess:
    return exporter_process(
        "--elevate.base-url",
        simulator.url,
        "--web.enable-registration",
        env={"ELEVATE_API_KEY": SIM_KEY},
    )


def record_at(exporter: ExporterProcess, import_id: str) -> dict[str, object] | None:
    status, text = exporter.get(f"/api/v1/imports/{import_id}")
    if status != 200:
        return None
    record: dict[str, object] = json.loads(text)
    return record


def test_an_upload_through_the_proxy_reaches_elevate_and_its_id_is_tracked_with_source_proxy(
    simulator: Simulator,
    exporter: ExporterProcess,
    proxy_process: ProxyFor,  # noqa: F811
) -> None:
    proxy = proxy_process(simulator.url, exporter.url)
    got = send(
        proxy.feed_port,
        "POST",
        UPLOAD_PATH + "?name=nightly",
        FEED,
        {"Api-Key": SIM_KEY, "X-Feed-Name": "shop-se"},
    )
    assert got.status == 202, got.body
    import_id = json.loads(got.body)["id"]
    [upload] = simulator.uploads
    assert (upload.import_id, upload.sha256) == (import_id, hashlib.sha256(FEED).hexdigest())
    record = wait_until(
        lambda: record_at(exporter, import_id), timeout=30, what="the id at the exporter"
    )
    assert record["source"] == "proxy"
    assert record["type"] == "PRODUCTS"
    assert record["labels"] == {"feed_name": "shop-se", "name": "nightly", "path": UPLOAD_PATH}

    def delivered() -> Scrape | None:
        scrape = proxy.metrics()
        return (
            scrape if scrape.value("elevate_import_proxy_registrations_delivered_total") else None
        )

    scrape = wait_until(delivered, what="the delivery on the proxy's metrics")
    assert scrape.value("elevate_import_proxy_registrations_waiting") == 0
    assert scrape.value("elevate_import_proxy_tracked_total", type="PRODUCTS") == 1
    assert (scrape.value("elevate_import_proxy_last_delivery_timestamp_seconds") or 0) > 0


def test_with_the_exporter_down_the_feed_is_answered_and_its_id_waits_on_the_metrics(
    simulator: Simulator,
    proxy_process: ProxyFor,  # noqa: F811
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    proxy = proxy_process(simulator.url, nowhere)
    got = send(proxy.feed_port, "POST", UPLOAD_PATH, FEED, {"Api-Key": SIM_KEY})
    assert got.status == 202, got.body
    assert len(simulator.uploads) == 1
    scrape = proxy.metrics()
    assert scrape.value("elevate_import_proxy_registrations_waiting") == 1
    assert scrape.value("elevate_import_proxy_registrations_delivered_total") == 0
    assert scrape.value("elevate_import_proxy_last_delivery_timestamp_seconds") == 0


def test_the_proxys_own_port_answers_health_a_page_naming_its_upstream_and_404(
    simulator: Simulator,
    exporter: ExporterProcess,
    proxy_process: ProxyFor,  # noqa: F811
) -> None:
    proxy = proxy_process(simulator.url, exporter.url)
    assert proxy.get("/-/healthy")[0] == 200
    assert proxy.get("/-/ready")[0] == 200
    status, page = proxy.get("/")
    assert status == 200
    assert "import proxy" in page
    assert simulator.url in page
    assert exporter.url in page
    assert proxy.get("/api/v1/imports")[0] == 404
    # The telemetry port is not the proxy: nothing is forwarded from it.
    assert simulator.uploads == []


def test_sigterm_turns_ready_to_503_refuses_new_feeds_lets_the_upload_finish_and_exits_0(
    simulator: Simulator,
    exporter: ExporterProcess,
    proxy_process: ProxyFor,  # noqa: F811
) -> None:
    proxy = proxy_process(simulator.url, exporter.url)
    first, second = b"a" * (2 * MIB), b"b" * (2 * MIB)
    feed = socket.create_connection(("127.0.0.1", proxy.feed_port), timeout=60)
    try:
        head = (
            f"POST {UPLOAD_PATH} HTTP/1.1\r\nHost: elevate\r\nApi-Key: {SIM_KEY}\r\n"
            f"Content-Length: {len(first) + len(second)}\r\n\r\n"
        )
        feed.sendall(head.encode() + first)
        wait_until(
            lambda: proxy.metrics().value("elevate_import_proxy_requests_in_flight") == 1,
            what="the upload to be in flight",
        )
        proxy.process.send_signal(signal.SIGTERM)
        wait_until(lambda: proxy.ready_status() == 503, timeout=10, what="/-/ready to answer 503")
        wait_until(lambda: _refused(proxy.feed_port), timeout=10, what="new feeds to be refused")
        assert proxy.process.poll() is None  # still draining the upload in flight
        feed.sendall(second)
        answer = _read_answer(feed)
    finally:
        feed.close()
    assert answer.startswith(b"HTTP/1.1 202"), answer[:200]
    import_id = json.loads(answer.split(b"\r\n\r\n", 1)[1])["id"]
    [upload] = simulator.uploads
    assert upload.bytes == len(first) + len(second)
    assert upload.sha256 == hashlib.sha256(first + second).hexdigest()
    assert proxy.process.wait(timeout=60) == 0, proxy.stderr()
    # The id reached the exporter by the time the proxy ended: nothing was left queued.
    record = record_at(exporter, import_id)
    assert record is not None, proxy.stderr()
    assert record["source"] == "proxy"


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def _read_answer(sock: socket.socket) -> bytes:
    """An answer with Content-Length, whole."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, body
        body += chunk
    return head + b"\r\n\r\n" + body


def test_promtool_check_metrics_reports_nothing_on_the_proxys_metrics(
    simulator: Simulator,
    exporter: ExporterProcess,
    proxy_process: ProxyFor,  # noqa: F811
) -> None:
    promtool = need_tool("promtool")
    proxy = proxy_process(simulator.url, exporter.url)
    assert send(proxy.feed_port, "POST", UPLOAD_PATH, FEED, {"Api-Key": SIM_KEY}).status == 202
    assert send(proxy.feed_port, "POST", UPLOAD_PATH, FEED, {"Api-Key": "wrong"}).status == 403

    def counted() -> tuple[int, str] | None:
        # A request counts once the proxy is done with it, which may be after the answer.
        got = proxy.get("/metrics")
        return got if got[0] == 200 and 'code="403"' in got[1] else None

    status, text = wait_until(counted, interval=0.2, what="the 403 on the proxy's metrics")
    assert status == 200
    scrape = Scrape(text)
    # What promtool is to judge is there: the proxy's, the delivery's and the process'.
    assert scrape.value("elevate_import_proxy_requests_total", method="POST", code="403") == 1
    assert (
        scrape.value("elevate_import_proxy_registrations_dropped_total", reason="queue_full") == 0
    )
    assert scrape.value("process_open_fds") is not None
    assert_promtool_approves(promtool, text)


@pytest.mark.parametrize("exempt", [True, False])
def test_health_answers_probes_without_credentials_only_when_exempted(
    simulator: Simulator,
    exporter: ExporterProcess,
    proxy_process: ProxyFor,  # noqa: F811
    tmp_path: Path,
    exempt: bool,
) -> None:
    config = tmp_path / "web-config.yml"
    hashed = hash_password(b"probe-password", 4)
    config.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n", encoding="utf-8")
    flags = ["--web.config.file", str(config), *(["--web.auth-exempt-health"] if exempt else [])]
    proxy = proxy_process(simulator.url, exporter.url, *flags, ready=200 if exempt else 401)
    assert proxy.get("/-/healthy")[0] == (200 if exempt else 401)
    # Only health: the metrics and the page still want credentials.
    assert proxy.get("/metrics")[0] == 401
    assert proxy.get("/")[0] == 401
