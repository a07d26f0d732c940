"""--imports.max-tracked is one budget for flags, the ids file and registrations: a
registration answered 201 is polled, one that cannot be is answered 503 naming the flag, and
an ids file that grows later loses its own extra ids, never a registered one."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from tests.conftest import SIM_KEY, ExporterProcess, ExporterProcessFor
from tests.support import Scrape, wait_until

FILE_IDS = ("3001", "3002", "3003")
REGISTERED = ("4001", "4002", "4003", "4004", "4005")
MORE_FILE_IDS = ("3004", "3005")


def call(url: str, method: str, path: str, body: object = None) -> tuple[int, Any]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    data = None if body is None else json.dumps(body).encode()
    try:
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        connection.close()


def register(url: str, *ids: str) -> tuple[int, Any]:
    documents = [{"id": import_id} for import_id in ids]
    return call(url, "POST", "/api/v1/imports", documents[0] if len(ids) == 1 else documents)


def metrics(proc: ExporterProcess) -> Scrape:
    status, text = proc.get("/metrics")
    assert status == 200, text
    return Scrape(text)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    ids = (*FILE_IDS, *REGISTERED, *MORE_FILE_IDS)
    with Simulator([ScriptedImport(i, (Step("IN_PROGRESS"),)) for i in ids], api_key=SIM_KEY) as s:
        yield s


@pytest.fixture
def ids_file(tmp_path: Path) -> Path:
    path = tmp_path / "ids.txt"
    path.write_text("".join(f"{import_id}\n" for import_id in FILE_IDS))
    return path


def start(exporter_process: ExporterProcessFor, sim: Simulator, ids_file: Path) -> ExporterProcess:
    return exporter_process(
        *("--elevate.base-url", sim.url, "--elevate.import-ids-file", str(ids_file)),
        *("--imports.max-tracked", "5", "--web.enable-registration"),
        *("--elevate.min-poll-interval", "0s"),
        env={"ELEVATE_API_KEY": SIM_KEY},
    )


def test_with_3_ids_in_the_file_and_room_for_5_only_2_of_5_registrations_get_201(
    exporter_process: ExporterProcessFor, sim: Simulator, ids_file: Path
) -> None:
    proc = start(exporter_process, sim, ids_file)
    answers = [register(proc.url, import_id) for import_id in REGISTERED]
    assert [status for status, _body in answers] == [201, 201, 503, 503, 503]
    for _status, body in answers[2:]:
        assert "--imports.max-tracked" in body["error"]
    # Every 201 is a promise kept: those ids are polled, and nothing is refused.
    sim.reset_counts()
    scrape = metrics(proc)
    assert scrape.value("elevate_import_refused_imports") == 0
    assert scrape.value("elevate_import_tracked_imports") == 5
    for import_id in (*FILE_IDS, *REGISTERED[:2]):
        assert scrape.current_status(import_id) == "IN_PROGRESS", import_id
        assert sim.requests_for(import_id) == 1, import_id
    for import_id in REGISTERED[2:]:
        assert sim.requests_for(import_id) == 0, import_id
        assert call(proc.url, "GET", f"/api/v1/imports/{import_id}")[0] == 404
    counts = scrape.series("elevate_import_registrations_total")
    assert counts[frozenset({("result", "created")})] == 2
    assert counts[frozenset({("result", "failed")})] == 3


def test_a_batch_that_would_cross_the_budget_is_refused_whole_and_a_smaller_one_fits(
    exporter_process: ExporterProcessFor, sim: Simulator, ids_file: Path
) -> None:
    proc = start(exporter_process, sim, ids_file)
    status, body = register(proc.url, *REGISTERED[:3])
    assert status == 503
    assert "--imports.max-tracked" in body["error"]
    assert "nothing was registered" in body["error"]
    status, body = call(proc.url, "GET", "/api/v1/imports?source=api")
    assert (status, body["total"]) == (200, 0)
    # An id the file tracks already (and the store knows) needs no room: with it, it fits.
    status, body = register(proc.url, FILE_IDS[0], *REGISTERED[:2])
    assert status == 201, body
    assert [item["created"] for item in body["imports"]] == [False, True, True]
    assert metrics(proc).value("elevate_import_tracked_imports") == 5


def test_ids_the_file_gains_after_registrations_filled_the_budget_are_refused_not_the_registered(
    exporter_process: ExporterProcessFor, sim: Simulator, ids_file: Path
) -> None:
    proc = start(exporter_process, sim, ids_file)
    assert register(proc.url, *REGISTERED[:2])[0] == 201
    with ids_file.open("a") as more:
        more.write("".join(f"{import_id}\n" for import_id in MORE_FILE_IDS))
    sim.reset_counts()
    scrape = metrics(proc)
    assert scrape.value("elevate_import_refused_imports") == 2
    assert scrape.value("elevate_import_tracked_imports") == 5
    assert scrape.value("elevate_import_source_imports", source="api") == 2
    assert scrape.value("elevate_import_source_imports", source="file") == 3
    for import_id in (*FILE_IDS, *REGISTERED[:2]):
        assert sim.requests_for(import_id) == 1, import_id
    for import_id in MORE_FILE_IDS:
        assert sim.requests_for(import_id) == 0, import_id
    wait_until(
        lambda: "2 import ids refused" in proc.stderr(), what="the warning about refused ids"
    )
    warning = next(line for line in proc.stderr().splitlines() if "ids refused" in line)
    assert "--imports.max-tracked" in warning
    # While the file holds more than the budget, an id it refused cannot be registered
    # into a place either, and nothing new can be.
    assert register(proc.url, MORE_FILE_IDS[0])[0] == 503
    assert register(proc.url, REGISTERED[2])[0] == 503


def test_deleting_a_registered_id_frees_its_place_for_the_next_registration(
    exporter_process: ExporterProcessFor, sim: Simulator, ids_file: Path
) -> None:
    proc = start(exporter_process, sim, ids_file)
    assert register(proc.url, *REGISTERED[:2])[0] == 201
    assert register(proc.url, REGISTERED[2])[0] == 503
    assert call(proc.url, "DELETE", f"/api/v1/imports/{REGISTERED[0]}")[0] == 204
    status, body = register(proc.url, REGISTERED[2])
    assert status == 201, body
    sim.reset_counts()
    scrape = metrics(proc)
    assert scrape.value("elevate_import_refused_imports") == 0
    assert sim.requests_for(REGISTERED[2]) == 1
    assert sim.requests_for(REGISTERED[0]) == 0
    # Registering an id again that is tracked already needs no room.
    status, body = register(proc.url, REGISTERED[1])
    assert status == 200, body
    assert body["imports"] == [{"id": REGISTERED[1], "created": False}]


def test_registered_ids_keep_their_places_across_a_restart_when_the_file_grew(
    exporter_process: ExporterProcessFor, sim: Simulator, ids_file: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store.db"
    args = (
        *("--elevate.base-url", sim.url, "--elevate.import-ids-file", str(ids_file)),
        *("--imports.max-tracked", "5", "--web.enable-registration"),
        *("--elevate.min-poll-interval", "0s", "--storage.path", str(store)),
    )
    first = exporter_process(*args, env={"ELEVATE_API_KEY": SIM_KEY})
    assert register(first.url, *REGISTERED[:2])[0] == 201
    assert first.stop() == 0
    with ids_file.open("a") as more:
        more.write("".join(f"{import_id}\n" for import_id in MORE_FILE_IDS))
    second = exporter_process(*args, env={"ELEVATE_API_KEY": SIM_KEY})
    sim.reset_counts()
    scrape = metrics(second)
    assert scrape.value("elevate_import_refused_imports") == 2
    for import_id in REGISTERED[:2]:
        assert sim.requests_for(import_id) == 1, import_id
    for import_id in MORE_FILE_IDS:
        assert sim.requests_for(import_id) == 0, import_id
