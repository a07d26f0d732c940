"""`promtool check metrics` finds nothing to say about the exporter's real output."""

from __future__ import annotations

import urllib.request

from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from tests.conftest import ExporterFor
from tests.support import Scrape, assert_promtool_approves, need_tool

EVERY_STATUS = {
    "1001": Step("SUCCESS"),
    "1002": Step("FAILURE", message='Import failed: "title" missing\non line 3 \\ of 7'),
    "1003": Step("ABORTED"),
    "1004": Step("WAITING"),
    "1005": Step("BLOCKED"),
    "1006": Step("IN_PROGRESS"),
    "1007": Step("PAUSED"),  # not one of the documented seven
}
UNKNOWN = "1008"  # the simulator answers NOT_FOUND
FAILING = "1009"  # answered 500
GARBAGE = "1010"  # answered 200 with HTML


def test_promtool_check_metrics_reports_nothing_on_a_real_scrape(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    promtool = need_tool("promtool")
    for import_id, step in EVERY_STATUS.items():
        simulator.add_import(ScriptedImport(import_id, (step,)))
    simulator.add_import(ScriptedImport("1011", (Step("IN_PROGRESS"),), type=None))
    simulator.fail_ids.add(FAILING)
    simulator.garbage_ids.add(GARBAGE)
    ids = [*EVERY_STATUS, UNKNOWN, FAILING, GARBAGE, "1011"]
    exporter = exporter_for(simulator.url, ids, retries="0")

    # The scrape exports state held from the start-up round too: the final statuses.
    with urllib.request.urlopen(exporter.url + "/metrics", timeout=30) as response:
        text = response.read().decode("utf-8")

    # The output really holds what promtool is meant to judge.
    scraped = Scrape(text)
    expected = {i: step.status for i, step in EVERY_STATUS.items()} | {UNKNOWN: "NOT_FOUND"}
    for import_id, status in expected.items():
        assert scraped.current_status(import_id) == status
    # One of each in the start-up round and one in the scrape's.
    assert scraped.value("elevate_import_api_errors_total", reason="server_error") == 2
    assert scraped.value("elevate_import_api_errors_total", reason="invalid_response") == 2

    assert_promtool_approves(promtool, text)
