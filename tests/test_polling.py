"""Poll rounds against the simulator: statuses, timestamps, deadlines, key and cluster errors."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from elevate_import_exporter.polling.poller import PROBE_ID
from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from tests.conftest import ExporterFor
from tests.support import scrape

KEY = "sim-key"
CHANGED = "elevate_import_last_status_change_timestamp_seconds"


def test_the_status_gauge_flips_from_the_old_status_to_the_new_one_when_an_import_moves_on(
    exporter_for: ExporterFor,
) -> None:
    # In progress for the start-up round and the first scrape, then done.
    imports = [ScriptedImport("1001", (Step("IN_PROGRESS", queries=2), Step("SUCCESS")))]
    with Simulator(imports, api_key=KEY) as sim:
        exporter = exporter_for(sim.url, ["1001"])

        first = scrape(exporter.url)
        assert first.current_status("1001") == "IN_PROGRESS"
        labels = {"id": "1001", "type": "PRODUCTS"}
        assert first.value("elevate_import_status", status="SUCCESS", **labels) == 0
        first_change = first.value(CHANGED, id="1001")
        first_seen = first.value("elevate_import_first_seen_timestamp_seconds", id="1001")

        second = scrape(exporter.url)
        assert second.current_status("1001") == "SUCCESS"
        assert second.value("elevate_import_status", status="IN_PROGRESS", **labels) == 0
        # Exactly the seven documented statuses, one of them at 1.
        statuses = [dict(k)["status"] for k in second.series("elevate_import_status")]
        assert sorted(statuses) == sorted(
            ["NOT_FOUND", "WAITING", "BLOCKED", "IN_PROGRESS", "SUCCESS", "FAILURE", "ABORTED"]
        )
        second_change = second.value(
            "elevate_import_last_status_change_timestamp_seconds", id="1001"
        )
        assert first_change is not None
        assert second_change is not None
        assert second_change > first_change
        assert second.value("elevate_import_first_seen_timestamp_seconds", id="1001") == first_seen


def test_the_status_change_time_stays_put_while_the_status_does_not_change(
    exporter_for: ExporterFor,
) -> None:
    with Simulator([ScriptedImport("1002", (Step("WAITING"),))], api_key=KEY) as sim:
        exporter = exporter_for(sim.url, ["1002"])
        name = "elevate_import_last_status_change_timestamp_seconds"
        before = scrape(exporter.url).value(name, id="1002")
        after = scrape(exporter.url).value(name, id="1002")
        assert before is not None
        assert before == after
        # Asked three times (the start-up round, two scrapes), the same answer each time.
        assert sim.requests_for("1002") == 3


def test_type_message_and_poll_success_are_published_as_the_api_reports_them(
    exporter_for: ExporterFor,
) -> None:
    imports = [
        ScriptedImport("2001", (Step("FAILURE", message="Import failed."),), type="SYNONYMS"),
        ScriptedImport("2002", (Step("IN_PROGRESS"),), type=None),
    ]
    before = time.time()
    with Simulator(imports, api_key=KEY) as sim:
        exporter = exporter_for(sim.url, ["2001", "2002", "2003"])
        result = scrape(exporter.url)
    after = time.time()

    assert result.current_status("2001") == "FAILURE"
    assert (
        result.value("elevate_import_info", id="2001", type="SYNONYMS", message="Import failed.")
        == 1
    )
    # No type from the API: the label is empty, not missing.
    assert result.value("elevate_import_status", id="2002", type="", status="IN_PROGRESS") == 1
    assert result.value("elevate_import_info", id="2002", type="", message="") == 1
    # An id the cluster does not know is a NOT_FOUND status, not an error.
    assert result.current_status("2003") == "NOT_FOUND"
    for import_id in ("2001", "2002", "2003"):
        assert result.value("elevate_import_poll_success", id=import_id) == 1
        seen = result.value("elevate_import_first_seen_timestamp_seconds", id=import_id)
        assert seen is not None
        assert before - 1 <= seen <= after
    assert result.value("elevate_import_tracked_imports") == 3
    assert result.value("elevate_import_up") == 1


def test_an_undocumented_status_gets_its_own_series_at_1_beside_the_documented_ones_at_0(
    exporter_for: ExporterFor,
) -> None:
    with Simulator([ScriptedImport("3001", (Step("PAUSED"),))], api_key=KEY) as sim:
        exporter = exporter_for(sim.url, ["3001"])
        result = scrape(exporter.url)
        series = {
            dict(labels)["status"]: value
            for labels, value in result.series("elevate_import_status").items()
        }
        assert series.pop("PAUSED") == 1
        assert len(series) == 7
        assert set(series.values()) == {0}
        assert result.value("elevate_import_up") == 1
        # And the next scrape still works.
        assert scrape(exporter.url).current_status("3001") == "PAUSED"


def test_a_scrape_with_a_3s_timeout_answers_in_time_though_one_id_hangs_for_30s(
    exporter_for: ExporterFor,
) -> None:
    imports = [ScriptedImport(i, (Step("IN_PROGRESS"),)) for i in ("4001", "4002", "4003")]
    with Simulator(imports, api_key=KEY, hang_seconds=30) as sim:
        exporter = exporter_for(sim.url, ["4001", "4002", "4003"], timeout="10", retries="0")
        # From now on: a hang in the start-up round would only delay readiness by its 10 s.
        sim.hang_ids.add("4002")
        started = time.monotonic()
        result = scrape(exporter.url, X_Prometheus_Scrape_Timeout_Seconds="3")
        elapsed = time.monotonic() - started

        # Prometheus gives up on the scrape at 3 s: the answer must come before.
        assert elapsed < 3.0
        assert result.value("elevate_import_poll_success", id="4002") == 0
        assert result.current_status("4002") == "IN_PROGRESS"  # as the start-up round saw it
        assert result.value("elevate_import_up") == 0
        for fresh in ("4001", "4003"):
            assert result.value("elevate_import_poll_success", id=fresh) == 1
            assert result.current_status(fresh) == "IN_PROGRESS"


def test_a_hanging_id_keeps_its_last_known_status_with_poll_success_0(
    exporter_for: ExporterFor,
) -> None:
    with Simulator([ScriptedImport("4101", (Step("BLOCKED"),))], api_key=KEY) as sim:
        exporter = exporter_for(sim.url, ["4101"], retries="0")
        assert scrape(exporter.url).current_status("4101") == "BLOCKED"
        sim.hang_ids.add("4101")
        result = scrape(exporter.url, X_Prometheus_Scrape_Timeout_Seconds="1.5")
        assert result.current_status("4101") == "BLOCKED"
        assert result.value("elevate_import_poll_success", id="4101") == 0
        assert result.value("elevate_import_up") == 0


@pytest.mark.parametrize(
    ("break_it", "reason"),
    [
        pytest.param(lambda sim: setattr(sim, "api_key", "rotated"), "forbidden", id="403"),
        pytest.param(
            lambda sim: setattr(sim, "cluster_missing", True), "cluster_not_found", id="404"
        ),
    ],
)
def test_a_key_or_cluster_error_stops_the_round_from_sending_more_requests(
    exporter_for: ExporterFor, break_it: Callable[[Simulator], None], reason: str
) -> None:
    ids = [f"50{n:02d}" for n in range(10)]
    imports = [ScriptedImport(i, (Step("IN_PROGRESS"),)) for i in ids]
    with Simulator(imports, api_key=KEY) as sim:
        exporter = exporter_for(sim.url, ids, concurrency="1", retries="3")
        assert scrape(exporter.url).value("elevate_import_up") == 1
        break_it(sim)
        sim.reset_counts()

        result = scrape(exporter.url)

        # One request learns that the key or cluster is wrong; the other nine are not sent,
        # and a 403/404 is not retried.
        assert sim.requests_total == 1
        assert result.value("elevate_import_up") == 0
        assert result.value("elevate_import_api_errors_total", reason=reason) == 1
        for import_id in ids:
            assert result.value("elevate_import_poll_success", id=import_id) == 0
            # The last known status stays published.
            assert result.current_status(import_id) == "IN_PROGRESS"


def test_a_round_recovers_when_the_key_is_accepted_again(exporter_for: ExporterFor) -> None:
    with Simulator([ScriptedImport("5101", (Step("WAITING"),))], api_key="other") as sim:
        exporter = exporter_for(sim.url, ["5101"])
        refused = scrape(exporter.url)
        assert refused.value("elevate_import_up") == 0
        assert refused.current_status("5101") is None
        sim.api_key = KEY
        result = scrape(exporter.url)
        assert result.value("elevate_import_up") == 1
        assert result.current_status("5101") == "WAITING"
        # Refused in the start-up round and the first scrape, accepted in the second.
        assert result.value("elevate_import_api_requests_total", code="403") == 2
        assert result.value("elevate_import_api_requests_total", code="200") == 1


def test_an_exporter_with_no_ids_serves_its_own_health_and_is_up(
    exporter_for: ExporterFor,
) -> None:
    with Simulator([], api_key=KEY) as sim:
        exporter = exporter_for(sim.url, [])
        result = scrape(exporter.url)
        assert result.value("elevate_import_tracked_imports") == 0
        assert result.value("elevate_import_up") == 1
        assert result.series("elevate_import_status") == {}
        # Only the probe of the key, once at start-up, not again at each scrape.
        scrape(exporter.url)
        assert sim.requests_for(PROBE_ID) == sim.requests_total == 1


def test_parallel_queries_never_exceed_the_configured_concurrency(
    exporter_for: ExporterFor,
) -> None:
    ids = [f"60{n:02d}" for n in range(12)]
    imports = [ScriptedImport(i, (Step("IN_PROGRESS"),)) for i in ids]
    with Simulator(imports, api_key=KEY, latency=0.2) as sim:
        exporter = exporter_for(sim.url, ids, concurrency="3")
        started = time.monotonic()
        result = scrape(exporter.url)
        elapsed = time.monotonic() - started
        assert result.value("elevate_import_up") == 1
        # Twelve 0.2 s answers three at a time need four waves: at least 0.8 s.
        # (A lower bound only: it holds on any machine however slow.)
        assert elapsed >= 0.8
