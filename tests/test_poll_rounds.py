"""Poll rounds over time: the minimum interval, Retry-After held across rounds, ids that leave.

Each test drives the in-process exporter against a real server on loopback (the
simulator or pytest-httpserver) and counts the status requests that reach it.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from elevate_import_exporter import __version__
from elevate_import_exporter.app import Application as Exporter
from elevate_import_exporter.core.model import ApiError
from elevate_import_exporter.core.secret import Secret
from elevate_import_exporter.elevate.api import StatusApi, flavour_named
from elevate_import_exporter.elevate.holds import MAX_RETRY_AFTER_HOLD, Holds
from elevate_import_exporter.elevate.transport import Transport
from elevate_import_exporter.polling.poller import Poller
from elevate_import_exporter.polling.sources import MemoryIds, TrackedIds
from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from tests.conftest import SIM_KEY, ExporterFor
from tests.support import Scrape, scrape, wait_until

KEY = "k-0123456789"
HELD = "5537431447739019570"
OTHER = "5300580843122327405"
TRACKED = "elevate_import_tracked_imports"
FIRST_SEEN = "elevate_import_first_seen_timestamp_seconds"
CHANGED = "elevate_import_last_status_change_timestamp_seconds"
SUCCESS = "elevate_import_poll_success"
# Long enough that no deadline ends a round in these tests, even on a slow machine.
TIMEOUT = "30"


def scrape_now(url: str) -> Scrape:
    return scrape(url, X_Prometheus_Scrape_Timeout_Seconds=TIMEOUT)


def path_of(import_id: str) -> str:
    return f"/api/v2/import/status/{import_id}"


def answer(import_id: str, status: str = "IN_PROGRESS") -> dict[str, Any]:
    return {"id": import_id, "status": status, "type": "PRODUCTS"}


def asked(httpserver: HTTPServer, import_id: str) -> int:
    return sum(1 for request, _ in httpserver.log if request.path == path_of(import_id))


def ids_exported(result: Scrape) -> set[str]:
    return {dict(labels)["id"] for (_, labels) in result.samples if dict(labels).get("id")}


@pytest.fixture
def elevate(httpserver: HTTPServer, exporter_for: ExporterFor) -> Callable[..., Exporter]:
    """An exporter tracking HELD and OTHER against the per-test server; OTHER always answers."""

    def start(**options: Any) -> Exporter:
        httpserver.expect_request(path_of(OTHER)).respond_with_json(answer(OTHER))
        options.setdefault("api_key", KEY)
        options.setdefault("retries", "0")
        base_url = httpserver.url_for("").rstrip("/")
        return exporter_for(base_url, [HELD, OTHER], **options)

    return start


@pytest.fixture
def ids_path(tmp_path: Path) -> Path:
    return tmp_path / "ids.txt"


# -- the minimum poll interval ----------------------------------------------------------


def test_fifty_scrapes_within_the_minimum_interval_send_no_status_request(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    simulator.add_import(ScriptedImport("1001", (Step("IN_PROGRESS"),)))
    exporter = exporter_for(simulator.url, ["1001"], min_poll_interval="10s")
    assert simulator.requests_total == 1  # the start-up round

    for _ in range(50):
        result = scrape_now(exporter.url)
        # Answered from the start-up round, as it was.
        assert result.current_status("1001") == "IN_PROGRESS"
        assert result.value(SUCCESS, id="1001") == 1
        assert result.value("elevate_import_up") == 1
    assert simulator.requests_total == 1


def test_without_a_minimum_interval_every_scrape_polls(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    simulator.add_import(ScriptedImport("1001", (Step("IN_PROGRESS"),)))
    exporter = exporter_for(simulator.url, ["1001"], min_poll_interval="0s")
    for n in range(5):
        scrape_now(exporter.url)
        assert simulator.requests_total == 2 + n


def test_a_scrape_polls_again_once_the_minimum_interval_has_passed_and_not_sooner(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    simulator.add_import(ScriptedImport("1001", (Step("IN_PROGRESS"),)))
    started = time.monotonic()
    exporter = exporter_for(simulator.url, ["1001"], min_poll_interval="1s")
    # (when the scrape began, when it ended, status requests seen after it)
    scrapes: list[tuple[float, float, int]] = [(started, time.monotonic(), 1)]

    def third_round() -> bool:
        began = time.monotonic()
        scrape_now(exporter.url)
        scrapes.append((began, time.monotonic(), simulator.requests_total))
        return simulator.requests_total >= 3

    wait_until(third_round, timeout=20, what="two more rounds, driven by scrapes")
    # A round starts at least 1 s after the previous one ended: whatever this machine's
    # speed, the scrape that saw a round end came at least 1 s after the scrape that
    # saw the previous round begin.
    polled = [i for i in range(1, len(scrapes)) if scrapes[i][2] > scrapes[i - 1][2]]
    rounds = [0, *polled]
    for before, after in itertools.pairwise(rounds):
        assert scrapes[after][1] - scrapes[before][0] >= 1.0
    assert simulator.requests_total == 3


def test_a_scrape_answered_from_an_earlier_round_no_longer_shows_ids_removed_from_the_file(
    simulator: Simulator, exporter_for: ExporterFor, ids_path: Path
) -> None:
    ids_path.write_text("1001\n1002\n")
    exporter = exporter_for(simulator.url, ids_file=str(ids_path), min_poll_interval="10m")
    assert ids_exported(scrape_now(exporter.url)) == {"1001", "1002"}

    ids_path.write_text("1001\n")
    result = scrape_now(exporter.url)

    assert ids_exported(result) == {"1001"}
    assert result.value(TRACKED) == 1
    assert simulator.requests_total == 2  # the start-up round only


# -- Retry-After remembered across rounds -----------------------------------------------


def test_an_id_answered_429_with_retry_after_is_not_asked_again_until_then(
    httpserver: HTTPServer, elevate: Callable[..., Exporter]
) -> None:
    httpserver.expect_oneshot_request(path_of(HELD)).respond_with_json(answer(HELD, "WAITING"))
    httpserver.expect_oneshot_request(path_of(HELD)).respond_with_data(
        "slow down", status=429, headers={"Retry-After": "3600"}
    )
    httpserver.expect_request(path_of(HELD)).respond_with_json(answer(HELD, "SUCCESS"))
    exporter = elevate()
    limited = scrape_now(exporter.url)
    assert limited.value(SUCCESS, id=HELD) == 0
    assert asked(httpserver, HELD) == 2
    others = asked(httpserver, OTHER)

    for n in range(1, 4):
        result = scrape_now(exporter.url)
        assert asked(httpserver, HELD) == 2
        assert asked(httpserver, OTHER) == others + n
        # The last known status stands, marked as not fresh.
        assert result.current_status(HELD) == "WAITING"
        assert result.value(SUCCESS, id=HELD) == 0
        assert result.value(SUCCESS, id=OTHER) == 1
        # The contract's up covers the ids a round queried; a held id was not queried,
        # and says so through its own poll_success.
        assert result.value("elevate_import_up") == 1
        assert result.value("elevate_import_api_errors_total", reason="rate_limited") == 1


def test_a_per_id_hold_ends_when_its_retry_after_has_passed(
    httpserver: HTTPServer, elevate: Callable[..., Exporter]
) -> None:
    httpserver.expect_oneshot_request(path_of(HELD)).respond_with_json(answer(HELD, "WAITING"))
    httpserver.expect_oneshot_request(path_of(HELD)).respond_with_data(
        "slow down", status=429, headers={"Retry-After": "1"}
    )
    httpserver.expect_request(path_of(HELD)).respond_with_json(answer(HELD, "SUCCESS"))
    exporter = elevate()
    began = time.monotonic()
    assert scrape_now(exporter.url).value(SUCCESS, id=HELD) == 0

    def asked_again() -> Scrape | None:
        result = scrape_now(exporter.url)
        return result if asked(httpserver, HELD) == 3 else None

    result = wait_until(asked_again, timeout=20, what="the held id to be asked again")
    # The 429 came after `began`, so the hold cannot have ended sooner than 1 s after it.
    assert time.monotonic() - began >= 1.0
    assert result.current_status(HELD) == "SUCCESS"
    assert result.value(SUCCESS, id=HELD) == 1
    assert result.value("elevate_import_up") == 1


def test_a_429_without_retry_after_is_asked_again_at_the_next_scrape(
    httpserver: HTTPServer, elevate: Callable[..., Exporter]
) -> None:
    httpserver.expect_oneshot_request(path_of(HELD)).respond_with_json(answer(HELD))
    httpserver.expect_oneshot_request(path_of(HELD)).respond_with_data("slow down", status=429)
    httpserver.expect_request(path_of(HELD)).respond_with_json(answer(HELD, "SUCCESS"))
    exporter = elevate()
    assert scrape_now(exporter.url).value(SUCCESS, id=HELD) == 0
    result = scrape_now(exporter.url)
    assert asked(httpserver, HELD) == 3
    assert result.current_status(HELD) == "SUCCESS"


def test_a_503_with_retry_after_holds_back_every_id_until_then(
    httpserver: HTTPServer, elevate: Callable[..., Exporter]
) -> None:
    httpserver.expect_oneshot_request(path_of(HELD)).respond_with_json(answer(HELD, "BLOCKED"))
    httpserver.expect_oneshot_request(path_of(HELD)).respond_with_data(
        "cluster busy", status=503, headers={"Retry-After": "3600"}
    )
    httpserver.expect_request(path_of(HELD)).respond_with_json(answer(HELD, "SUCCESS"))
    # One at a time, so that OTHER is asked after the 503 of the same round or not at all.
    exporter = elevate(concurrency="1")
    busy = scrape_now(exporter.url)
    assert busy.value(SUCCESS, id=HELD) == 0
    sent = len(httpserver.log)

    for _ in range(3):
        result = scrape_now(exporter.url)
        assert len(httpserver.log) == sent
        assert result.current_status(HELD) == "BLOCKED"
        assert result.current_status(OTHER) == "IN_PROGRESS"
        assert result.value(SUCCESS, id=HELD) == 0
        assert result.value(SUCCESS, id=OTHER) == 0
        # Nothing was queried, so nothing failed: up stays 1 (the contract's "or
        # needed to query none"); every id's poll_success 0 shows the hold.
        assert result.value("elevate_import_up") == 1
        assert result.value("elevate_import_api_requests_total", code="503") == 1


def test_a_whole_api_hold_ends_when_its_retry_after_has_passed(
    httpserver: HTTPServer, elevate: Callable[..., Exporter]
) -> None:
    httpserver.expect_oneshot_request(path_of(HELD)).respond_with_json(answer(HELD, "BLOCKED"))
    httpserver.expect_oneshot_request(path_of(HELD)).respond_with_data(
        "cluster busy", status=503, headers={"Retry-After": "1"}
    )
    httpserver.expect_request(path_of(HELD)).respond_with_json(answer(HELD, "SUCCESS"))
    exporter = elevate(concurrency="1")
    began = time.monotonic()
    scrape_now(exporter.url)
    sent = len(httpserver.log)

    def asked_again() -> Scrape | None:
        result = scrape_now(exporter.url)
        return result if len(httpserver.log) > sent else None

    result = wait_until(asked_again, timeout=20, what="the API to be asked again")
    assert time.monotonic() - began >= 1.0
    assert result.current_status(HELD) == "SUCCESS"
    assert result.value(SUCCESS, id=HELD) == 1
    assert result.value(SUCCESS, id=OTHER) == 1
    assert result.value("elevate_import_up") == 1


def test_a_retry_after_longer_than_the_cap_holds_for_the_cap_only() -> None:
    now = [1000.0]
    holds = Holds(monotonic=lambda: now[0])
    year = 365 * 24 * 3600.0
    holds.note(HELD, ApiError("rate_limited", "HTTP 429", code="429", retry_after=year))
    assert holds.held([HELD, OTHER]) == {HELD}
    now[0] += MAX_RETRY_AFTER_HOLD - 1
    assert holds.held([HELD, OTHER]) == {HELD}
    now[0] += 1
    assert holds.held([HELD, OTHER]) == set()
    assert holds.note(OTHER, ApiError("server_error", "HTTP 503", code="503", retry_after=year))
    now[0] += MAX_RETRY_AFTER_HOLD - 1
    assert holds.held([HELD, OTHER]) == {HELD, OTHER}
    now[0] += 1
    assert holds.held([HELD, OTHER]) == set()


# -- ids that leave their source for a while --------------------------------------------


def test_ids_that_leave_the_file_briefly_come_back_as_they_were(
    simulator: Simulator, exporter_for: ExporterFor, ids_path: Path
) -> None:
    simulator.add_import(ScriptedImport("2001", (Step("FAILURE", message="No title"),)))
    simulator.add_import(ScriptedImport("2002", (Step("IN_PROGRESS"),)))
    ids_path.write_text("2001\n2002\n")
    exporter = exporter_for(simulator.url, ids_file=str(ids_path))
    before = scrape_now(exporter.url)
    assert before.current_status("2001") == "FAILURE"
    assert simulator.requests_for("2001") == 1

    # Rewritten in place, as a script with `>` does: briefly empty.
    ids_path.write_text("")
    empty = scrape_now(exporter.url)
    assert empty.value(TRACKED) == 0
    assert ids_exported(empty) == set()

    ids_path.write_text("2001\n2002\n")
    after = scrape_now(exporter.url)
    assert after.value(TRACKED) == 2
    for import_id in ("2001", "2002"):
        assert after.value(FIRST_SEEN, id=import_id) == before.value(FIRST_SEEN, id=import_id)
        assert after.value(CHANGED, id=import_id) == before.value(CHANGED, id=import_id)
        assert after.value(SUCCESS, id=import_id) == 1
    assert after.current_status("2001") == "FAILURE"
    assert after.value("elevate_import_info", id="2001", type="PRODUCTS", message="No title") == 1
    # The final import is still known as final: never asked again.
    assert simulator.requests_for("2001") == 1
    assert after.current_status("2002") == "IN_PROGRESS"


def poller_for(sim: Simulator, ids: MemoryIds, **options: Any) -> Poller:
    transport = Transport(sim.url, Secret(SIM_KEY), user_agent=f"test/{__version__}")
    api = StatusApi(flavour_named("web-v2"), transport)
    return Poller(api, TrackedIds([ids]), concurrency=2, **options)


def test_an_id_away_longer_than_forget_after_starts_afresh(simulator: Simulator) -> None:
    simulator.add_import(ScriptedImport("2101", (Step("SUCCESS"),)))
    ids = MemoryIds("api", ["2101"])
    poller = poller_for(simulator, ids, forget_after=0.5)
    try:
        poller.poll(10)
        first_seen = poller.snapshot().imports["2101"].first_seen
        ids.remove("2101")
        poller.poll(10)
        assert "2101" not in poller.snapshot().imports
        gone = time.monotonic()
        wait_until(lambda: time.monotonic() - gone > 0.6, what="the grace period to pass")
        poller.poll(10)  # a round after the grace period forgets the id

        ids.add("2101")
        poller.poll(10)
        state = poller.snapshot().imports["2101"]
        assert state.first_seen > first_seen
        assert simulator.requests_for("2101") == 2
    finally:
        poller.close()


def test_an_id_removed_from_the_file_while_its_round_runs_is_gone_after_that_round(
    httpserver: HTTPServer,
    exporter_for: ExporterFor,
    ids_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    block, entered, release = threading.Event(), threading.Event(), threading.Event()

    def slow(_request: Request) -> Response:
        # Held until the test has changed the file, however fast or slow this machine is.
        if block.is_set():
            entered.set()
            release.wait(30)
        return Response(json.dumps(answer(HELD)), content_type="application/json")

    httpserver.expect_request(path_of(HELD)).respond_with_handler(slow)
    httpserver.expect_request(path_of(OTHER)).respond_with_json(answer(OTHER))
    ids_path.write_text(f"{OTHER}\n{HELD}\n")
    base_url = httpserver.url_for("").rstrip("/")
    exporter = exporter_for(base_url, ids_file=str(ids_path), api_key=KEY, retries="0")
    block.set()
    results: list[Scrape] = []
    scraper = threading.Thread(target=lambda: results.append(scrape_now(exporter.url)))
    with caplog.at_level(logging.WARNING):
        scraper.start()
        try:
            assert entered.wait(30), "the round did not ask for the id"
            ids_path.write_text(f"{OTHER}\n")
        finally:
            release.set()
        scraper.join(30)
        assert results, "the scrape did not answer"
        later = scrape_now(exporter.url)

    for result in (results[0], later):
        assert ids_exported(result) == {OTHER}
        assert result.value(TRACKED) == 1
        assert result.value(SUCCESS, id=OTHER) == 1
        assert result.value("elevate_import_up") == 1
    assert asked(httpserver, HELD) == 2
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
