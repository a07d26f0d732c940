"""HTTP details a careful client notices: readiness, HEAD, gzip q-values, the name[] filter,
the scrape timeout header, answers built within that timeout, 500 on a bug."""

from __future__ import annotations

import gzip
import json
import logging
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.registry import Collector
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from elevate_import_exporter.app import Application
from elevate_import_exporter.settings.config import load_settings
from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step, generated_imports
from elevate_import_exporter.site import web
from tests.conftest import SIM_KEY, ExporterFor
from tests.support import Scrape, wait_until
from tests.test_hostile_clients import TinySite

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


def get(url: str, headers: dict[str, str] | None = None, timeout: float = 60.0) -> Answer:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Answer(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, dict(error.headers.items()), error.read())


def raw(port: int, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    """One request on its own connection; everything the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


@pytest.fixture
def tiny() -> Iterator[tuple[TinySite, web.HttpServer]]:
    site = TinySite()
    server = web.HttpServer(site, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield site, server
    server.shutdown()
    thread.join()
    server.close()


# -- readiness ----------------------------------------------------------------------------

KEY = "k-0123456789"
ID = "5537431447739019570"


def test_ready_is_503_until_the_first_round_started_by_itself_has_ended(
    httpserver: HTTPServer,
) -> None:
    asked = threading.Event()
    release = threading.Event()

    def slow(_request: Request) -> Response:
        asked.set()
        release.wait(30)
        body = {"id": ID, "status": "IN_PROGRESS", "type": "PRODUCTS"}
        return Response(json.dumps(body), content_type="application/json")

    httpserver.expect_request(f"/api/v2/import/status/{ID}").respond_with_handler(slow)
    settings = load_settings(
        base_url=httpserver.url_for("").rstrip("/"),
        api_key=KEY,
        import_ids=[ID],
        listen_address="127.0.0.1:0",
        timeout="30",
        storage_path="",
    )
    app = Application(settings)
    try:
        app.start()
        # Nobody scrapes: the exporter asks Elevate by itself.
        assert asked.wait(30)
        assert get(app.url + "/-/ready").status == 503
        assert get(app.url + "/-/healthy").status == 200
        release.set()
        wait_until(lambda: get(app.url + "/-/ready").status == 200, what="readiness")
        result = Scrape(get(app.url + "/metrics").body.decode())
        assert result.current_status(ID) == "IN_PROGRESS"
    finally:
        release.set()
        app.stop()


# -- HEAD ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/metrics", "/-/healthy", "/-/ready", "/nope"])
def test_head_answers_like_get_without_a_body(
    tiny: tuple[TinySite, web.HttpServer], path: str
) -> None:
    _site, server = tiny
    get_status, get_headers, get_body = raw(server.port, "GET", path)
    status, headers, body = raw(server.port, "HEAD", path)
    assert (status, body) == (get_status, b"")
    assert int(headers["Content-Length"]) == len(get_body) > 0
    assert headers["Content-Type"] == get_headers["Content-Type"]


def test_head_of_an_unready_exporter_is_503_like_get(tiny: tuple[TinySite, web.HttpServer]) -> None:
    site, server = tiny
    site.is_ready = lambda: False  # type: ignore[method-assign]
    status, headers, body = raw(server.port, "HEAD", "/-/ready")
    assert (status, body) == (503, b"")
    assert int(headers["Content-Length"]) == len(raw(server.port, "GET", "/-/ready")[2])


def test_head_of_the_exporters_metrics_is_200_without_a_body(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    running = exporter_for(simulator.url, ["1001"])
    path = "/metrics?name[]=elevate_import_tracked_imports"
    status, headers, body = raw(running.port, "HEAD", path)
    assert (status, body) == (200, b"")
    assert int(headers["Content-Length"]) == len(raw(running.port, "GET", path)[2])
    status, headers, body = raw(running.port, "HEAD", "/metrics")
    assert (status, body) == (200, b"")
    assert int(headers["Content-Length"]) > 1000


# -- gzip ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept_encoding", "gzipped"),
    [
        ("gzip", True),
        ("gzip;q=0.5", True),
        ("identity, GZIP ; q=1", True),
        ("gzip;q=0", False),
        ("gzip; q=0.000", False),
        ("identity", False),
        ("deflate, br", False),
        ("", False),
    ],
)
def test_gzip_follows_the_q_value_of_accept_encoding(
    tiny: tuple[TinySite, web.HttpServer], accept_encoding: str, gzipped: bool
) -> None:
    _site, server = tiny
    answer = get(f"http://127.0.0.1:{server.port}/metrics", {"Accept-Encoding": accept_encoding})
    assert answer.status == 200
    assert answer.headers.get("Content-Encoding") == ("gzip" if gzipped else None)
    text = gzip.decompress(answer.body) if gzipped else answer.body
    assert b"tiny_up 1.0" in text


# -- name[] -------------------------------------------------------------------------------

WANTED = {"elevate_import_up", "elevate_import_tracked_imports"}


def openmetrics_families(text: str) -> list[Metric]:
    return list(openmetrics_parser.text_string_to_metric_families(text))  # type: ignore[no-untyped-call]


def test_the_name_filter_returns_only_the_families_asked_for(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    simulator.add_import(ScriptedImport("1001", (Step("IN_PROGRESS"),)))
    running = exporter_for(simulator.url, ["1001"])
    url = running.url + "/metrics?name[]=elevate_import_up&name[]=elevate_import_tracked_imports"
    text = Scrape(get(url).body.decode())
    assert {name for name, _labels in text.samples} == WANTED
    assert text.value("elevate_import_tracked_imports") == 1
    om = get(url, {"Accept": OPENMETRICS}).body.decode()
    assert om.endswith("# EOF\n")
    assert {family.name for family in openmetrics_families(om)} == WANTED
    # Without the filter, everything: the filter is what removed the rest.
    assert len(Scrape(get(running.url + "/metrics").body.decode()).samples) > 20


# -- the scrape timeout header ------------------------------------------------------------

BAD_TIMEOUTS = ["inf", "-inf", "nan", "1e999", "0", "-3", "abc", "", "10s", "0x10"]


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        *((value, web.DEFAULT_SCRAPE_TIMEOUT) for value in BAD_TIMEOUTS),
        (None, web.DEFAULT_SCRAPE_TIMEOUT),
        ("2.5", 2.5),
        (" 4 ", 4.0),
        ("600", web.MAX_SCRAPE_TIMEOUT),
        ("1e308", web.MAX_SCRAPE_TIMEOUT),
    ],
)
def test_the_scrape_timeout_is_a_finite_positive_number_up_to_the_cap(
    header: str | None, seconds: float
) -> None:
    assert web.scrape_timeout(header) == seconds


def test_a_bad_scrape_timeout_header_is_answered_from_a_normal_round(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    simulator.add_import(ScriptedImport("1001", (Step("IN_PROGRESS"),)))
    running = exporter_for(simulator.url, ["1001"])
    for value in [*BAD_TIMEOUTS, "1e308"]:
        answer = get(running.url + "/metrics", {TIMEOUT_HEADER: value})
        assert answer.status == 200, value
        result = Scrape(answer.body.decode())
        assert result.value("elevate_import_up") == 1, value
        assert result.value("elevate_import_poll_success", id="1001") == 1, value


@pytest.mark.parametrize("value", ["0", "inf"])
def test_a_zero_or_infinite_scrape_timeout_polls_within_the_default_timeout(
    simulator: Simulator, exporter_for: ExporterFor, value: str
) -> None:
    running = exporter_for(simulator.url, ["1001"])
    simulator.hang_ids.add("1001")
    started = time.monotonic()
    answer = get(running.url + "/metrics", {TIMEOUT_HEADER: value})
    elapsed = time.monotonic() - started
    assert answer.status == 200
    result = Scrape(answer.body.decode())
    assert result.value("elevate_import_poll_success", id="1001") == 0
    # The round waited for the hanging id as long as the default allows, not 0.1 s or forever.
    seconds = result.value("elevate_import_scrape_duration_seconds")
    assert seconds is not None
    assert 5 < seconds < web.DEFAULT_SCRAPE_TIMEOUT
    assert elapsed < web.DEFAULT_SCRAPE_TIMEOUT


# -- the answer within the scrape timeout -------------------------------------------------


def test_with_10000_ids_the_answer_arrives_within_the_scrape_timeout(
    exporter_for: ExporterFor, tmp_path: Path
) -> None:
    imports = generated_imports(10_000)
    ids_file = tmp_path / "ids"
    ids_file.write_text("".join(f"{imp.id}\n" for imp in imports))
    with Simulator(imports, api_key=SIM_KEY) as sim:
        running = exporter_for(sim.url, ids_file=str(ids_file))
        # Now every answer is slow: a round would take far longer than any scrape timeout.
        sim.latency = 1.0
        timeout = 4.0
        for _ in range(2):  # the first scrape measures rendering, the second knows it
            started = time.monotonic()
            answer = get(
                running.url + "/metrics",
                {
                    "Accept": OPENMETRICS,
                    "Accept-Encoding": "gzip",
                    TIMEOUT_HEADER: str(timeout),
                },
            )
            elapsed = time.monotonic() - started
            assert answer.status == 200
            families = {
                f.name: f for f in openmetrics_families(gzip.decompress(answer.body).decode())
            }
            assert families["elevate_import_tracked_imports"].samples[0].value == 10_000
            assert elapsed < timeout, f"answered after {elapsed:.2f} s"


# -- a bug ---------------------------------------------------------------------------------


class Broken(Collector):
    def collect(self) -> Iterator[Metric]:
        raise RuntimeError("a bug in a collector")


def test_a_scrape_that_hits_a_bug_answers_500_logs_it_and_the_next_scrape_works(
    simulator: Simulator, exporter_for: ExporterFor, caplog: pytest.LogCaptureFixture
) -> None:
    running = exporter_for(simulator.url, ["1001"])
    broken = Broken()
    running.registry.register(broken)
    with caplog.at_level(logging.ERROR, logger="elevate_import_exporter.site.web"):
        answer = get(running.url + "/metrics")
    assert (answer.status, answer.body) == (500, b"Scrape failed.\n")
    [record] = [r for r in caplog.records if r.getMessage() == "scrape failed"]
    assert record.exc_info is not None
    assert "a bug in a collector" in str(record.exc_info[1])
    assert get(running.url + "/-/healthy").status == 200
    running.registry.unregister(broken)
    answer = get(running.url + "/metrics")
    assert answer.status == 200
    assert re.search(rb"^elevate_import_up ", answer.body, re.MULTILINE)
