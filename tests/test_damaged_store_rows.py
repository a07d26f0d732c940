"""A store row that SQLite finds intact but the exporter cannot use (a hand edit, another
tool, a bad restore) is skipped at start-up with one warning naming its id and column: the
exporter starts and serves every page, the good rows stay served, the bad row stays in the
file as it was, and the exporter never writes over it."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from elevate_import_exporter.core.model import id_rule
from elevate_import_exporter.core.records import ImportRecord, Query, Registration
from elevate_import_exporter.lifecycle.catalog import Catalog
from elevate_import_exporter.lifecycle.store import Store
from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from tests.conftest import SIM_KEY, ExporterProcess, ExporterProcessFor
from tests.support import Scrape

COLUMNS = (
    "id",
    "source",
    "first_seen",
    "type",
    "labels",
    "status",
    "message",
    "status_since",
    "last_answer",
    "final_at",
    "retired_at",
    "started_at",
    "left_queue_at",
)
# An hour ago: recent enough that no row is purged as old history.
T0 = float(int(time.time()) - 3600)
LIVE, HISTORY = "1001", "1002"  # the good rows: one still polled, one retired


@dataclass(frozen=True)
class Damage:
    """A row whose ``column`` holds the SQL literal ``value``; ``id`` is its id as SQL."""

    name: str
    column: str
    value: str
    id: str = "'2001'"

    def literals(self) -> dict[str, str]:
        row = {
            "id": self.id,
            "source": "'api'",
            "first_seen": repr(T0),
            "type": "'PRODUCTS'",
            "labels": '\'{"feed":"nightly"}\'',
            "status": "'SUCCESS'",
            "message": "''",
            "status_since": repr(T0 + 60),
            "last_answer": repr(T0 + 60),
            "final_at": repr(T0 + 60),
            "retired_at": repr(T0 + 120),  # retired: shown in the history of the page
            "started_at": repr(T0 - 30),
            "left_queue_at": repr(T0 + 30),
        }
        row[self.column] = self.value
        return row


# The four shapes of issue 20, point 10: a traceback at start, 500 for /metrics and the
# API, a landing page whose connection drops.
FROM_THE_ISSUE = (
    Damage("labels-array", "labels", "'[1,2]'"),
    Damage("type-blob", "type", "X'00FF'"),
    Damage("first-seen-word", "first_seen", "'yesterday'"),
    Damage("retired-far-future", "retired_at", "1e18"),
)

VARIANTS = (
    Damage("first-seen-nan", "first_seen", "'NaN'", "'2101'"),
    Damage("status-since-infinite", "status_since", "9e999", "'2102'"),  # REAL: +Inf
    Damage("first-seen-negative", "first_seen", "-5", "'2103'"),
    # Beyond int64, written as text; a REAL column keeps it as 1e23.
    Damage("last-answer-huge-text", "last_answer", "'99999999999999999999999'", "'2104'"),
    Damage("first-seen-int64-max", "first_seen", "9223372036854775807", "'2105'"),
    Damage("labels-json-string", "labels", "'\"nightly\"'", "'2106'"),
    Damage("labels-newline", "labels", '\'{"feed":"a\\nb"}\'', "'2107'"),
    Damage("labels-raw-control", "labels", "'{\"feed\":\"a' || char(7) || 'b\"}'", "'2108'"),
    Damage("labels-number", "labels", "'{\"feed\":1}'", "'2109'"),
    Damage("labels-bad-name", "labels", '\'{"Feed-Name":"x"}\'', "'2110'"),
    Damage("labels-not-json", "labels", "'{'", "'2111'"),
    Damage("labels-nan", "labels", "'{\"feed\":NaN}'", "'2112'"),
    Damage("status-control", "status", "'IN' || char(1) || 'PROGRESS'", "'2113'"),
    Damage("source-unknown", "source", "'elsewhere'", "'2114'"),
    Damage("message-blob", "message", "X'FF'", "'2115'"),
    Damage("retired-word", "retired_at", "'soon'", "'2116'"),
    Damage("id-slash", "id", "'a/b'", "'a/b'"),
    Damage("id-blob", "id", "X'32313137'", "X'32313137'"),
    Damage("id-too-long", "id", "'" + "9" * 65 + "'", "'" + "9" * 65 + "'"),
)
# The columns of the second schema (when an import began and left the queue) follow the
# same rule; apart from VARIANTS, which fill the warnings that are named one by one.
SECOND_SCHEMA = (
    Damage("started-word", "started_at", "'at the 202'", "'2117'"),
    Damage("left-queue-negative", "left_queue_at", "-1", "'2118'"),
)


@contextlib.contextmanager
def shell(db: Path) -> Iterator[sqlite3.Connection]:
    """A plain connection, as the sqlite3 shell makes one; committed and closed after."""
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        yield conn


def damaged_store(db: Path, damages: Sequence[Damage]) -> None:
    """``db`` with the two good rows and one damaged row per entry of ``damages``."""
    store = Store.open(db)
    try:
        store.save(
            [
                ImportRecord(LIVE, "api", first_seen=T0, type="PRODUCTS"),
                ImportRecord(
                    HISTORY,
                    "api",
                    first_seen=T0,
                    type="PRODUCTS",
                    labels=(("feed", "nightly"),),
                    status="SUCCESS",
                    status_since=T0 + 60,
                    last_answer=T0 + 60,
                    final_at=T0 + 60,
                    retired_at=T0 + 120,
                ),
            ]
        )
    finally:
        store.close()
    with shell(db) as conn:
        for damage in damages:
            row = damage.literals()
            values = ", ".join(row[name] for name in COLUMNS)
            # The test's own literals: a damaged value cannot be passed as a parameter.
            conn.execute(f"INSERT INTO imports ({', '.join(COLUMNS)}) VALUES ({values})")  # noqa: S608


def raw_rows(db: Path) -> dict[str, tuple[object, ...]]:
    """Every row but the polled one exactly as SQLite holds it (``quote()`` keeps types),
    by quoted id: the polled one changes with each answer, as it should."""
    quoted = ", ".join(f"quote({name})" for name in COLUMNS)
    with shell(db) as conn:
        rows = conn.execute(f"SELECT {quoted} FROM imports WHERE id IS NOT ?", (LIVE,))  # noqa: S608
        return {row[0]: row for row in rows}


def start(
    exporter_process: ExporterProcessFor, sim: Simulator, db: Path, *ids: str
) -> ExporterProcess:
    args = ["--elevate.base-url", sim.url, "--storage.path", str(db)]
    for import_id in ids:
        args += ["--elevate.import-id", import_id]
    return exporter_process(*args, env={"ELEVATE_API_KEY": SIM_KEY})


def assert_serves_the_good_rows(proc: ExporterProcess) -> None:
    status, text = proc.get("/metrics")
    assert status == 200, text
    assert Scrape(text).current_status(LIVE) == "SUCCESS"
    status, text = proc.get("/api/v1/imports?limit=1000")
    assert status == 200, text
    listed = {item["id"] for item in json.loads(text)["imports"]}
    assert listed == {LIVE, HISTORY}
    status, text = proc.get(f"/api/v1/imports/{HISTORY}")
    assert status == 200, text
    assert json.loads(text)["labels"] == {"feed": "nightly"}
    status, text = proc.get("/")
    assert status == 200, text
    assert HISTORY in text


def skip_warnings(proc: ExporterProcess) -> list[str]:
    return [line for line in proc.stderr().splitlines() if "skipping the damaged row" in line]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    imports = [ScriptedImport(LIVE, (Step("SUCCESS"),)), ScriptedImport("2001", (Step("WAITING"),))]
    with Simulator(imports, api_key=SIM_KEY) as running:
        yield running


@pytest.mark.parametrize("damage", FROM_THE_ISSUE, ids=lambda d: d.name)
def test_a_damaged_row_of_the_issue_is_skipped_with_a_warning_and_every_page_answers(
    exporter_process: ExporterProcessFor, sim: Simulator, tmp_path: Path, damage: Damage
) -> None:
    db = tmp_path / "store.db"
    damaged_store(db, [damage])
    before = raw_rows(db)
    proc = start(exporter_process, sim, db)
    assert_serves_the_good_rows(proc)
    # Asked again: a damaged row must not break a later page either.
    assert_serves_the_good_rows(proc)
    status, _text = proc.get("/api/v1/imports/2001")
    assert status == 404
    warnings = skip_warnings(proc)
    assert len(warnings) == 1, proc.stderr()
    assert "2001" in warnings[0]
    assert damage.column in warnings[0]
    assert str(db) in warnings[0]
    assert "Traceback" not in proc.stderr()
    assert proc.stop() == 0
    assert raw_rows(db) == before


def test_every_variant_of_a_damaged_row_is_skipped_named_and_left_in_the_file(
    exporter_process: ExporterProcessFor, sim: Simulator, tmp_path: Path
) -> None:
    db = tmp_path / "store.db"
    damaged_store(db, VARIANTS)
    before = raw_rows(db)
    assert len(before) == 1 + len(VARIANTS)
    proc = start(exporter_process, sim, db)
    assert_serves_the_good_rows(proc)
    warnings = skip_warnings(proc)
    assert len(warnings) == len(VARIANTS), proc.stderr()
    skipped = Scrape(proc.get("/metrics")[1]).value("elevate_import_store_skipped_rows")
    assert skipped == len(VARIANTS)
    for damage in VARIANTS:
        assert any(damage.column in line for line in warnings), damage
    for import_id in ("2101", "2116", "a/b", "99999"):
        assert any(import_id in line for line in warnings), import_id
    assert "Traceback" not in proc.stderr()
    assert proc.stop() == 0
    assert raw_rows(db) == before


def test_a_damaged_start_or_queue_time_skips_the_row_and_names_the_column(
    exporter_process: ExporterProcessFor, sim: Simulator, tmp_path: Path
) -> None:
    db = tmp_path / "store.db"
    damaged_store(db, SECOND_SCHEMA)
    before = raw_rows(db)
    proc = start(exporter_process, sim, db)
    assert_serves_the_good_rows(proc)
    warnings = skip_warnings(proc)
    assert len(warnings) == len(SECOND_SCHEMA), proc.stderr()
    for damage in SECOND_SCHEMA:
        assert any(damage.column in line and damage.id in line for line in warnings), damage
    assert proc.stop() == 0
    assert raw_rows(db) == before


def test_an_id_given_by_a_flag_whose_row_is_damaged_is_polled_but_its_row_never_written(
    exporter_process: ExporterProcessFor, sim: Simulator, tmp_path: Path
) -> None:
    db = tmp_path / "store.db"
    damage = Damage("first-seen-word", "first_seen", "'yesterday'")
    damaged_store(db, [damage])
    before = raw_rows(db)
    proc = start(exporter_process, sim, db, "2001")
    status, text = proc.get("/metrics")
    assert status == 200, text
    # The operator asked for it: it is polled as a new import...
    assert Scrape(text).current_status("2001") == "WAITING"
    assert sim.requests_for("2001") >= 1
    assert_serves_the_good_rows(proc)
    assert proc.stop() == 0
    # ... and its damaged row is still there, not overwritten by what the round learnt.
    assert raw_rows(db) == before


def test_a_registration_of_an_id_whose_row_is_damaged_gets_503_not_a_silent_answer(
    exporter_process: ExporterProcessFor, sim: Simulator, tmp_path: Path
) -> None:
    db = tmp_path / "store.db"
    damaged_store(db, [Damage("labels-array", "labels", "'[1,2]'")])
    before = raw_rows(db)
    proc = exporter_process(
        *("--elevate.base-url", sim.url, "--storage.path", str(db)),
        "--web.enable-registration",
        env={"ELEVATE_API_KEY": SIM_KEY},
    )
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        proc.url + "/api/v1/imports",
        data=json.dumps({"id": "2001"}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 503
    error = json.loads(caught.value.read())["error"]
    assert "2001" in error
    assert "damaged" in error
    # DELETE does not touch it either: the repair is the operator's.
    delete = urllib.request.Request(proc.url + "/api/v1/imports/2001", method="DELETE")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(delete, timeout=30)
    assert caught.value.code == 404
    assert proc.stop() == 0
    assert raw_rows(db) == before


def test_with_the_admin_api_a_stored_row_whose_id_is_not_numeric_is_skipped(
    tmp_path: Path,
) -> None:
    db = tmp_path / "store.db"
    damaged_store(db, [Damage("id-word", "id", "'not-numeric_ID'", "'not-numeric_ID'")])
    store = Store.open(db)
    try:
        catalog = Catalog.load(
            store,
            retention=86400.0,
            history=86400.0,
            max_registered=100,
            id_rule=id_rule("admin-v4"),
        )
        assert catalog.skipped_rows == 1
        records, total = catalog.query(Query(limit=100))
        assert {record.id for record in records} == {LIVE, HISTORY}
        assert total == 2
        assert catalog.get("not-numeric_ID") is None
        # The same row is fine for the Web API, whose ids may hold letters.
    finally:
        store.close()
    store = Store.open(db)
    try:
        catalog = Catalog.load(
            store, retention=86400.0, history=86400.0, max_registered=100, id_rule=id_rule("web-v2")
        )
        assert catalog.skipped_rows == 0
        assert catalog.get("not-numeric_ID") is not None
        assert catalog.register([Registration("1003")], "api") == [True]
    finally:
        store.close()


def test_the_admin_api_exporter_skips_a_stored_row_whose_id_is_not_numeric(
    exporter_process: ExporterProcessFor, tmp_path: Path
) -> None:
    """Needs app.py to hand the flavour's id rule to Catalog.load."""
    db = tmp_path / "store.db"
    damaged_store(db, [Damage("id-word", "id", "'not-numeric_ID'", "'not-numeric_ID'")])
    before = raw_rows(db)
    with Simulator(
        [ScriptedImport(LIVE, (Step("SUCCESS"),))], api="admin-v4", api_key=SIM_KEY
    ) as sim:
        proc = exporter_process(
            *("--elevate.base-url", sim.url, "--storage.path", str(db)),
            *("--elevate.api", "admin-v4"),
            env={"ELEVATE_API_KEY": SIM_KEY},
        )
        assert_serves_the_good_rows(proc)
        warnings = skip_warnings(proc)
        assert len(warnings) == 1, proc.stderr()
        assert "not-numeric_ID" in warnings[0]
        assert sim.requests_for("not-numeric_ID") == 0
        assert proc.stop() == 0
    assert raw_rows(db) == before


def test_many_damaged_rows_are_warned_about_twenty_at_a_time_and_all_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "store.db"
    damaged_store(
        db, [Damage(f"n{n}", "first_seen", "'yesterday'", f"'{5000 + n}'") for n in range(25)]
    )
    store = Store.open(db)
    try:
        with caplog.at_level("WARNING", logger="elevate_import_exporter.lifecycle.store"):
            catalog = Catalog.load(store, retention=86400.0, history=86400.0, max_registered=100)
        assert catalog.skipped_rows == 25
        lines = [r.getMessage() for r in caplog.records]
        assert len([line for line in lines if "skipping the damaged row" in line]) == 20
        assert any("5 more damaged rows" in line for line in lines)
    finally:
        store.close()


def test_a_damaged_row_that_looks_retired_long_ago_is_never_purged(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    # A negative time is earlier than any cut-off: a purge would take it, and the row with it.
    damaged_store(db, [Damage("retired-negative", "retired_at", "-5")])
    before = raw_rows(db)
    store = Store.open(db)
    try:
        assert len(store.load()) == 2
        assert store.purge(time.time() + 86400.0) == 1  # the good retired row goes
        assert store.delete("2001") is False
        store.retire({"2001": time.time()})
    finally:
        store.close()
    after = raw_rows(db)
    assert after["'2001'"] == before["'2001'"]
