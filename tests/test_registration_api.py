"""The registration API under /api/v1 of a real in-process exporter, over real HTTP: ids handed
over are polled and exported, bad input is refused whole with a JSON error naming the part
to blame, the writing endpoints are off unless enabled and behind basic auth if configured."""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from elevate_import_exporter.core.records import ImportRecord, Query, Registration
from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from elevate_import_exporter.site.restapi import DISABLED, Request, RestApi
from tests.conftest import SIM_KEY, ExporterFor
from tests.support import Exporters, Scrape, scrape

JSON = "application/json"
IMPORTS = "/api/v1/imports"


@dataclass
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        assert self.headers["Content-Type"] == JSON, self.headers
        return json.loads(self.body)


def call(
    url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    content_type: str | None = JSON,
    authorization: str | None = None,
) -> Answer:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {}
    if body is not None and content_type is not None:
        headers["Content-Type"] = content_type
    if authorization is not None:
        headers["Authorization"] = authorization
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return Answer(response.status, dict(response.getheaders()), response.read())
    finally:
        connection.close()


def register(url: str, *documents: object, **extra: Any) -> Answer:
    document = documents[0] if len(documents) == 1 else list(documents)
    return call(url, "POST", IMPORTS, json.dumps(document).encode(), **extra)


def api_ids(url: str) -> set[str]:
    answer = call(url, "GET", IMPORTS + "?source=api&limit=1000")
    assert answer.status == 200
    return {item["id"] for item in answer.json["imports"]}


def registrations(url: str) -> dict[str, float]:
    samples = Scrape(scrape_text(url)).series("elevate_import_registrations_total")
    return {dict(labels)["result"]: value for labels, value in samples.items()}


def scrape_text(url: str) -> str:
    answer = call(url, "GET", "/metrics")
    assert answer.status == 200
    return answer.body.decode()


def scripted(
    simulator: Simulator, import_id: str, status: str, message: str = "", kind: str = "PRODUCTS"
) -> None:
    step = Step(status, message=message or None)
    simulator.add_import(ScriptedImport(import_id, (step,), type=kind))


# -- one exporter for the refusals: none of them may register anything -----------------------


@pytest.fixture(scope="module")
def shared() -> Iterator[str]:
    with Simulator(api_key=SIM_KEY) as simulator:
        exporters = Exporters()
        running = exporters.start(simulator.url, ["1001"], enable_registration=True)
        yield running.url
        exporters.stop_all()


def nested(depth: int) -> bytes:
    return b'{"id": "deep", "labels": {"a": ' + b"[" * depth + b"]" * depth + b"}}"


TOO_MANY = json.dumps([{"id": f"n{n}"} for n in range(1001)]).encode()
NINE_LABELS = json.dumps({"id": "many", "labels": {f"l{n}": "v" for n in range(9)}}).encode()

BAD_BODIES = [
    (b"", None),
    (b"   \n", None),
    (b"null", None),
    (b"42", None),
    (b'"4001"', None),
    (b"true", None),
    (b"[]", None),
    (TOO_MANY, None),
    (b'{"id": "a b"}', "id"),
    (b'{"id": ""}', "id"),
    (b'{"id": "' + b"x" * 65 + b'"}', "id"),
    (b'{"id": 4001}', "id"),
    (b'{"id": ' + b"1" * 5000 + b"}", "id"),
    (b'{"id": null}', "id"),
    (b'{"id": ["4001"]}', "id"),
    (b'{"id": "4001\\n"}', "id"),
    (b'{"id": "caf\\u00e9"}', "id"),
    (b"{}", "id"),
    (b'{"type": "PRODUCTS"}', "id"),
    (b'{"id": "4001", "extra": 1}', "extra"),
    (b'{"id": "4001", "ID": "4002"}', "ID"),
    (b'{"id": "4001", "type": 5}', "type"),
    (b'{"id": "4001", "type": null}', "type"),
    (b'{"id": "4001", "type": "' + b"x" * 65 + b'"}', "type"),
    (b'{"id": "4001", "type": "A\\nB"}', "type"),
    (b'{"id": "4001", "type": "\\u0000"}', "type"),
    (b'{"id": "4001", "type": "\\u001b[31m"}', "type"),
    (b'{"id": "4001", "type": "\\u0085"}', "type"),
    (b'{"id": "4001", "type": "\\ud800"}', "type"),
    (b'{"id": "4001", "type": 1e999}', "type"),
    (b'{"id": "4001", "labels": []}', "labels"),
    (b'{"id": "4001", "labels": null}', "labels"),
    (b'{"id": "4001", "labels": "feed=x"}', "labels"),
    (NINE_LABELS, "labels"),
    (b'{"id": "4001", "labels": {"Feed": "x"}}', "labels.Feed"),
    (b'{"id": "4001", "labels": {"1feed": "x"}}', "labels.1feed"),
    (b'{"id": "4001", "labels": {"fe-ed": "x"}}', "labels.fe-ed"),
    (b'{"id": "4001", "labels": {"": "x"}}', 'labels.""'),
    (b'{"id": "4001", "labels": {"' + b"a" * 65 + b'": "x"}}', "labels." + "a" * 64),
    (b'{"id": "4001", "labels": {"feed": 1}}', "labels.feed"),
    (b'{"id": "4001", "labels": {"feed": null}}', "labels.feed"),
    (b'{"id": "4001", "labels": {"feed": {"a": "b"}}}', "labels.feed"),
    (b'{"id": "4001", "labels": {"feed": "' + b"x" * 129 + b'"}}', "labels.feed"),
    (b'{"id": "4001", "labels": {"feed": "a\\tb"}}', "labels.feed"),
    (b'{"id": "4001", "labels": {"feed": "\\u009b"}}', "labels.feed"),
    (b'{"id": "4001", "id": "4002"}', "id"),
    (b'{"id": "4001", "labels": {"feed": "a", "feed": "b"}}', "feed"),
    (b'{"id": "4001", "type": NaN}', None),
    (b'{"id": "4001", "type": Infinity}', None),
    (b'{"id": "4001", "type": -Infinity}', None),
    (b'{"id": "4001", "type": "\xff"}', None),
    (b'\xef\xbb\xbf{"id": "4001"}', None),
    ('{"id": "4001"}'.encode("utf-16"), None),
    (b'{"id": "4001"} {"id": "4002"}', None),
    (b'{"id": "4001"', None),
    (b"{'id': '4001'}", None),
    (b"[" * 100_000, None),
    (nested(5000), None),
    (b'[{"id": "4001"}, {"id": "bad id"}]', "[1].id"),
    (b'[{"id": "4001"}, 5]', "[1]"),
    (b'[{"id": "4001"}, {"id": "4002", "labels": {"x": 1}}]', "[1].labels.x"),
    (b'[{"id": "4001"}, [{"id": "4002"}]]', "[1]"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
def test_a_bad_body_gets_400_with_a_json_error_naming_the_field_and_registers_nothing(
    shared: str, body: bytes, field: str | None
) -> None:
    answer = call(shared, "POST", IMPORTS, body)
    assert answer.status == 400, answer.body
    error = answer.json
    assert set(error) <= {"error", "field"}
    assert isinstance(error["error"], str)
    assert error["error"]
    assert "\n" not in error["error"]
    assert "Traceback" not in error["error"]
    assert error.get("field") == field
    assert api_ids(shared) == set()


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",  # what curl -d sends unless told otherwise
        "multipart/form-data; boundary=x",
        "application/jsonx",
        "application/json-patch+json",
        "application/json; charset=latin-1",
        "application/json; charset=utf-16",
        "",
    ],
)
def test_a_body_that_is_not_utf8_json_by_its_content_type_gets_415(
    shared: str, content_type: str | None
) -> None:
    body = json.dumps({"id": "4001"}).encode()
    if content_type is None:
        answer = call(shared, "POST", IMPORTS, body, content_type=None)
    else:
        answer = call(shared, "POST", IMPORTS, body, content_type=content_type)
    assert answer.status == 415
    assert "application/json" in answer.json["error"] or "utf-8" in answer.json["error"]
    assert api_ids(shared) == set()


@pytest.mark.parametrize(
    "query",
    [
        "limit=1001",
        "limit=-1",
        "limit=abc",
        "limit=1.5",
        "limit=",
        "offset=x",
        "offset=1000000001",
        "since=yesterday",
        "since=2024-13-01T00:00:00Z",
        "since=2024-01-01T00:00:00",  # no offset: not RFC 3339
        "since=inf",
        "since=nan",
        "finished=yes",
        "retired=1",
        "source=web",
        "status=" + "X" * 65,
        "type=" + "X" * 65,
        "status=SUCCESS&status=FAILURE",
        "unknown=1",
        "status=%ff",
    ],
)
def test_a_bad_query_parameter_gets_400_naming_it(shared: str, query: str) -> None:
    answer = call(shared, "GET", f"{IMPORTS}?{query}")
    assert answer.status == 400
    name = query.split("=", 1)[0]
    if name != "status" or "%ff" not in query:
        assert answer.json["field"] == name
    assert name in answer.json["error"] or "UTF-8" in answer.json["error"]


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("PUT", IMPORTS, 405, "GET, HEAD, POST"),
        ("DELETE", IMPORTS, 405, "GET, HEAD, POST"),
        ("PATCH", IMPORTS + "/4001", 405, "GET, HEAD, DELETE"),
        ("POST", IMPORTS + "/4001", 405, "GET, HEAD, DELETE"),
        ("POST", "/api/v1/openapi.json", 405, "GET, HEAD"),
        ("GET", "/api/v1/nothing", 404, None),
        ("GET", "/api/v1/", 404, None),
        ("GET", IMPORTS + "/", 404, None),
        ("GET", IMPORTS + "/a/b", 404, None),
        ("GET", IMPORTS + "/a%2Fb", 404, None),
        ("GET", IMPORTS + "/bad%20id", 404, None),
        ("GET", IMPORTS + "/%ff", 404, None),
        ("DELETE", IMPORTS + "/" + "x" * 65, 404, None),
    ],
)
def test_a_path_or_method_the_api_does_not_have_gets_a_json_404_or_405_with_allow(
    shared: str, method: str, path: str, status: int, allow: str | None
) -> None:
    answer = call(shared, method, path)
    assert answer.status == status
    assert "error" in answer.json
    assert answer.headers.get("Allow") == allow


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("POST", "/metrics", 405), ("DELETE", "/", 405), ("PUT", "/-/ready", 405)],
)
def test_writing_methods_elsewhere_get_405_with_allow_get_and_head(
    shared: str, method: str, path: str, status: int
) -> None:
    answer = call(shared, method, path, b"{}")
    assert answer.status == status
    assert answer.headers["Allow"] == "GET, HEAD"


def test_a_writing_method_on_an_unknown_path_gets_404(shared: str) -> None:
    assert call(shared, "POST", "/nowhere", b"{}").status == 404


def test_the_refusals_are_counted_as_invalid_on_the_metrics(shared: str) -> None:
    before = registrations(shared)
    call(shared, "POST", IMPORTS, b"{}")
    call(shared, "POST", IMPORTS, b"{}", content_type="text/plain")
    after = registrations(shared)
    assert after["invalid"] == before["invalid"] + 2
    assert after["created"] == before["created"] == 0


# -- registering --------------------------------------------------------------------------------


def test_a_registered_id_is_polled_at_the_next_scrape_and_exported(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    scripted(simulator, "4001", "IN_PROGRESS")
    running = exporter_for(simulator.url, [], enable_registration=True)
    answer = register(running.url, {"id": "4001", "type": "PRODUCTS", "labels": {"feed": "n"}})
    assert answer.status == 201
    assert answer.json == {"imports": [{"id": "4001", "created": True}]}
    # Known before Elevate is asked: listed, and shown with what was registered.
    shown = call(running.url, "GET", IMPORTS + "/4001").json
    assert shown["source"] == "api"
    assert shown["status"] is None
    assert (shown["type"], shown["labels"]) == ("PRODUCTS", {"feed": "n"})
    result = scrape(running.url)
    assert result.current_status("4001") == "IN_PROGRESS"
    assert simulator.requests_for("4001") >= 1
    shown = call(running.url, "GET", IMPORTS + "/4001").json
    assert shown["status"] == "IN_PROGRESS"
    assert shown["last_answer"] is not None
    assert registrations(running.url)["created"] == 1


def test_registering_a_known_id_again_is_200_and_leaves_it_as_it_was(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    running = exporter_for(simulator.url, ["1001"], enable_registration=True)
    assert register(running.url, {"id": "4001", "type": "PRODUCTS"}).status == 201
    again = register(running.url, {"id": "4001", "type": "ORDERS", "labels": {"a": "b"}})
    assert again.status == 200
    assert again.json == {"imports": [{"id": "4001", "created": False}]}
    shown = call(running.url, "GET", IMPORTS + "/4001").json
    assert (shown["type"], shown["labels"]) == ("PRODUCTS", {})
    flagged = register(running.url, {"id": "1001"})
    assert flagged.status == 200
    assert call(running.url, "GET", IMPORTS + "/1001").json["source"] == "flag"
    counts = registrations(running.url)
    assert (counts["created"], counts["existing"]) == (1, 2)


def test_a_batch_answers_each_id_in_its_order_and_is_201_if_any_was_new(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    running = exporter_for(simulator.url, [], enable_registration=True)
    assert register(running.url, {"id": "b"}).status == 201
    answer = register(running.url, {"id": "c"}, {"id": "b"}, {"id": "a"}, {"id": "c"})
    assert answer.status == 201
    assert answer.json["imports"] == [
        {"id": "c", "created": True},
        {"id": "b", "created": False},
        {"id": "a", "created": True},
        {"id": "c", "created": False},
    ]
    assert register(running.url, {"id": "a"}, {"id": "b"}).status == 200
    assert api_ids(running.url) == {"a", "b", "c"}


def test_a_batch_of_1000_is_taken_whole(simulator: Simulator, exporter_for: ExporterFor) -> None:
    running = exporter_for(simulator.url, [], enable_registration=True)
    batch = [{"id": f"id-{n}", "labels": {"run": str(n)}} for n in range(1000)]
    answer = register(running.url, *batch)
    assert answer.status == 201
    assert [item["id"] for item in answer.json["imports"]] == [f"id-{n}" for n in range(1000)]
    assert len(api_ids(running.url)) == 1000


def test_a_batch_with_one_bad_import_registers_none_of_them(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    running = exporter_for(simulator.url, [], enable_registration=True)
    answer = register(running.url, *[{"id": f"ok{n}"} for n in range(999)], {"id": "not ok"})
    assert answer.status == 400
    assert answer.json["field"] == "[999].id"
    assert api_ids(running.url) == set()
    assert scrape(running.url).series("elevate_import_status") == {}


def test_content_type_parameters_and_case_are_accepted(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    running = exporter_for(simulator.url, [], enable_registration=True)
    for n, content_type in enumerate(
        ["application/json; charset=utf-8", "Application/JSON", 'application/json;charset="UTF-8"']
    ):
        assert register(running.url, {"id": f"t{n}"}, content_type=content_type).status == 201


def test_an_admin_flavour_exporter_takes_only_numeric_ids(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    running = exporter_for(simulator.url, [], enable_registration=True, api="admin-v4")
    refused = register(running.url, {"id": "abc"})
    assert refused.status == 400
    assert "decimal digits" in refused.json["error"]
    assert register(running.url, {"id": "4001"}).status == 201
    assert call(running.url, "GET", IMPORTS + "/abc").status == 404


def test_when_the_catalog_cannot_take_more_the_answer_is_503_and_nothing_is_registered(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    running = exporter_for(simulator.url, [], enable_registration=True, max_tracked=2)
    answer = register(running.url, {"id": "a"}, {"id": "b"}, {"id": "c"})
    assert answer.status == 503
    assert "max-tracked" in answer.json["error"]
    assert api_ids(running.url) == set()
    assert registrations(running.url)["failed"] == 1


def test_a_store_that_fails_gets_503_in_json_and_the_landing_page_still_answers(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    running = exporter_for(simulator.url, ["1001"], enable_registration=True)
    running.store.close()  # every read and write of it fails from now on
    for method, path, body in [
        ("POST", IMPORTS, b'{"id": "4001"}'),
        ("GET", IMPORTS, None),
        ("GET", IMPORTS + "/1001", None),
        ("DELETE", IMPORTS + "/4001", None),
    ]:
        answer = call(running.url, method, path, body)
        assert answer.status == 503, (method, path, answer.body)
        assert "store" in answer.json["error"]
    assert call(running.url, "GET", "/").status == 200
    assert registrations(running.url)["failed"] == 1  # the POST; the others register nothing


# -- disabled, and behind basic auth ------------------------------------------------------------


def test_without_the_flag_writing_is_refused_with_403_and_reading_works(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    running = exporter_for(simulator.url, ["1001"])
    answer = register(running.url, {"id": "4001"})
    assert answer.status == 403
    assert answer.json == {"error": DISABLED}
    assert DISABLED == (
        "registration is disabled; start the exporter with --web.enable-registration"
    )
    assert call(running.url, "DELETE", IMPORTS + "/1001").status == 403
    assert call(running.url, "GET", IMPORTS + "/1001").status == 200
    assert call(running.url, "GET", IMPORTS).json["total"] == 1
    assert registrations(running.url)["disabled"] == 1
    assert simulator.requests_for("4001") == 0


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_with_basic_auth_configured_the_api_needs_the_credentials(
    simulator: Simulator, exporter_for: ExporterFor, tmp_path: Path
) -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    config = tmp_path / "web.yml"
    config.write_text(f"basic_auth_users:\n  feeder: '{hashed}'\n", encoding="utf-8")
    running = exporter_for(simulator.url, [], enable_registration=True, web_config_file=str(config))
    body = json.dumps({"id": "4001"}).encode()
    for authorization in (None, basic("feeder", "wrong"), basic("other", "s3cret")):
        answer = call(running.url, "POST", IMPORTS, body, authorization=authorization)
        assert answer.status == 401
        assert answer.headers["WWW-Authenticate"].startswith("Basic")
        assert answer.json == {"error": "unauthorized"}
    assert call(running.url, "GET", IMPORTS).status == 401
    assert call(running.url, "DELETE", IMPORTS + "/4001").status == 401
    right = basic("feeder", "s3cret")
    assert call(running.url, "POST", IMPORTS, body, authorization=right).status == 201
    listed = call(running.url, "GET", IMPORTS, authorization=right)
    assert [item["id"] for item in listed.json["imports"]] == ["4001"]


# -- deleting -----------------------------------------------------------------------------------


def test_delete_forgets_a_registered_id_and_refuses_the_others(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    scripted(simulator, "4001", "IN_PROGRESS")
    running = exporter_for(simulator.url, ["1001"], enable_registration=True)
    assert register(running.url, {"id": "4001"}).status == 201
    assert scrape(running.url).current_status("4001") == "IN_PROGRESS"
    # Percent-decoded once: %34 is "4".
    deleted = call(running.url, "DELETE", IMPORTS + "/%34001")
    assert (deleted.status, deleted.body) == (204, b"")
    assert "Content-Type" not in deleted.headers
    assert call(running.url, "GET", IMPORTS + "/4001").status == 404
    assert scrape(running.url).current_status("4001") is None
    simulator.reset_counts()
    scrape(running.url)
    assert simulator.requests_for("4001") == 0
    again = call(running.url, "DELETE", IMPORTS + "/4001")
    assert again.status == 404
    assert again.json["field"] == "id"
    conflict = call(running.url, "DELETE", IMPORTS + "/1001")
    assert conflict.status == 409
    assert "flag or the ids file" in conflict.json["error"]
    assert call(running.url, "GET", IMPORTS + "/1001").status == 200
    # Decoded once only: %2534 is "%34", which no id can be.
    assert call(running.url, "DELETE", IMPORTS + "/%2534001").status == 404


# -- reading ------------------------------------------------------------------------------------


@pytest.fixture
def history(simulator: Simulator, exporter_for: ExporterFor) -> str:
    """An exporter that has seen imports of each kind: flagged, registered, final or not."""
    scripted(simulator, "1001", "SUCCESS", kind="ORDERS")
    scripted(simulator, "2001", "FAILURE", "Bad row 7")
    scripted(simulator, "2002", "IN_PROGRESS")
    scripted(simulator, "2003", "ABORTED", kind="ORDERS")
    running = exporter_for(simulator.url, ["1001"], enable_registration=True)
    registered = [
        {"id": "2001", "type": "PRODUCTS", "labels": {"feed": "nightly"}},
        {"id": "2002", "type": "PRODUCTS"},
        {"id": "2003", "type": "ORDERS"},
        {"id": "2004"},  # never heard of: NOT_FOUND
    ]
    assert register(running.url, *registered).status == 201
    scrape(running.url)
    url: str = running.url
    return url


def listed(url: str, query: str = "") -> tuple[list[str], int]:
    answer = call(url, "GET", f"{IMPORTS}?{query}")
    assert answer.status == 200, answer.body
    document = answer.json
    return sorted(item["id"] for item in document["imports"]), document["total"]


@pytest.mark.parametrize(
    ("query", "ids"),
    [
        ("", ["1001", "2001", "2002", "2003", "2004"]),
        ("status=FAILURE", ["2001"]),
        ("status=NOT_FOUND", ["2004"]),
        ("status=RUNNING", []),
        ("type=PRODUCTS", ["2001", "2002"]),
        ("source=flag", ["1001"]),
        ("source=api", ["2001", "2002", "2003", "2004"]),
        ("source=proxy", []),
        ("finished=true", ["1001", "2001", "2003"]),
        ("finished=false", ["2002", "2004"]),
        ("retired=true", []),
        ("retired=false", ["1001", "2001", "2002", "2003", "2004"]),
        ("status=FAILURE&type=PRODUCTS&source=api&finished=true", ["2001"]),
        ("since=0", ["1001", "2001", "2002", "2003", "2004"]),
        ("since=4102444800", []),  # 2100
        ("since=2100-01-01T00:00:00Z", []),
        ("since=1970-01-01T01:00:00%2B01:00", ["1001", "2001", "2002", "2003", "2004"]),
    ],
)
def test_the_list_filters_by_each_parameter(history: str, query: str, ids: list[str]) -> None:
    assert listed(history, query) == (ids, len(ids))


def test_the_list_pages_newest_first_with_the_total(history: str) -> None:
    everything = call(history, "GET", IMPORTS).json
    assert (everything["limit"], everything["offset"], everything["total"]) == (100, 0, 5)
    order = [item["id"] for item in everything["imports"]]
    pages = []
    for offset in range(0, 6, 2):
        page = call(history, "GET", f"{IMPORTS}?limit=2&offset={offset}").json
        assert (page["total"], page["limit"], page["offset"]) == (5, 2, offset)
        pages += [item["id"] for item in page["imports"]]
    assert pages == order
    firsts = [item["first_seen"] for item in everything["imports"]]
    assert firsts == sorted(firsts, reverse=True)
    assert call(history, "GET", f"{IMPORTS}?limit=0").json["imports"] == []


def test_an_import_is_shown_with_every_field_in_json_types(history: str) -> None:
    failed = call(history, "GET", IMPORTS + "/2001").json
    assert failed["id"] == "2001"
    assert failed["source"] == "api"
    assert failed["type"] == "PRODUCTS"
    assert failed["labels"] == {"feed": "nightly"}
    assert failed["status"] == "FAILURE"
    assert failed["message"] == "Bad row 7"
    assert failed["retired"] is False
    assert failed["retired_at"] is None
    for name in ("first_seen", "status_since", "last_answer", "final_at"):
        assert failed[name].endswith("Z"), name
    assert isinstance(failed["duration_seconds"], float)
    assert failed["duration_seconds"] >= 0
    running = call(history, "GET", IMPORTS + "/2002").json
    assert (running["final_at"], running["duration_seconds"]) == (None, None)


def test_head_answers_like_get_without_a_body(history: str) -> None:
    got = call(history, "GET", IMPORTS)
    head = call(history, "HEAD", IMPORTS)
    assert (head.status, head.body) == (200, b"")
    assert head.headers["Content-Length"] == got.headers["Content-Length"]


def test_the_landing_page_takes_any_page_parameter(history: str) -> None:
    for query in ("", "?page=1", "?page=2", "?page=0", "?page=-1", "?page=abc", "?page=9" * 30):
        answer = call(history, "GET", "/" + query)
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/html")


def test_the_landing_page_pages_through_the_finished_imports(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    running = exporter_for(simulator.url, [], enable_registration=True)
    ids = [f"done-{n}" for n in range(51)]  # one more than a page holds
    for import_id in ids:
        scripted(simulator, import_id, "SUCCESS")
    assert register(running.url, *[{"id": import_id} for import_id in ids]).status == 201
    scrape(running.url)
    assert listed(running.url, "finished=true&limit=1")[1] == 51
    for query, shown in [("", 1), ("?page=2", 2), ("?page=abc", 1), ("?page=0", 1)]:
        page = call(running.url, "GET", "/" + query).body.decode()
        assert f"page {shown} of 2" in page, query


# -- a bug is a 500 in JSON, never a traceback -------------------------------------------------


class BrokenCatalog:
    """A catalog with a bug in every method."""

    def register(self, registrations: list[Registration], source: str) -> list[bool]:
        raise RuntimeError("bug: register")

    def count(self, result: str) -> None:
        pass

    def get(self, import_id: str) -> ImportRecord | None:
        raise KeyError("bug: get")

    def query(self, query: Query) -> tuple[list[ImportRecord], int]:
        raise TypeError("bug: query")

    def delete(self, import_id: str) -> str:
        return "something new"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", IMPORTS, b'{"id": "4001"}'),
        ("GET", IMPORTS, b""),
        ("GET", IMPORTS + "/4001", b""),
    ],
)
def test_a_bug_becomes_a_json_500_and_a_logged_traceback(
    method: str, path: str, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    api = RestApi(BrokenCatalog(), True, "web-v2")  # type: ignore[arg-type]
    answer = api.answer(Request(method, path, "", JSON, body))
    assert answer.status == 500
    assert json.loads(answer.body) == {"error": "internal error"}
    assert "bug:" in caplog.text
    assert "Traceback" in caplog.text
