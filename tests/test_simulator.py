"""The simulated Elevate API, spoken to over real HTTP on loopback."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from elevate_import_exporter.simulator import (
    DEMO_UNKNOWN_ID,
    FINAL_STATUSES,
    SCENARIO_FORMAT,
    ScenarioError,
    ScriptedImport,
    Simulator,
    Step,
    demo_imports,
    generated_imports,
    load_scenario,
)
from tests.support import wait_until

KEY = "sim-key"


class Answer:
    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.content_type = response.getheader("Content-Type", "")
        self.content_length = response.getheader("Content-Length")
        self.body = response.read()

    def json(self) -> Any:
        return json.loads(self.body)


def connect(sim: Simulator, timeout: float = 5.0) -> http.client.HTTPConnection:
    address = urlsplit(sim.url)
    assert address.hostname is not None
    return http.client.HTTPConnection(address.hostname, address.port, timeout=timeout)


def ask(
    conn: http.client.HTTPConnection, path: str, key: str | None = KEY, method: str = "GET"
) -> Answer:
    headers = {} if key is None else {"Api-Key": key}
    conn.request(method, path, headers=headers)
    return Answer(conn.getresponse())


def get(sim: Simulator, path: str, key: str | None = KEY, method: str = "GET") -> Answer:
    conn = connect(sim)
    try:
        return ask(conn, path, key, method)
    finally:
        conn.close()


def status_of(sim: Simulator, import_id: str, key: str | None = KEY) -> Answer:
    return get(sim, f"/api/v2/import/status/{import_id}", key)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(
        [
            ScriptedImport("1001", (Step("IN_PROGRESS", queries=2), Step("SUCCESS"))),
            ScriptedImport(
                "1002",
                (Step("FAILURE", message="Import failed: 3 products lack a title"),),
                type=None,
            ),
        ],
        api_key=KEY,
        hang_seconds=0.2,
        seed=1,
    ) as simulator:
        yield simulator


# -- scripted imports --------------------------------------------------------------------


def test_an_import_moves_to_its_next_step_after_the_scripted_number_of_answered_queries(
    sim: Simulator,
) -> None:
    seen = [status_of(sim, "1001").json() for _ in range(4)]

    assert [doc["status"] for doc in seen] == ["IN_PROGRESS", "IN_PROGRESS", "SUCCESS", "SUCCESS"]
    assert seen[0] == {"id": "1001", "status": "IN_PROGRESS", "type": "PRODUCTS"}


def test_a_forbidden_query_does_not_count_as_an_answered_one(sim: Simulator) -> None:
    assert status_of(sim, "1001", key="wrong").status == 403
    assert status_of(sim, "1001", key="wrong").status == 403

    assert status_of(sim, "1001").json()["status"] == "IN_PROGRESS"


def test_an_import_moves_through_timed_steps_as_time_passes(sim: Simulator) -> None:
    sim.add_import(
        ScriptedImport(
            "2001",
            (
                Step("WAITING", queries=1),
                Step("IN_PROGRESS", seconds=0.3),
                Step("BLOCKED", seconds=0.3),
                Step("SUCCESS"),
            ),
        )
    )
    sim.add_import(ScriptedImport("2002", (Step("IN_PROGRESS", seconds=600), Step("SUCCESS"))))
    assert status_of(sim, "2001").json()["status"] == "WAITING"

    seen: list[str] = []

    def finished() -> bool:
        seen.append(status_of(sim, "2001").json()["status"])
        return seen[-1] == "SUCCESS"

    wait_until(finished, timeout=5, what="import 2001 to reach SUCCESS")

    # Whatever the machine's speed, the steps come in order and never go back.
    order = ["IN_PROGRESS", "BLOCKED", "SUCCESS"]
    assert [order.index(status) for status in seen] == sorted(order.index(s) for s in seen)
    assert status_of(sim, "2001").json()["status"] == "SUCCESS"
    assert status_of(sim, "2002").json()["status"] == "IN_PROGRESS"


def test_the_answer_carries_the_message_of_the_step_and_omits_a_type_of_None(
    sim: Simulator,
) -> None:
    assert status_of(sim, "1002").json() == {
        "id": "1002",
        "status": "FAILURE",
        "message": "Import failed: 3 products lack a title",
    }


def test_an_unknown_id_is_a_200_with_status_NOT_FOUND(sim: Simulator) -> None:
    answer = status_of(sim, "5537431447739019570")

    assert answer.status == 200
    assert answer.content_type.startswith("application/json")
    assert answer.json() == {"id": "5537431447739019570", "status": "NOT_FOUND"}


def test_an_added_import_is_served_from_then_on(sim: Simulator) -> None:
    assert status_of(sim, "3001").json()["status"] == "NOT_FOUND"

    sim.add_import(ScriptedImport("3001", (Step("WAITING"),), type="SYNONYMS"))

    assert status_of(sim, "3001").json() == {"id": "3001", "status": "WAITING", "type": "SYNONYMS"}


def test_a_percent_encoded_id_is_decoded(sim: Simulator) -> None:
    sim.add_import(ScriptedImport("a b", (Step("WAITING"),)))

    assert status_of(sim, "a%20b").json()["status"] == "WAITING"


# -- keys, clusters, paths ---------------------------------------------------------------


@pytest.mark.parametrize("key", ["not-the-key", "", None])
def test_a_wrong_or_missing_key_gets_403_without_the_key_in_the_body(
    sim: Simulator, key: str | None
) -> None:
    answer = status_of(sim, "1001", key=key)

    assert answer.status == 403
    assert KEY.encode() not in answer.body
    if key:
        assert key.encode() not in answer.body


def test_changing_the_api_key_at_run_time_rejects_the_old_key(sim: Simulator) -> None:
    assert status_of(sim, "1001").status == 200

    sim.api_key = "rotated-key"

    assert status_of(sim, "1001", key=KEY).status == 403
    assert status_of(sim, "1001", key="rotated-key").status == 200


def test_a_missing_cluster_answers_404_to_everything(sim: Simulator) -> None:
    sim.cluster_missing = True

    assert status_of(sim, "1001").status == 404
    assert get(sim, "/-/healthy").status == 404

    sim.cluster_missing = False
    assert status_of(sim, "1001").status == 200


def test_other_paths_get_404_and_other_methods_405(sim: Simulator) -> None:
    assert get(sim, "/api/v2/import/status/").status == 404
    assert get(sim, "/api/v2/import/status/1001/extra").status == 404
    assert get(sim, "/api/admin/v4/import/status?id=1001").status == 404
    assert get(sim, "/api/v2/import/status/1001", method="POST").status == 405
    assert get(sim, "/api/v2/import/status/1001", method="DELETE").status == 405
    assert get(sim, "/api/v2/import/status/1001", method="HEAD").status == 405
    assert get(sim, "/api/v2/import/status/1001", method="BREW").status == 405
    assert sim.requests_total == 0
    assert get(sim, "/-/healthy").status == 200


# -- failure injection -------------------------------------------------------------------


def test_a_failing_id_gets_500_with_a_text_body(sim: Simulator) -> None:
    sim.fail_ids.add("1001")

    answer = status_of(sim, "1001")

    assert answer.status == 500
    assert answer.content_type.startswith("text/plain")
    assert answer.body


def test_a_garbage_id_gets_200_with_html_that_is_not_json(sim: Simulator) -> None:
    sim.garbage_ids.add("1001")

    answer = status_of(sim, "1001")

    assert answer.status == 200
    assert answer.content_type.startswith("text/html")
    with pytest.raises(json.JSONDecodeError):
        answer.json()


def test_failing_wins_over_garbage_and_the_key_check_wins_over_both(sim: Simulator) -> None:
    sim.fail_ids.add("1001")
    sim.garbage_ids.add("1001")

    assert status_of(sim, "1001").status == 500
    assert status_of(sim, "1001", key="wrong").status == 403


def test_an_error_rate_of_one_answers_every_status_query_with_503_json(sim: Simulator) -> None:
    sim.error_rate = 1.0

    answers = [status_of(sim, "1001") for _ in range(3)]

    assert [a.status for a in answers] == [503, 503, 503]
    assert all("error" in a.json() for a in answers)
    assert get(sim, "/-/healthy").status == 200


def test_a_hanging_id_is_answered_normally_after_the_hang(sim: Simulator) -> None:
    sim.hang_ids.add("1002")
    started = time.monotonic()

    answer = status_of(sim, "1002")

    assert time.monotonic() - started >= 0.2
    assert answer.json()["status"] == "FAILURE"


def test_stop_returns_quickly_while_a_request_hangs() -> None:
    sim = Simulator(hang_ids={"4001"}, hang_seconds=60)
    sim.start()
    outcome: list[object] = []

    def query() -> None:
        try:
            outcome.append(status_of(sim, "4001").status)
        except (OSError, http.client.HTTPException) as exc:
            outcome.append(exc)

    client = threading.Thread(target=query, daemon=True)
    client.start()
    wait_until(lambda: sim.requests_for("4001") == 1, what="the hanging request to arrive")

    started = time.monotonic()
    sim.stop()

    assert time.monotonic() - started < 10
    client.join(timeout=10)
    assert outcome, "the hanging request never ended after stop()"
    assert outcome[0] != 200


def test_latency_delays_status_answers(sim: Simulator) -> None:
    sim.latency = 0.2
    started = time.monotonic()

    assert status_of(sim, "1001").status == 200
    assert time.monotonic() - started >= 0.2


def test_a_stopped_simulator_ends_its_keep_alive_connections(sim: Simulator) -> None:
    conn = connect(sim)
    assert ask(conn, "/api/v2/import/status/1001").status == 200

    sim.stop()

    with pytest.raises((OSError, http.client.HTTPException)):
        ask(conn, "/api/v2/import/status/1001")
    conn.close()


# -- counting and keep-alive -------------------------------------------------------------


def test_requests_are_counted_per_id_and_in_total_whatever_the_answer(sim: Simulator) -> None:
    sim.fail_ids.add("1002")
    status_of(sim, "1001")
    status_of(sim, "1001", key="wrong")
    status_of(sim, "1002")
    status_of(sim, "9999")
    get(sim, "/-/healthy")
    get(sim, "/nowhere")

    assert sim.requests_for("1001") == 2
    assert sim.requests_for("1002") == 1
    assert sim.requests_for("9999") == 1
    assert sim.requests_for("never-asked") == 0
    assert sim.requests_total == 4

    sim.reset_counts()

    assert sim.requests_for("1001") == 0
    assert sim.requests_total == 0


def test_the_control_endpoints_report_and_reset_the_count(sim: Simulator) -> None:
    status_of(sim, "1001")
    status_of(sim, "1002")

    assert get(sim, "/-/sim/stats", key=None).json() == {"requests_total": 2}
    assert get(sim, "/-/sim/reset", key=None, method="POST").status == 200
    assert sim.requests_total == 0
    assert get(sim, "/-/sim/stats", key=None).json() == {"requests_total": 0}


def test_one_keep_alive_connection_carries_several_answers_with_content_length(
    sim: Simulator,
) -> None:
    conn = connect(sim)
    try:
        first = ask(conn, "/api/v2/import/status/1001")
        sock = conn.sock
        second = ask(conn, "/api/v2/import/status/1001", key="wrong")
        third = ask(conn, "/nowhere")
        fourth = ask(conn, "/api/v2/import/status/1001")

        assert [first.status, second.status, third.status, fourth.status] == [200, 403, 404, 200]
        for answer in (first, second, third, fourth):
            assert answer.content_length == str(len(answer.body))
        assert sock is not None
        assert conn.sock is sock, "the connection was reopened between requests"
    finally:
        conn.close()


def test_many_generated_imports_are_served(sim: Simulator) -> None:
    for imp in generated_imports(10_000, status="WAITING"):
        sim.add_import(imp)

    assert status_of(sim, "7000000000000009999").json() == {
        "id": "7000000000000009999",
        "status": "WAITING",
        "type": "PRODUCTS",
    }


# -- scripts and scenario files ----------------------------------------------------------


def test_generated_imports_have_consecutive_ids_and_the_given_status() -> None:
    imports = generated_imports(3, status="BLOCKED", type="ADS")

    assert [imp.id for imp in imports] == [
        "7000000000000000000",
        "7000000000000000001",
        "7000000000000000002",
    ]
    assert all(imp.steps == (Step("BLOCKED"),) and imp.type == "ADS" for imp in imports)
    assert generated_imports(0) == []


def test_the_demo_imports_show_every_way_an_import_can_end() -> None:
    imports = demo_imports()
    last_steps = {imp.id: imp.steps[-1] for imp in imports}
    finals = [step.status for step in last_steps.values()]

    assert "SUCCESS" in finals
    assert "ABORTED" in finals
    assert any(s.status == "FAILURE" and s.message for s in last_steps.values())
    assert any(status not in FINAL_STATUSES for status in finals), "nothing stays in progress"
    ids = [imp.id for imp in imports]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 19 and i.isdigit() for i in [*ids, DEMO_UNKNOWN_ID])
    assert DEMO_UNKNOWN_ID not in ids
    # Every import ends, if it ends, within the ~20 s a first look lasts.
    for imp in imports:
        assert sum(step.seconds or 0 for step in imp.steps) <= 20
        assert all(step.queries is None for step in imp.steps)


def test_a_scenario_file_is_loaded_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "scenario.json"
    path.write_text(
        json.dumps(
            [
                {
                    "id": "5537431447739019570",
                    "steps": [
                        {"status": "WAITING", "seconds": 1.5},
                        {"status": "IN_PROGRESS", "queries": 3},
                        {"status": "FAILURE", "message": "Import failed."},
                    ],
                },
                {"id": "42", "type": None, "steps": [{"status": "IN_PROGRESS"}]},
                {"id": "43", "type": "ADS", "steps": [{"status": "ABORTED"}]},
            ]
        )
    )

    assert load_scenario(path) == [
        ScriptedImport(
            "5537431447739019570",
            (
                Step("WAITING", seconds=1.5),
                Step("IN_PROGRESS", queries=3),
                Step("FAILURE", message="Import failed."),
            ),
            type="PRODUCTS",
        ),
        ScriptedImport("42", (Step("IN_PROGRESS"),), type=None),
        ScriptedImport("43", (Step("ABORTED"),), type="ADS"),
    ]


def test_the_scenario_format_shown_in_help_has_an_example_that_loads(tmp_path: Path) -> None:
    # The example runs from the first "[" to the key list, which starts with the line "id ...".
    before_keys = SCENARIO_FORMAT.split("\nid ")[0]
    path = tmp_path / "scenario.json"
    path.write_text(before_keys[before_keys.index("[") :])

    assert load_scenario(path) == [
        ScriptedImport(
            "1001",
            (
                Step("WAITING", seconds=5),
                Step("IN_PROGRESS", queries=3),
                Step("FAILURE", message="No title"),
            ),
            type="PRODUCTS",
        ),
        ScriptedImport("1002", (Step("IN_PROGRESS"),), type=None),
    ]
    assert len(SCENARIO_FORMAT.splitlines()) <= 15
    assert max(len(line) for line in SCENARIO_FORMAT.splitlines()) <= 79


def one_import(**changes: Any) -> str:
    entry: dict[str, Any] = {"id": "42", "steps": [{"status": "WAITING"}]}
    entry.update(changes)
    return json.dumps([entry])


def one_step(**step: Any) -> str:
    return json.dumps([{"id": "42", "steps": [step]}])


@pytest.mark.parametrize(
    ("content", "named"),
    [
        pytest.param("[{", "invalid JSON", id="invalid-json"),
        pytest.param('{"id": "42"}', "list", id="not-a-list"),
        pytest.param('["42"]', "import #1", id="import-not-an-object"),
        pytest.param(one_import(colour="red"), "'colour'", id="unknown-import-key"),
        pytest.param(one_import(id=""), "'id'", id="empty-id"),
        pytest.param(one_import(id=42), "'id'", id="numeric-id"),
        pytest.param(one_import(type=7), "'type'", id="bad-type"),
        pytest.param(one_import(steps=[]), "'steps' must not be empty", id="empty-steps"),
        pytest.param(one_import(steps={"status": "WAITING"}), "'steps'", id="steps-not-list"),
        pytest.param(one_step(status="WAITING", wait=3), "'wait'", id="unknown-step-key"),
        pytest.param(one_step(seconds=3), "'status' is missing", id="missing-status"),
        pytest.param(one_step(status=""), "status", id="empty-status"),
        pytest.param(one_step(status="W", seconds=1, queries=1), "not both", id="both"),
        pytest.param(one_step(status="W", seconds=0), "seconds", id="zero-seconds"),
        pytest.param(one_step(status="W", seconds="5"), "seconds", id="text-seconds"),
        pytest.param(one_step(status="W", queries=1.5), "queries", id="fractional-queries"),
        pytest.param(one_step(status="W", queries=True), "queries", id="boolean-queries"),
        pytest.param(one_step(status="W", message=5), "message", id="numeric-message"),
        pytest.param(
            json.dumps([{"id": "7", "steps": [{"status": "W"}]}] * 2),
            "duplicate id 7",
            id="duplicate-id",
        ),
    ],
)
def test_a_bad_scenario_file_is_a_ScenarioError_naming_the_problem(
    tmp_path: Path, content: str, named: str
) -> None:
    path = tmp_path / "scenario.json"
    path.write_text(content)

    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)

    assert named in str(caught.value)
    assert str(path) in str(caught.value)


def test_a_bad_step_names_the_import_and_the_step(tmp_path: Path) -> None:
    path = tmp_path / "scenario.json"
    path.write_text(
        json.dumps([{"id": "5537431447739019570", "steps": [{"status": "W"}, {"status": ""}]}])
    )

    with pytest.raises(ScenarioError, match=r"5537431447739019570.*step #2"):
        load_scenario(path)


def test_a_missing_scenario_file_is_a_ScenarioError(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "absent.json")


def test_a_scripted_import_rejects_an_empty_script() -> None:
    with pytest.raises(ScenarioError, match="steps"):
        ScriptedImport("42", ())
