"""The HTTP endpoints: formats of /metrics, the landing page, health, 404s, the metric names."""

from __future__ import annotations

import gzip
import importlib.metadata
import platform
import re
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families

from elevate_import_exporter.app import Application as Exporter
from elevate_import_exporter.settings.config import load_settings
from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from tests.conftest import SIM_KEY, ExporterFor
from tests.support import ERROR_REASONS, wait_until

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
# What pip installed, not the package's own constant: the two must agree.
INSTALLED_VERSION = importlib.metadata.version("elevate-import-exporter")
# The contract's metrics: name as the text format's parser names the family, type, labels.
CONTRACT_METRICS = {
    "elevate_import_status": ("gauge", {"id", "type", "status"}),
    "elevate_import_info": ("gauge", {"id", "type", "message"}),
    "elevate_import_first_seen_timestamp_seconds": ("gauge", {"id"}),
    "elevate_import_last_status_change_timestamp_seconds": ("gauge", {"id"}),
    "elevate_import_poll_success": ("gauge", {"id"}),
    "elevate_import_tracked_imports": ("gauge", set()),
    "elevate_import_up": ("gauge", set()),
    "elevate_import_scrape_duration_seconds": ("gauge", set()),
    "elevate_import_api_requests": ("counter", {"code"}),
    "elevate_import_api_errors": ("counter", {"reason"}),
    "elevate_import_api_request_duration_seconds": ("histogram", set()),
    "elevate_import_exporter_build_info": ("gauge", {"version", "python_version"}),
}


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def get(url: str, **headers: str) -> Answer:
    request = urllib.request.Request(
        url, headers={k.replace("_", "-"): v for k, v in headers.items()}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return Answer(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, dict(error.headers.items()), error.read())


def openmetrics_families(text: str) -> list[Metric]:
    return list(openmetrics_parser.text_string_to_metric_families(text))  # type: ignore[no-untyped-call]


def families(text: str) -> dict[str, Metric]:
    return {family.name: family for family in text_string_to_metric_families(text)}


@pytest.fixture(scope="module")
def running() -> Iterator[Exporter]:
    """One exporter for the tests that only read: an import in progress, a failed one,
    an unknown id. Tests that count requests start their own."""
    imports = [
        ScriptedImport("1001", (Step("IN_PROGRESS"),)),
        ScriptedImport("1002", (Step("FAILURE", message="Import failed."),), type="PANELS"),
    ]
    with Simulator(imports, api_key=SIM_KEY) as sim:
        settings = load_settings(
            base_url=sim.url,
            api_key=SIM_KEY,
            import_ids=["1001", "1002", "1003"],
            listen_address="127.0.0.1:0",
            storage_path="",  # the default is ./data/..., in the work tree
        )
        shared = Exporter(settings)
        shared.start()
        assert shared.wait_ready(60), "the first poll round did not end"
        yield shared
        shared.stop()


# -- /metrics -----------------------------------------------------------------------------


def test_metrics_are_served_in_text_format_0_0_4_by_default(running: Exporter) -> None:
    answer = get(running.url + "/metrics")
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "Content-Encoding" not in answer.headers
    assert "elevate_import_up" in families(answer.text)


def test_metrics_are_served_as_openmetrics_when_the_accept_header_asks(running: Exporter) -> None:
    answer = get(running.url + "/metrics", Accept=OPENMETRICS)
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert answer.text.endswith("# EOF\n")
    names = {family.name for family in openmetrics_families(answer.text)}
    assert {"elevate_import_status", "elevate_import_api_errors"} <= names


def test_prometheus_own_accept_header_gets_openmetrics(running: Exporter) -> None:
    accept = (
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
        "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    )
    answer = get(running.url + "/metrics", Accept=accept)
    assert answer.headers["Content-Type"].startswith("application/openmetrics-text")
    assert answer.text.endswith("# EOF\n")


def test_metrics_are_gzipped_when_the_client_accepts_gzip(running: Exporter) -> None:
    answer = get(running.url + "/metrics", Accept_Encoding="gzip")
    assert answer.status == 200
    assert answer.headers.get("Content-Encoding") == "gzip"
    assert int(answer.headers["Content-Length"]) == len(answer.body)
    text = gzip.decompress(answer.body).decode("utf-8")
    assert "elevate_import_status" in families(text)


def test_every_contract_metric_is_present_with_its_type_and_labels(running: Exporter) -> None:
    scraped = families(get(running.url + "/metrics").text)
    for name, (kind, labels) in CONTRACT_METRICS.items():
        family = scraped.get(name)
        assert family is not None, f"{name} is missing"
        assert family.type == kind, f"{name} is a {family.type}, not a {kind}"
        assert family.samples, f"{name} has no sample"
        for sample in family.samples:
            own = set(sample.labels) - ({"le"} if kind == "histogram" else set())
            assert own == labels, f"{sample.name} has labels {sample.labels}"
    for counter in ("elevate_import_api_requests", "elevate_import_api_errors"):
        assert {s.name for s in scraped[counter].samples} == {counter + "_total"}


def test_every_documented_status_has_a_series_per_id(running: Exporter) -> None:
    status = families(get(running.url + "/metrics").text)["elevate_import_status"]
    by_id: dict[str, dict[str, float]] = {}
    for sample in status.samples:
        by_id.setdefault(sample.labels["id"], {})[sample.labels["status"]] = sample.value
    documented = {"NOT_FOUND", "WAITING", "BLOCKED", "IN_PROGRESS", "SUCCESS", "FAILURE", "ABORTED"}
    expected = {"1001": "IN_PROGRESS", "1002": "FAILURE", "1003": "NOT_FOUND"}
    assert set(by_id) == set(expected)
    for import_id, current in expected.items():
        assert set(by_id[import_id]) == documented
        assert {s for s, v in by_id[import_id].items() if v == 1} == {current}


def test_type_and_message_are_labels_as_the_api_reports_them(running: Exporter) -> None:
    info = families(get(running.url + "/metrics").text)["elevate_import_info"]
    labels = {s.labels["id"]: (s.labels["type"], s.labels["message"]) for s in info.samples}
    assert labels == {
        "1001": ("PRODUCTS", ""),
        "1002": ("PANELS", "Import failed."),
        "1003": ("", ""),
    }
    assert all(s.value == 1 for s in info.samples)


def test_every_error_reason_is_exported_at_0_from_the_first_scrape(running: Exporter) -> None:
    errors = families(get(running.url + "/metrics").text)["elevate_import_api_errors"]
    values = {s.labels["reason"]: s.value for s in errors.samples}
    assert values == dict.fromkeys(ERROR_REASONS, 0)


def test_build_info_names_the_version_and_python(running: Exporter) -> None:
    build = families(get(running.url + "/metrics").text)["elevate_import_exporter_build_info"]
    assert [(s.labels, s.value) for s in build.samples] == [
        (
            {
                "version": INSTALLED_VERSION,
                "python_version": platform.python_version(),
            },
            1.0,
        )
    ]


def test_no_sample_carries_a_timestamp(running: Exporter) -> None:
    get(running.url + "/metrics")  # a second scrape: state from an earlier round too
    text = get(running.url + "/metrics").text
    stamped = [s for f in families(text).values() for s in f.samples if s.timestamp is not None]
    assert stamped == []
    om = get(running.url + "/metrics", Accept=OPENMETRICS).text
    stamped = [s for f in openmetrics_families(om) for s in f.samples if s.timestamp is not None]
    assert stamped == []


def test_the_request_counters_count_the_requests_the_api_received(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    simulator.add_import(ScriptedImport("1001", (Step("IN_PROGRESS"),)))
    simulator.add_import(ScriptedImport("1002", (Step("FAILURE"),)))
    running = exporter_for(simulator.url, ["1001", "1002", "1003"])
    get(running.url + "/metrics")
    scraped = families(get(running.url + "/metrics").text)
    requests = {s.labels["code"]: s.value for s in scraped["elevate_import_api_requests"].samples}
    # The start-up round asks all three; 1002 is final then, so each of the two scrapes
    # asks 1001 and 1003 only: 3 + 2 + 2.
    assert requests == {"200": simulator.requests_total} == {"200": 7}
    count = [
        s.value
        for s in scraped["elevate_import_api_request_duration_seconds"].samples
        if s.name.endswith("_count")
    ]
    assert count == [7]


# -- the landing page ---------------------------------------------------------------------


class _Page(HTMLParser):
    """The page's links and the rows of its table of tracked imports (cell texts, unescaped)."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None
        self._in_tracked = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.links += [v for k, v in attrs if k == "href" and v is not None]
        elif tag == "table":
            self._in_tracked = ("id", "tracked") in attrs
        elif tag == "tr" and self._in_tracked:
            self.rows.append([])
        elif tag in ("td", "th") and self._in_tracked:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_tracked = False
        if tag in ("td", "th") and self._cell is not None and self.rows:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def landing_page(url: str) -> tuple[Answer, _Page]:
    answer = get(url + "/")
    page = _Page()
    page.feed(answer.text)
    return answer, page


def table(page: _Page) -> dict[str, dict[str, str]]:
    """Rows by id, cells by lower-cased column header."""
    header = [cell.lower() for cell in page.rows[0]]
    return {row[0]: dict(zip(header, row, strict=False)) for row in page.rows[1:]}


def test_the_landing_page_names_the_exporter_its_version_and_links_the_metrics(
    running: Exporter,
) -> None:
    answer, page = landing_page(running.url)
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/html")
    assert "Elevate import exporter" in answer.text
    assert INSTALLED_VERSION in answer.text
    assert "/metrics" in page.links


def test_the_landing_page_has_a_row_per_import_with_type_status_since_and_message(
    running: Exporter,
) -> None:
    get(running.url + "/metrics")
    _answer, page = landing_page(running.url)
    rows = table(page)
    assert {"id", "type", "status", "since", "message"} <= {c.lower() for c in page.rows[0]}
    assert set(rows) == {"1001", "1002", "1003"}
    assert (rows["1002"]["type"], rows["1002"]["status"]) == ("PANELS", "FAILURE")
    assert rows["1002"]["message"] == "Import failed."
    assert (rows["1001"]["type"], rows["1001"]["status"]) == ("PRODUCTS", "IN_PROGRESS")
    assert rows["1003"]["status"] == "NOT_FOUND"
    for row in rows.values():
        assert re.search(r"\d{4}-\d{2}-\d{2}", row["since"]), row


def test_the_landing_page_escapes_what_the_api_sends(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    script = "<script>alert('owned')</script>"
    simulator.add_import(
        ScriptedImport("1001", (Step("FAILURE", message=f"bad {script} & <b>"),), type=script)
    )
    running = exporter_for(simulator.url, ["1001"])
    get(running.url + "/metrics")
    answer, page = landing_page(running.url)
    assert "<script>" not in answer.text
    assert "&lt;script&gt;" in answer.text
    row = table(page)["1001"]
    assert row["type"] == script
    assert row["message"] == f"bad {script} & <b>"


def test_the_landing_page_links_a_custom_telemetry_path(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    running = exporter_for(simulator.url, ["1001"], telemetry_path="/elevate/metrics")
    _answer, page = landing_page(running.url)
    assert "/elevate/metrics" in page.links
    assert "/metrics" not in page.links


# -- health, readiness, other paths -------------------------------------------------------


def test_health_and_readiness_answer_200(running: Exporter) -> None:
    assert get(running.url + "/-/healthy").status == 200
    assert get(running.url + "/-/ready").status == 200


def test_any_other_path_is_404(running: Exporter) -> None:
    for path in ("/nope", "/metrics/extra", "/-/", "/-/unknown", "/favicon.ico", "/index.html"):
        assert get(running.url + path).status == 404, path


def test_a_custom_telemetry_path_serves_the_metrics_and_metrics_is_404(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    running = exporter_for(simulator.url, ["1001"], telemetry_path="/elevate/metrics")
    simulator.reset_counts()  # of the start-up round
    answer = get(running.url + "/elevate/metrics")
    assert answer.status == 200
    assert "elevate_import_status" in families(answer.text)
    assert simulator.requests_total == 1
    assert get(running.url + "/metrics").status == 404
    assert simulator.requests_total == 1  # the 404 ran no round


def test_a_query_string_does_not_hide_the_metrics(running: Exporter) -> None:
    assert get(running.url + "/metrics?name[]=elevate_import_up").status == 200


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_an_address_without_host_serves_on_ipv4_and_ipv6_loopback(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    running = exporter_for(simulator.url, listen_address=":0")
    assert get(f"http://127.0.0.1:{running.port}/-/healthy").status == 200
    if ipv6_loopback():
        assert get(f"http://[::1]:{running.port}/-/healthy").status == 200


def test_a_bracketed_ipv6_listen_address_is_served(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    if not ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback")
    running = exporter_for(simulator.url, ["1001"], listen_address="[::1]:0")
    answer = get(f"http://[::1]:{running.port}/metrics")
    assert answer.status == 200
    assert "elevate_import_status" in families(answer.text)


def test_health_readiness_and_the_page_answer_while_a_scrape_waits_for_elevate(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    running = exporter_for(simulator.url, ["1001"])
    # Only now: a start-up round that hangs would hold the exporter's readiness back.
    simulator.hang_ids.add("1001")
    simulator.reset_counts()
    done = threading.Event()
    result: dict[str, Any] = {}

    def slow_scrape() -> None:
        try:
            result["answer"] = get(running.url + "/metrics")
        finally:
            done.set()

    scraper = threading.Thread(target=slow_scrape, daemon=True)
    scraper.start()
    # The scrape is now waiting for an answer that only stopping the simulator ends.
    wait_until(lambda: simulator.requests_for("1001") >= 1, what="the scrape to reach Elevate")

    assert get(running.url + "/-/healthy").status == 200
    assert get(running.url + "/-/ready").status == 200
    assert get(running.url + "/").status == 200
    assert not done.is_set(), "the scrape ended before the health check: nothing was proven"

    simulator.stop()
    assert done.wait(30)
    scraper.join()
    assert result["answer"].status == 200
