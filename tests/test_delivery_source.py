"""The exporter's side of the standalone proxy's delivery: ``POST /api/v1/imports?source=proxy``
records the ids with source ``proxy``, in the API and the metrics; any other source, or another
parameter, is refused whole with a 400 naming it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from tests.conftest import SIM_KEY
from tests.support import Exporters, Scrape
from tests.test_registration_api import IMPORTS, api_ids, call, scrape_text


@pytest.fixture(scope="module")
def running() -> Iterator[str]:
    with Simulator(api_key=SIM_KEY) as simulator:
        for import_id in ("7001", "7002", "7003"):
            simulator.add_import(ScriptedImport(import_id, (Step("PROCESSING"),)))
        exporters = Exporters()
        app = exporters.start(simulator.url, [], enable_registration=True)
        yield app.url
        exporters.stop_all()


def proxy_ids(url: str) -> set[str]:
    answer = call(url, "GET", IMPORTS + "?source=proxy&limit=1000")
    assert answer.status == 200
    return {item["id"] for item in answer.json["imports"]}


def test_an_id_posted_with_source_proxy_is_shown_and_counted_as_the_proxys(running: str) -> None:
    body = b'[{"id": "7001", "labels": {"feed": "products"}}, {"id": "7002"}]'
    answer = call(running, "POST", IMPORTS + "?source=proxy", body)
    assert answer.status == 201, answer.body
    assert answer.json == {
        "imports": [{"id": "7001", "created": True}, {"id": "7002", "created": True}]
    }
    shown = call(running, "GET", IMPORTS + "/7001")
    assert shown.status == 200
    assert shown.json["source"] == "proxy"
    assert shown.json["labels"] == {"feed": "products"}
    assert {"7001", "7002"} <= proxy_ids(running)
    assert not {"7001", "7002"} & api_ids(running)
    scraped = Scrape(scrape_text(running))
    assert scraped.value("elevate_import_source_imports", source="proxy") == 2


def test_an_id_posted_without_a_source_is_still_recorded_as_the_apis(running: str) -> None:
    answer = call(running, "POST", IMPORTS, b'{"id": "7003"}')
    assert answer.status == 201, answer.body
    assert call(running, "GET", IMPORTS + "/7003").json["source"] == "api"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("source=flag", "source"),
        ("source=file", "source"),
        ("source=api", "source"),
        ("source=PROXY", "source"),
        ("source=", "source"),
        ("source=proxy&source=proxy", "source"),
        ("sourse=proxy", "sourse"),  # a typo must not record the ids as the API's
        ("limit=5", "limit"),
    ],
)
def test_a_post_with_another_source_or_parameter_is_refused_naming_it_and_registers_nothing(
    running: str, query: str, field: str
) -> None:
    before = proxy_ids(running) | api_ids(running)
    answer = call(running, "POST", f"{IMPORTS}?{query}", b'{"id": "7999"}')
    assert answer.status == 400, answer.body
    assert answer.json["field"] == field
    assert "7999" not in proxy_ids(running) | api_ids(running)
    assert proxy_ids(running) | api_ids(running) == before


def test_the_get_filter_on_source_still_takes_every_source(running: str) -> None:
    for source in ("flag", "file", "api", "proxy"):
        assert call(running, "GET", f"{IMPORTS}?source={source}").status == 200
    assert call(running, "GET", f"{IMPORTS}?source=other").json["field"] == "source"
