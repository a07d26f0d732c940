"""The OpenAPI document of /api/v1: the file in the repository is what the server serves, it
is a valid OpenAPI document, and a property-based fuzzer (schemathesis) finds the running
server answering every request as the document says, and never with a 500."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from elevate_import_exporter.lifecycle.registration import CLOCK_ALLOWANCE
from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from tests.conftest import SIM_KEY
from tests.support import Exporters, missing

DOCUMENT = (
    Path(__file__).resolve().parent.parent
    / "exporter"
    / "elevate_import_exporter"
    / "site"
    / "openapi.json"
)
# Examples per operation and generation phase: enough to reach every keyword of the
# document, few enough to run in well under a minute.
MAX_EXAMPLES = 100

schemathesis: Any
try:
    import hypothesis
    import schemathesis
except ImportError:  # pragma: no cover - a developer without the dev extra
    schemathesis = None


@pytest.fixture(scope="module")
def running() -> Iterator[str]:
    """An exporter with registration enabled, a flagged id and one registered id known."""
    with Simulator(api_key=SIM_KEY) as simulator:
        simulator.add_import(ScriptedImport("1001", (Step("SUCCESS"),)))
        exporters = Exporters()
        app = exporters.start(simulator.url, ["1001"], enable_registration=True)
        yield app.url
        exporters.stop_all()


def test_the_server_serves_the_document_kept_in_the_repository(running: str) -> None:
    with urllib.request.urlopen(running + "/api/v1/openapi.json", timeout=30) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        served = response.read()
    assert served == DOCUMENT.read_bytes()


def test_the_document_is_valid_openapi() -> None:
    try:
        from openapi_spec_validator import validate
    except ImportError:
        missing("openapi-spec-validator is not installed (pip install -e '.[dev]')")
        return
    document = json.loads(DOCUMENT.read_text(encoding="utf-8"))
    validate(document)
    assert document["openapi"].startswith("3.")


def test_the_document_names_every_endpoint_and_status_the_server_has() -> None:
    document = json.loads(DOCUMENT.read_text(encoding="utf-8"))
    operations = {
        (path, method): set(operation["responses"])
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method != "parameters"
    }
    assert operations == {
        ("/api/v1/imports", "get"): {"200", "400", "401", "501", "413", "503"},
        ("/api/v1/imports", "post"): {
            *("200", "201", "400", "401", "403", "501", "413", "415", "503"),
        },
        ("/api/v1/imports/{id}", "get"): {"200", "400", "401", "404", "501", "413", "503"},
        ("/api/v1/imports/{id}", "delete"): {
            *("204", "400", "401", "403", "404", "409", "501", "413", "503"),
        },
        ("/api/v1/openapi.json", "get"): {"200", "400", "401", "501", "413"},
    }
    assert document["components"]["securitySchemes"] == {
        "basic": {
            "type": "http",
            "scheme": "basic",
            "description": document["components"]["securitySchemes"]["basic"]["description"],
        }
    }


if schemathesis is not None:
    schema = schemathesis.openapi.from_path(str(DOCUMENT))

    @schema.parametrize()  # type: ignore[untyped-decorator]  # schemathesis' is untyped
    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        derandomize=True,
        database=None,
    )
    def test_every_answer_conforms_to_the_document_and_none_is_a_500(
        case: Any, running: str
    ) -> None:
        if _accepted_in_the_future(case.body):
            # The one rule the document can only say in words: no accepted_at later than
            # the exporter's clock (and an allowance), which no fixed maximum can express.
            # Within seconds of the bound either answer is right; past it, only a 400.
            response = case.call(base_url=running, timeout=30)
            assert response.status_code in (200, 201, 400), response.text
            return
        case.call_and_validate(base_url=running, timeout=30)

    def _accepted_in_the_future(body: object) -> bool:
        items = body if isinstance(body, list) else [body]
        latest = time.time() + CLOCK_ALLOWANCE
        return any(
            isinstance(item, dict)
            and isinstance(item.get("accepted_at"), int | float)
            and item["accepted_at"] > latest - 5  # the server's clock reads a little later
            for item in items
        )

else:  # pragma: no cover

    def test_every_answer_conforms_to_the_document_and_none_is_a_500() -> None:
        missing("schemathesis is not installed (pip install -e '.[dev]')")
