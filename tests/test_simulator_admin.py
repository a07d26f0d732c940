"""The simulator speaking the Elevate 4 Admin API (admin-v4, admin-v3), over real HTTP on
loopback, and the exporter following imports through it.
"""

from __future__ import annotations

import gzip
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from elevate_import_exporter.core.model import API_FLAVOURS
from elevate_import_exporter.simulator import (
    SIMULATED_APIS,
    ScenarioError,
    ScriptedImport,
    Simulator,
    Step,
    load_scenario,
)
from tests.conftest import ExporterFor
from tests.support import scrape

KEY = "sim-key"
# Beyond 2^53: a float on either side would change its last digits.
BIG = "5537431447739019570123"
PATHS = {
    "web-v2": "/api/v2/import/status/{id}",
    "admin-v4": "/api/admin/v4/import/status?id={id}",
    "admin-v3": "/api/admin/v3/import/status?id={id}",
}


class Answer:
    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.headers = {name.lower(): value for name, value in response.getheaders()}
        self.raw = response.read()

    @property
    def body(self) -> bytes:
        if self.headers.get("content-encoding") == "gzip":
            return gzip.decompress(self.raw)
        return self.raw

    def json(self) -> Any:
        return json.loads(self.body)


def get(sim: Simulator, path: str, **headers: str) -> Answer:
    address = urlsplit(sim.url)
    assert address.hostname is not None
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    try:
        conn.request("GET", path, headers={"Api-Key": KEY, **headers})
        return Answer(conn.getresponse())
    finally:
        conn.close()


@pytest.fixture
def v4() -> Iterator[Simulator]:
    imports = [
        ScriptedImport(BIG, (Step("IN_PROGRESS"),)),
        ScriptedImport("1002", (Step("FAILURE", message="Feed rejected"),), type="ADS"),
    ]
    with Simulator(imports, api="admin-v4", api_key=KEY) as sim:
        yield sim


def test_admin_v4_answers_with_the_id_as_a_bare_number_a_null_reason_and_no_type(
    v4: Simulator,
) -> None:
    answer = get(v4, f"/api/admin/v4/import/status?id={BIG}")

    assert answer.status == 200
    assert answer.headers["content-type"] == "application/json"
    # The number as written, not rounded and not quoted.
    assert f'"id": {BIG},'.encode() in answer.body
    assert answer.json() == {"id": int(BIG), "reason": None, "status": "IN_PROGRESS"}
    assert v4.requests_for(BIG) == 1


def test_the_reason_is_the_message_of_the_step(v4: Simulator) -> None:
    answer = get(v4, "/api/admin/v4/import/status?id=1002")
    # The scripted type (ADS) is not sent: the Admin API has none.
    assert answer.json() == {"id": 1002, "reason": "Feed rejected", "status": "FAILURE"}


def test_an_id_not_scripted_is_not_found_under_its_number(v4: Simulator) -> None:
    answer = get(v4, "/api/admin/v4/import/status?id=00917")
    assert answer.json() == {"id": 917, "reason": None, "status": "NOT_FOUND"}


@pytest.mark.parametrize("api", SIMULATED_APIS)
def test_each_flavour_answers_404_on_the_paths_of_the_others(api: str) -> None:
    with Simulator([ScriptedImport("1001", (Step("WAITING"),))], api=api, api_key=KEY) as sim:
        assert sim.status_path == PATHS[api]
        assert get(sim, PATHS[api].format(id="1001")).json()["status"] == "WAITING"
        for other in set(SIMULATED_APIS) - {api}:
            answer = get(sim, PATHS[other].format(id="1001"))
            assert answer.status == 404
            assert answer.json()["message"] == "No such path."
        assert sim.requests_total == 1


@pytest.mark.parametrize(
    ("accept_encoding", "packed"),
    [
        ("gzip", True),
        ("gzip, deflate", True),
        ("deflate, *", True),
        ("gzip;q=0", False),
        ("gzip;q=0, *", False),
        ("identity", False),
        (None, False),
    ],
)
def test_admin_answers_are_gzipped_only_when_the_client_accepts_it(
    v4: Simulator, accept_encoding: str | None, packed: bool
) -> None:
    headers = {} if accept_encoding is None else {"Accept-Encoding": accept_encoding}
    answer = get(v4, "/api/admin/v4/import/status?id=1002", **headers)

    assert answer.headers.get("content-encoding") == ("gzip" if packed else None)
    assert answer.raw.startswith(b"\x1f\x8b") == packed
    assert int(answer.headers["content-length"]) == len(answer.raw)
    assert answer.headers["vary"] == "Accept-Encoding"
    assert answer.json()["reason"] == "Feed rejected"


def test_web_v2_answers_stay_uncompressed_whatever_the_client_accepts() -> None:
    with Simulator([ScriptedImport("1001", (Step("WAITING"),))], api_key=KEY) as sim:
        answer = get(sim, "/api/v2/import/status/1001", **{"Accept-Encoding": "gzip"})
    assert "content-encoding" not in answer.headers
    assert json.loads(answer.raw)["status"] == "WAITING"


@pytest.mark.parametrize("query", ["id=import-7", "id=", "", "id=1002&id=1003", "ids=1002"])
def test_an_admin_query_without_one_numeric_id_is_a_bad_request(v4: Simulator, query: str) -> None:
    answer = get(v4, f"/api/admin/v4/import/status?{query}")
    assert answer.status == 400
    assert "number" in answer.json()["message"]


def test_admin_ids_must_be_decimal_digits_wherever_imports_come_from(tmp_path: Path) -> None:
    named = ScriptedImport("import-7", (Step("WAITING"),))
    with pytest.raises(ScenarioError, match="'import-7'"):
        Simulator([named], api="admin-v4")
    sim = Simulator(api="admin-v3")
    with pytest.raises(ScenarioError, match="decimal digits"):
        sim.add_import(named)

    path = tmp_path / "scenario.json"
    scenario = [
        {"id": "1001", "steps": [{"status": "WAITING"}]},
        {"id": "import-7", "steps": [{"status": "SUCCESS"}]},
    ]
    path.write_text(json.dumps(scenario))
    with pytest.raises(ScenarioError, match=r"import #2: .*admin-v3.*'import-7'"):
        load_scenario(path, api="admin-v3")
    # The same file serves Web API v2, whose ids may hold letters.
    assert [imp.id for imp in load_scenario(path)] == ["1001", "import-7"]


def test_the_simulator_speaks_every_flavour_the_exporter_knows_and_no_other() -> None:
    assert SIMULATED_APIS == API_FLAVOURS
    with pytest.raises(ValueError, match="web-v3"):
        Simulator(api="web-v3")


def test_the_exporter_follows_an_admin_v4_import_from_waiting_to_failure(
    exporter_for: ExporterFor,
) -> None:
    steps = (
        Step("WAITING", queries=1),  # the exporter's start-up round
        Step("IN_PROGRESS", queries=1),
        Step("FAILURE", message="Feed rejected: 3 products lack a title"),
    )
    with Simulator([ScriptedImport(BIG, steps)], api="admin-v4", api_key=KEY) as sim:
        exporter = exporter_for(sim.url, [BIG], api="admin-v4")
        assert sim.requests_for(BIG) == 1

        moving = scrape(exporter.url)
        assert moving.current_status(BIG) == "IN_PROGRESS"
        assert moving.value("elevate_import_info", id=BIG, type="", message="") == 1

        failed = scrape(exporter.url)
        assert failed.current_status(BIG) == "FAILURE"
        message = "Feed rejected: 3 products lack a title"
        assert failed.value("elevate_import_info", id=BIG, type="", message=message) == 1
        assert failed.value("elevate_import_up") == 1
        assert failed.value("elevate_import_api_requests_total", code="200") == 3


def test_admin_v3_exporter_and_simulator_agree_and_a_v4_exporter_finds_no_cluster_there(
    exporter_for: ExporterFor,
) -> None:
    with Simulator([ScriptedImport(BIG, (Step("SUCCESS"),))], api="admin-v3", api_key=KEY) as sim:
        v3 = scrape(exporter_for(sim.url, [BIG], api="admin-v3").url)
        v4 = scrape(exporter_for(sim.url, [BIG], api="admin-v4", retries="0").url)

    assert v3.current_status(BIG) == "SUCCESS"
    assert v4.current_status(BIG) is None
    assert v4.value("elevate_import_api_errors_total", reason="cluster_not_found") == 2


def test_an_admin_exporter_skips_a_non_numeric_line_of_its_ids_file_with_a_warning(
    exporter_for: ExporterFor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text(f"{BIG}\nfeed-7\n")
    with Simulator([ScriptedImport(BIG, (Step("SUCCESS"),))], api="admin-v4", api_key=KEY) as sim:
        exporter = exporter_for(sim.url, api="admin-v4", ids_file=str(ids_file))
        result = scrape(exporter.url)
    assert result.value("elevate_import_tracked_imports") == 1
    assert result.current_status(BIG) == "SUCCESS"
    assert sim.requests_for("feed-7") == 0
    skipped = [r.getMessage() for r in caplog.records if "feed-7" in r.getMessage()]
    assert len(skipped) == 1
    assert "line 2" in skipped[0]
    assert "digits" in skipped[0]
