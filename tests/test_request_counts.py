"""How many status requests reach Elevate: final imports, concurrent scrapes, ongoing imports.

The functional half of the benchmark (bench/bench.py): the counts are exact, so they
belong in the normal suite; timings do not, and none is asserted here. The exporter's
own start-up round is the first contact with the API: each test checks what it asked,
then counts the scrapes' requests from there.
"""

from __future__ import annotations

import threading

import pytest

from elevate_import_exporter.polling.poller import PROBE_ID
from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from tests.conftest import SIM_KEY, ExporterFor
from tests.support import Scrape, scrape

# Long enough that no deadline ends a round in these tests, even on a slow machine.
TIMEOUT = "30"


def scrape_now(url: str) -> Scrape:
    return scrape(url, X_Prometheus_Scrape_Timeout_Seconds=TIMEOUT)


@pytest.mark.parametrize("final", ["SUCCESS", "FAILURE", "ABORTED"])
def test_an_import_that_reached_a_final_status_is_not_queried_again_on_later_scrapes(
    exporter_for: ExporterFor, final: str
) -> None:
    imports = [
        ScriptedImport("2001", (Step("IN_PROGRESS", queries=1), Step(final, message="done"))),
        ScriptedImport("2002", (Step(final),)),
    ]
    with Simulator(imports, api_key=SIM_KEY) as sim:
        exporter = exporter_for(sim.url, ["2001", "2002"])
        # The start-up round saw 2001 in progress and 2002 already final.
        assert (sim.requests_for("2001"), sim.requests_for("2002")) == (1, 1)

        first = scrape_now(exporter.url)
        # 2001 was not final, so it was asked again; 2002 was not.
        assert first.current_status("2001") == final
        assert first.current_status("2002") == final
        assert (sim.requests_for("2001"), sim.requests_for("2002")) == (2, 1)

        for _ in range(3):
            later = scrape_now(exporter.url)
            # Still exported as seen, still counted as a good poll, but never asked again.
            assert later.current_status("2001") == final
            assert later.current_status("2002") == final
            assert later.value("elevate_import_poll_success", id="2001") == 1
            assert later.value("elevate_import_info", id="2001", type="PRODUCTS", message="done")
        assert (sim.requests_for("2001"), sim.requests_for("2002")) == (2, 1)
        # With nothing left to ask, one probe of the key and no other request.
        assert sim.requests_for(PROBE_ID) == 1
        assert sim.requests_total == 4


def test_an_import_that_is_not_final_is_queried_exactly_once_per_scrape(
    exporter_for: ExporterFor,
) -> None:
    ongoing = ["3001", "3002", "3003"]
    imports = [
        ScriptedImport("3001", (Step("IN_PROGRESS"),)),
        ScriptedImport("3002", (Step("WAITING"),)),
        ScriptedImport("3003", (Step("BLOCKED"),)),
    ]
    unknown = "3999"  # answered NOT_FOUND, which is not final either
    with Simulator(imports, api_key=SIM_KEY) as sim:
        exporter = exporter_for(sim.url, [*ongoing, unknown], concurrency=4)
        assert [sim.requests_for(i) for i in [*ongoing, unknown]] == [1] * 4
        sim.reset_counts()  # of the start-up round
        for scrapes in range(1, 5):
            scraped = scrape_now(exporter.url)
            assert scraped.current_status(unknown) == "NOT_FOUND"
            assert [sim.requests_for(i) for i in [*ongoing, unknown]] == [scrapes] * 4
        assert sim.requests_total == 16


def test_five_simultaneous_scrapes_send_one_request_per_id_in_all_and_see_the_same_statuses(
    exporter_for: ExporterFor,
) -> None:
    statuses = ["IN_PROGRESS", "WAITING", "BLOCKED", "SUCCESS", "FAILURE", "ABORTED"]
    ids = [str(4000 + i) for i in range(12)]
    imports = [ScriptedImport(i, (Step(statuses[n % len(statuses)]),)) for n, i in enumerate(ids)]
    # Half of them final after the start-up round: the scrapes' round asks the other
    # six, two at a time at 0.3 s each, about 0.9 s, which the five scrapes, released
    # together, all arrive within.
    ongoing = [i for n, i in enumerate(ids) if n % len(statuses) < 3]
    with Simulator(imports, api_key=SIM_KEY, latency=0.3) as sim:
        exporter = exporter_for(sim.url, ids, concurrency=2)
        assert sim.requests_total == len(ids)
        sim.reset_counts()  # of the start-up round
        barrier = threading.Barrier(5)
        results: list[Scrape | None] = [None] * 5
        failures: list[BaseException] = []

        def scrape_together(slot: int) -> None:
            try:
                barrier.wait(timeout=30)
                results[slot] = scrape_now(exporter.url)
            except BaseException as exc:  # re-raised in the test's thread below
                failures.append(exc)

        threads = [threading.Thread(target=scrape_together, args=(n,)) for n in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

        assert not failures, failures
        scraped = [result for result in results if result is not None]
        assert len(scraped) == 5
        assert sim.requests_total == len(ongoing) == 6
        assert all(sim.requests_for(i) == (1 if i in ongoing else 0) for i in ids)
        expected = {i: statuses[n % len(statuses)] for n, i in enumerate(ids)}
        for result in scraped:
            assert {i: result.current_status(i) for i in ids} == expected
            assert result.value("elevate_import_up") == 1
        # They shared one round, so they report the very same round duration.
        durations = {result.value("elevate_import_scrape_duration_seconds") for result in scraped}
        assert len(durations) == 1
