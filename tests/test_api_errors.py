"""Every way an answer from Elevate can go wrong, each served exactly by pytest-httpserver.

The exporter asks for every id once by itself at start-up, before any scrape. A test
about one round either makes that start-up round the one it looks at (scraped with a
minimum poll interval of an hour, so the scrape only shows it) or scripts the server
after the exporter is ready, counting the start-up round's request where it shows.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from elevate_import_exporter.app import Application as Exporter
from elevate_import_exporter.polling.poller import PROBE_ID
from tests.conftest import ExporterFor
from tests.support import Scrape, free_port, scrape

KEY = "k-0123456789"
ID = "5537431447739019570"
PATH = f"/api/v2/import/status/{ID}"
PROBE_PATH = f"/api/v2/import/status/{PROBE_ID}"


def answer(status: str = "IN_PROGRESS", **extra: Any) -> dict[str, Any]:
    return {"id": ID, "status": status, "type": "PRODUCTS", **extra}


# A scrape answered from the start-up round, without a round of its own.
ONLY_THE_START_UP_ROUND = "1h"


@pytest.fixture
def elevate(httpserver: HTTPServer, exporter_for: ExporterFor) -> Callable[..., Exporter]:
    """An exporter tracking ID against the per-test server."""

    # When every query of a round fails, the exporter asks for an id that cannot exist to
    # tell an outage from an id that fails on its own; here the key is good.
    httpserver.expect_request(PROBE_PATH).respond_with_json(
        {"id": PROBE_ID, "status": "NOT_FOUND", "type": ""}
    )

    def start(**options: Any) -> Exporter:
        options.setdefault("api_key", KEY)
        return exporter_for(httpserver.url_for("").rstrip("/"), [ID], **options)

    return start


def asked(httpserver: HTTPServer) -> list[str]:
    """The status requests for ID the server got, the probes of the key left out."""
    return [request.path for request, _ in httpserver.log if request.path != PROBE_PATH]


def errors(result: Scrape, reason: str) -> float | None:
    return result.value("elevate_import_api_errors_total", reason=reason)


def requests_with(result: Scrape, code: str) -> float | None:
    return result.value("elevate_import_api_requests_total", code=code)


def test_requests_carry_the_api_key_header_and_name_the_exporter(
    httpserver: HTTPServer, elevate: ExporterFor
) -> None:
    httpserver.expect_request(PATH, method="GET", headers={"Api-Key": KEY}).respond_with_json(
        answer()
    )
    result = scrape(elevate().url)
    assert result.current_status(ID) == "IN_PROGRESS"
    request, _response = httpserver.log[0]
    assert request.headers["User-Agent"].startswith("elevate-import-exporter/")


def test_a_5xx_burst_is_retried_counted_and_the_import_stays_fresh(
    httpserver: HTTPServer, elevate: ExporterFor
) -> None:
    httpserver.expect_request(PATH).respond_with_json(answer())
    exporter = elevate(retries="1")
    # One-shot answers come before permanent ones: the scrape's round meets the burst.
    httpserver.expect_oneshot_request(PATH).respond_with_data("busy", status=503)
    result = scrape(exporter.url)
    assert result.value("elevate_import_poll_success", id=ID) == 1
    assert result.value("elevate_import_up") == 1
    assert requests_with(result, "503") == 1
    assert requests_with(result, "200") == 2  # the start-up round's and the retry's
    assert errors(result, "server_error") == 1
    assert len(asked(httpserver)) == 3


def test_5xx_on_every_try_keeps_the_last_status_and_the_next_scrape_recovers(
    httpserver: HTTPServer, elevate: ExporterFor
) -> None:
    # The start-up round takes the first answer, the first scrape the two failures.
    httpserver.expect_oneshot_request(PATH).respond_with_json(answer("IN_PROGRESS"))
    httpserver.expect_oneshot_request(PATH).respond_with_data("<h1>Bad Gateway</h1>", status=502)
    httpserver.expect_oneshot_request(PATH).respond_with_data("oops", status=500)
    httpserver.expect_request(PATH).respond_with_json(answer("SUCCESS"))
    exporter = elevate(retries="1")
    assert len(asked(httpserver)) == 1

    failed = scrape(exporter.url)
    # The status the start-up round saw is still published.
    assert failed.current_status(ID) == "IN_PROGRESS"
    assert failed.value("elevate_import_poll_success", id=ID) == 0
    assert failed.value("elevate_import_up") == 0
    assert errors(failed, "server_error") == 2
    assert requests_with(failed, "502") == 1
    assert requests_with(failed, "500") == 1
    # The start-up round's, and the probe that finds Elevate answering other ids.
    assert requests_with(failed, "200") == 2
    assert failed.value("elevate_import_api_reachable") == 1

    recovered = scrape(exporter.url)
    assert recovered.current_status(ID) == "SUCCESS"
    assert recovered.value("elevate_import_up") == 1


def test_a_429_with_a_retry_after_that_fits_the_deadline_is_retried_after_that_long(
    httpserver: HTTPServer, elevate: ExporterFor
) -> None:
    httpserver.expect_request(PATH).respond_with_json(answer())
    exporter = elevate(retries="1")
    httpserver.expect_oneshot_request(PATH).respond_with_data(
        "slow down", status=429, headers={"Retry-After": "1"}
    )
    started = time.monotonic()
    result = scrape(exporter.url)
    assert time.monotonic() - started >= 1.0
    assert result.value("elevate_import_poll_success", id=ID) == 1
    assert errors(result, "rate_limited") == 1
    assert requests_with(result, "429") == 1
    assert requests_with(result, "200") == 2  # the start-up round's and the retry's


def test_a_429_whose_retry_after_passes_the_deadline_is_not_retried(
    httpserver: HTTPServer, elevate: ExporterFor
) -> None:
    httpserver.expect_request(PATH).respond_with_data(
        "slow down", status=429, headers={"Retry-After": "120"}
    )
    # The start-up round, with its deadline 10 s away, is the round looked at.
    result = scrape(elevate(retries="3", min_poll_interval=ONLY_THE_START_UP_ROUND).url)
    assert len(asked(httpserver)) == 1
    assert result.value("elevate_import_poll_success", id=ID) == 0
    assert errors(result, "rate_limited") == 1


def test_a_refused_connection_is_counted_as_connection_error_and_the_exporter_keeps_serving(
    exporter_for: ExporterFor,
) -> None:
    exporter = exporter_for(f"http://127.0.0.1:{free_port()}", [ID], retries="1")
    result = scrape(exporter.url)
    # A try and a retry in each round (the start-up round's and the scrape's), and in the
    # start-up round's probe of an id that cannot exist (due once a minute).
    assert errors(result, "connection_error") == 6
    assert requests_with(result, "connection_error") == 6
    assert result.value("elevate_import_api_reachable") == 0
    assert result.value("elevate_import_up") == 0
    assert scrape(exporter.url).value("elevate_import_up") == 0


def test_an_answer_slower_than_the_request_timeout_is_counted_as_timeout(
    httpserver: HTTPServer, elevate: ExporterFor
) -> None:
    release = threading.Event()

    def stall(_request: Request) -> Response:
        release.wait(10)
        return Response(json.dumps(answer()), content_type="application/json")

    httpserver.expect_request(PATH).respond_with_handler(stall)
    try:
        exporter = elevate(timeout="0.3", retries="0", min_poll_interval=ONLY_THE_START_UP_ROUND)
        result = scrape(exporter.url)
    finally:
        release.set()
    # The id's request, and the probe's: the stalled server answers neither in time.
    assert errors(result, "timeout") == 2
    assert requests_with(result, "timeout") == 2
    assert result.value("elevate_import_poll_success", id=ID) == 0
    # Never answered in time, so no status at all rather than a made-up one.
    assert result.current_status(ID) is None


BAD_BODIES = {
    "empty": b"",
    "html": b"<html><body><h1>502 Bad Gateway</h1></body></html>",
    "truncated json": b'{"id": "5537431447739019570", "status": "IN_PRO',
    "json array": b'["IN_PROGRESS"]',
    "json string": b'"IN_PROGRESS"',
    "no status": json.dumps({"id": ID, "type": "PRODUCTS"}).encode(),
    "status not a string": json.dumps({"id": ID, "status": 3}).encode(),
    "empty status": json.dumps({"id": ID, "status": ""}).encode(),
    "type not a string": json.dumps({"id": ID, "status": "WAITING", "type": 7}).encode(),
    "another id": json.dumps({"id": "1", "status": "SUCCESS", "type": "PRODUCTS"}).encode(),
    "several MiB": b'{"id": "5537431447739019570", "status": "WAITING", "pad": "'
    + b"x" * (3 * 1024 * 1024)
    + b'"}',
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_a_2xx_body_that_is_not_import_information_counts_as_invalid_response(
    httpserver: HTTPServer, elevate: ExporterFor, body: bytes
) -> None:
    # The start-up round learns BLOCKED, a status no bad body below carries.
    httpserver.expect_oneshot_request(PATH).respond_with_json(answer("BLOCKED"))
    httpserver.expect_oneshot_request(PATH).respond_with_data(
        body, status=200, content_type="application/json"
    )
    httpserver.expect_request(PATH).respond_with_json(answer("WAITING"))
    exporter = elevate(retries="2")

    result = scrape(exporter.url)
    assert errors(result, "invalid_response") == 1
    # Not retried (the same answer would come back): the start-up round's and this one;
    # and the probe of an id that cannot exist, which tells Elevate still answers.
    assert requests_with(result, "200") == 3
    assert len(asked(httpserver)) == 2
    assert result.value("elevate_import_poll_success", id=ID) == 0
    # Nothing of the bad body is taken: the last good status stays.
    assert result.current_status(ID) == "BLOCKED"
    assert result.value("elevate_import_up") == 0

    after = scrape(exporter.url)
    assert after.current_status(ID) == "WAITING"
    assert after.value("elevate_import_up") == 1


@pytest.mark.parametrize(
    ("status", "reason"),
    [(404, "cluster_not_found"), (400, "client_error"), (401, "client_error")],
)
def test_a_4xx_is_counted_by_its_reason_and_not_retried(
    httpserver: HTTPServer, elevate: ExporterFor, status: int, reason: str
) -> None:
    httpserver.expect_request(PATH).respond_with_data("no", status=status)
    exporter = elevate(retries="3")
    assert len(asked(httpserver)) == 1  # the start-up round's only request
    httpserver.clear_log()
    result = scrape(exporter.url)
    assert len(asked(httpserver)) == 1
    # One request in each round: the start-up round's and the scrape's.
    assert errors(result, reason) == 2
    assert requests_with(result, str(status)) == 2


def test_a_redirect_is_not_followed_so_the_key_never_goes_elsewhere(
    httpserver: HTTPServer, elevate: ExporterFor
) -> None:
    httpserver.expect_request(PATH).respond_with_data(
        "", status=302, headers={"Location": httpserver.url_for("/elsewhere")}
    )
    httpserver.expect_request("/elsewhere").respond_with_json(answer())
    result = scrape(elevate().url)
    # The start-up round's request and the scrape's, neither followed.
    assert asked(httpserver) == [PATH, PATH]
    assert errors(result, "unexpected_status") == 2
    assert result.value("elevate_import_poll_success", id=ID) == 0


def test_a_v4_style_answer_with_a_numeric_id_beyond_2_to_the_53_is_matched_exactly(
    httpserver: HTTPServer, elevate: ExporterFor
) -> None:
    # 5537431447739019570 is not representable as a float; parsing through float
    # would turn it into ...9568 and the answer would not match the id asked for.
    body = b'{"id": 5537431447739019570, "reason": "Feed rejected", "status": "FAILURE"}'
    httpserver.expect_request(PATH).respond_with_data(body, content_type="application/json")
    result = scrape(elevate().url)
    assert result.current_status(ID) == "FAILURE"
    assert result.value("elevate_import_info", id=ID, type="", message="Feed rejected") == 1


def test_a_long_message_is_cut_to_200_characters(
    httpserver: HTTPServer, elevate: ExporterFor
) -> None:
    httpserver.expect_request(PATH).respond_with_json(answer("FAILURE", message="é" * 500))
    result = scrape(elevate().url)
    assert result.value("elevate_import_info", id=ID, type="PRODUCTS", message="é" * 200) == 1


def test_a_final_status_is_kept_even_when_the_api_later_breaks(
    httpserver: HTTPServer, elevate: ExporterFor
) -> None:
    httpserver.expect_oneshot_request(PATH).respond_with_json(answer("ABORTED"))
    httpserver.expect_request(PATH).respond_with_data("down", status=503)
    # The probe of the key, sent once there is nothing left to ask, finds the key good.
    exporter = elevate()
    scrape(exporter.url)
    result = scrape(exporter.url)
    asked = [request.path for request, _answer in httpserver.log]
    assert asked.count(PATH) == 1
    assert result.current_status(ID) == "ABORTED"
    assert result.value("elevate_import_poll_success", id=ID) == 1
    assert result.value("elevate_import_up") == 1


def test_a_proxy_from_the_environment_carries_the_status_requests(
    httpserver: HTTPServer, exporter_for: ExporterFor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The client reads the proxy variables once at start-up, not per request.
    for name in ("no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", httpserver.url_for("").rstrip("/"))
    # The test's own scrape of the exporter goes direct.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    httpserver.expect_request(PATH).respond_with_json(answer("BLOCKED"))
    # A host that does not resolve: only the proxy can answer for it.
    exporter = exporter_for("http://elevate.invalid", [ID], api_key=KEY)
    result = scrape(exporter.url)
    assert result.current_status(ID) == "BLOCKED"
    request, _response = httpserver.log[0]
    assert request.headers["Host"] == "elevate.invalid"


def test_no_proxy_still_sends_the_named_hosts_directly(
    httpserver: HTTPServer, exporter_for: ExporterFor, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    httpserver.expect_request(PATH).respond_with_json(answer("WAITING"))
    base = f"http://127.0.0.1:{httpserver.port}"
    result = scrape(exporter_for(base, [ID], api_key=KEY).url)
    assert result.current_status(ID) == "WAITING"
    assert errors(result, "connection_error") == 0
