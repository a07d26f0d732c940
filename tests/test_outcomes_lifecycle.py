"""Where the aggregates' numbers come from: the store's second schema (an older store
migrated, its finals not counted again, its last-final times seeded), NOT_FOUND counted as
it is retired, the start of an import (accepted_at) checked at registration, carried by
`track --accepted-at` and by the standalone proxy's spool, and the rules of counting."""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from elevate_import_exporter.app import Application
from elevate_import_exporter.cli import cli
from elevate_import_exporter.core.outcomes import LeftQueue, Outcomes, changes
from elevate_import_exporter.core.records import ImportRecord, Registration
from elevate_import_exporter.lifecycle.store import MIGRATIONS, Store
from elevate_import_exporter.proxy.delivery import Delivery, DeliveryFailed
from elevate_import_exporter.settings.config import load_settings
from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from tests.conftest import EXPORTER_ENV, SIM_KEY, ExporterFor
from tests.support import post_json, scrape, wait_until
from tests.test_lifecycle import Clock

T0 = 1_800_000_000.0


def post(url: str, document: object) -> tuple[int, dict[str, object]]:
    status, text = post_json(url + "/api/v1/imports", document)
    return status, json.loads(text)


def record_of(url: str, import_id: str) -> dict[str, object]:
    with urllib.request.urlopen(f"{url}/api/v1/imports/{import_id}", timeout=30) as response:
        answer: dict[str, object] = json.loads(response.read())
        return answer


def kept(exporter: Application, import_id: str) -> ImportRecord:
    record = exporter.catalog.get(import_id)
    assert record is not None, import_id
    return record


# -- the store ------------------------------------------------------------------------------


def test_a_version_1_store_is_migrated_its_finals_seed_the_last_final_times_and_none_is_counted_again(  # noqa: E501
    tmp_path: Path, simulator: Simulator
) -> None:
    db = tmp_path / "store.db"
    Store.open(db, migrations=MIGRATIONS[:1]).close()
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "INSERT INTO imports (id, source, first_seen, type, status, status_since, "
            "last_answer, final_at) VALUES ('3001', 'flag', ?, 'PRODUCTS', 'SUCCESS', ?, ?, ?)",
            (T0, T0 + 60, T0 + 60, T0 + 60),
        )
    simulator.add_import(ScriptedImport("3001", (Step("SUCCESS"),)))
    settings = load_settings(
        base_url=simulator.url,
        api_key=SIM_KEY,
        import_ids=["3001"],
        listen_address="127.0.0.1:0",
        min_poll_interval="0s",
        storage_path=str(db),
    )
    app = Application(settings)
    app.start()
    try:
        assert app.wait_ready(60)
        page = scrape(app.url)
    finally:
        app.stop()
    finished = {"type": "PRODUCTS", "status": "SUCCESS"}
    assert page.value("elevate_import_finished_total", **finished) == 0
    assert page.value("elevate_import_last_final_timestamp_seconds", **finished) == T0 + 60
    with contextlib.closing(Store.open(db)) as migrated:
        [kept] = migrated.load()
        assert (kept.started_at, kept.left_queue_at, kept.final_at) == (None, None, T0 + 60)


def test_an_import_retired_as_not_found_is_counted_once_and_its_time_survives_a_restart(
    tmp_path: Path, simulator: Simulator
) -> None:
    clock = Clock(T0)

    def start() -> Application:
        settings = load_settings(
            base_url=simulator.url,
            api_key=SIM_KEY,
            import_ids=["4404"],  # the simulator knows no such import: NOT_FOUND
            listen_address="127.0.0.1:0",
            min_poll_interval="0s",
            storage_path=str(tmp_path / "store.db"),
            retention="1h",
        )
        app = Application(settings, clock=clock)
        app.start()
        assert app.wait_ready(60)
        return app

    app = start()
    try:
        lost = {"type": "", "status": "NOT_FOUND"}
        # No type yet: no series at 0 for it until one is counted.
        assert scrape(app.url).value("elevate_import_finished_total", **lost) is None
        clock.advance(3601)
        page = scrape(app.url)  # the round that retires it
        assert page.value("elevate_import_finished_total", **lost) == 1
        assert page.value("elevate_import_last_final_timestamp_seconds", **lost) == T0 + 3601
        clock.advance(60)
        assert scrape(app.url).value("elevate_import_finished_total", **lost) == 1
    finally:
        app.stop()
    again = start()
    try:
        page = scrape(again.url)
        assert page.value("elevate_import_finished_total", **lost) == 0
        assert page.value("elevate_import_last_final_timestamp_seconds", **lost) == T0 + 3601
    finally:
        again.stop()


# -- the rules of counting -------------------------------------------------------------------


def test_an_import_is_measured_from_its_start_when_known_else_only_when_seen_before_its_end() -> (
    None
):
    waiting = ImportRecord("1", "api", T0, "ADS", status="WAITING", status_since=T0)
    done = ImportRecord(
        "1",
        "api",
        T0,
        "ADS",
        status="SUCCESS",
        status_since=T0 + 90,
        final_at=T0 + 90,
        left_queue_at=T0 + 90,
    )
    queue, finish = changes(waiting, done)
    assert finish is not None
    assert finish.duration == 90
    assert queue == LeftQueue("ADS", (), 90)
    # Final at first sight, start unknown: counted, no duration, no queue time.
    queue, finish = changes(None, done)
    assert finish is not None
    assert (queue, finish.duration) == (None, None)
    # With its start known (accepted 10 minutes before it was first seen).
    started = replace(done, started_at=T0 - 600)
    queue, finish = changes(None, started)
    assert finish is not None
    assert finish.duration == 690
    assert queue == LeftQueue("ADS", (), 690)
    # A record loaded with final_at is never an end again.
    assert changes(done, done) == (None, None)


def test_values_kept_in_the_store_are_admitted_before_new_ones_and_an_admitted_one_stays() -> None:
    outcomes = Outcomes(("feed",), max_values=2)
    outcomes.restore([("ADS", "SUCCESS", {"feed": "kept"}, T0), ("ADS", "FAILURE", {}, T0)])
    assert outcomes.track("1", "ADS", (("feed", "new"),)) == ("new",)
    assert outcomes.track("2", "ADS", (("feed", "newer"),)) == ("other",)
    assert outcomes.track("3", "ADS", (("feed", "kept"),)) == ("kept",)
    assert outcomes.track("4", "ADS", ()) == ("",)
    assert outcomes.view().overflow == {"feed": 1}
    # Tracking an import again changes nothing: counted once.
    assert outcomes.track("2", "ADS", (("feed", "newer"),)) == ("other",)
    assert outcomes.view().overflow == {"feed": 1}


# -- accepted_at ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [-1, "1700000000", True, None, 1e300, time.time() * 1000, "1" * 40, -0.5],
    ids=["negative", "text", "true", "null", "huge", "milliseconds", "digits", "before-1970"],
)
def test_a_registration_with_an_accepted_at_that_is_no_time_is_refused_naming_it(
    simulator: Simulator, exporter_for: ExporterFor, value: object
) -> None:
    exporter = exporter_for(simulator.url, enable_registration=True)
    status, answer = post(exporter.url, [{"id": "a1"}, {"id": "a2", "accepted_at": value}])
    assert status == 400, answer
    assert answer["field"] == "[1].accepted_at"
    assert exporter.catalog.get("a1") is None  # taken whole or not at all


def test_a_number_too_long_to_be_a_time_is_refused_without_being_converted(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    exporter = exporter_for(simulator.url, enable_registration=True)
    body = b'{"id": "a3", "accepted_at": ' + b"9" * 100_000 + b"}"
    request = urllib.request.Request(
        exporter.url + "/api/v1/imports", data=body, headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 400
    assert json.loads(caught.value.read())["field"] == "accepted_at"


def test_accepted_at_in_the_past_is_the_start_and_a_little_ahead_of_our_clock_is_first_seen(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    exporter = exporter_for(simulator.url, enable_registration=True)
    past = time.time() - 7200
    status, _ = post(exporter.url, [{"id": "b1", "accepted_at": past}])
    assert status == 201
    assert kept(exporter, "b1").started_at == past
    # A client clock a minute ahead: taken, but no import starts after it was first seen.
    status, _ = post(exporter.url, {"id": "b2", "accepted_at": time.time() + 60})
    assert status == 201
    ahead = kept(exporter, "b2")
    assert ahead.started_at == ahead.first_seen
    assert record_of(exporter.url, "b2")["started_at"] is not None


def test_track_passes_accepted_at_and_refuses_one_that_is_no_time(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    exporter = exporter_for(simulator.url, enable_registration=True)
    env: dict[str, str | None] = dict.fromkeys(EXPORTER_ENV)
    runner = CliRunner()
    args = ["track", "--exporter", exporter.url, "--accepted-at"]
    result = runner.invoke(cli, [*args, "1765000000.5", "c1"], env=env)
    assert result.exit_code == 0, result.output
    assert kept(exporter, "c1").started_at == 1765000000.5
    before = time.time()
    result = runner.invoke(cli, [*args, "now", "c2"], env=env)
    assert result.exit_code == 0, result.output
    now_given = kept(exporter, "c2").started_at
    assert now_given is not None
    assert now_given >= math.floor(before)
    for bad in ("yesterday", "-1", "inf", str(time.time() * 1000)):
        result = runner.invoke(cli, [*args, bad, "c3"], env=env)
        assert result.exit_code == 2, result.output
        assert "--accepted-at" in result.output
        assert bad[:20] in result.output
    assert exporter.catalog.get("c3") is None


def test_the_standalone_proxys_queue_stamps_the_202s_time_and_its_spool_keeps_it(
    tmp_path: Path,
) -> None:
    def down(_batch: object) -> None:
        raise DeliveryFailed("unreachable", "the exporter is down", retry=True)

    spool = tmp_path / "spool.jsonl"
    before = time.time()
    first = Delivery(down, spool=spool, backoff_first=30.0, backoff_max=30.0)
    first.register([Registration("d1", "ADS"), Registration("d2", accepted_at=T0)], "proxy")
    first.close(0)
    sent: list[Registration] = []
    second = Delivery(sent.extend, spool=spool, backoff_first=0.01, backoff_max=0.05)
    second.start()
    try:
        wait_until(lambda: len(sent) == 2, what="the spooled registrations")
    finally:
        second.close(5)
    stamped = {registration.id: registration.accepted_at for registration in sent}
    assert stamped["d2"] == T0
    assert stamped["d1"] is not None
    assert before <= stamped["d1"] <= time.time()


def test_a_damaged_row_of_the_last_final_times_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "store.db"
    with contextlib.closing(Store.open(db)) as store:
        store.save([], [("ADS", "SUCCESS", {"feed": "a"}, T0)])
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        rows = [("ADS", "FAILURE", "{}", "soon"), ("ADS", "ABORTED", "[1]", T0), ("", "", "{}", T0)]
        conn.executemany("INSERT INTO last_finals VALUES (?, ?, ?, ?)", rows)
    with contextlib.closing(Store.open(db)) as store:
        assert store.last_finals() == [("ADS", "SUCCESS", {"feed": "a"}, T0)]
    assert "skipping 3 damaged rows of last_finals" in caplog.text


def test_the_values_of_ids_that_left_their_source_unretired_are_forgotten() -> None:
    outcomes = Outcomes(("feed",))
    for import_id in ("1", "2", "3"):
        outcomes.track(import_id, "ADS", (("feed", f"f{import_id}"),))
    outcomes.prune(tracked={"1"}, kept={"2"})
    _names, values, _blank = outcomes.labels_of()
    assert values == {"1": ("f1",), "2": ("f2",)}
