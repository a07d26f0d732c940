"""The Elevate 4 Admin API flavours (admin-v4, admin-v3), each answer served exactly by
pytest-httpserver: the path and headers asked with, the body's numeric id, ``reason``,
no ``type``, gzip, and the ids file held to the Admin API's numeric ids.
"""

from __future__ import annotations

import gzip
import json
import logging
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from elevate_import_exporter.app import Application as Exporter
from elevate_import_exporter.core.model import API_FLAVOURS, id_rule
from elevate_import_exporter.elevate.api import flavour_named
from elevate_import_exporter.elevate.transport import MAX_BODY_BYTES
from elevate_import_exporter.polling.idsfile import IdsFile
from elevate_import_exporter.polling.poller import PROBE_ID
from tests.conftest import ExporterFor
from tests.support import scrape

KEY = "k-0123456789"
# 22 digits, far beyond 2^53: through a float it would come back as 5537431447739019821056.
ID = "5537431447739019570123"
V4 = "/api/admin/v4/import/status"
V3 = "/api/admin/v3/import/status"


def body(import_id: str = ID, status: str = "IN_PROGRESS", reason: str | None = None) -> bytes:
    # Written by hand, not by json.dumps of a str: the id must go as a bare JSON number.
    return b'{"id": %s, "reason": %s, "status": "%s"}' % (
        import_id.encode(),
        json.dumps(reason).encode(),
        status.encode(),
    )


def serve(httpserver: HTTPServer, path: str, data: bytes, **headers: str) -> None:
    httpserver.expect_request(path, query_string={"id": ID}).respond_with_data(
        data, content_type="application/json", headers=headers
    )


@pytest.fixture
def elevate(httpserver: HTTPServer, exporter_for: ExporterFor) -> Callable[..., Exporter]:
    """An admin-v4 exporter (unless told otherwise) tracking ID against the per-test server."""
    # When every query of a round fails, the exporter asks for an id that cannot exist to
    # tell an outage from an id that fails on its own; here the cluster answers it.
    for path in (V4, V3):
        httpserver.expect_request(path, query_string={"id": PROBE_ID}).respond_with_data(
            body(import_id=PROBE_ID, status="NOT_FOUND")
        )

    def start(**options: Any) -> Exporter:
        options.setdefault("api_key", KEY)
        options.setdefault("api", "admin-v4")
        return exporter_for(httpserver.url_for("").rstrip("/"), [ID], **options)

    return start


def info(exporter: Exporter) -> dict[frozenset[tuple[str, str]], float]:
    return scrape(exporter.url).series("elevate_import_info")


def test_a_v4_id_beyond_2_to_the_53_is_asked_for_and_exported_exactly(
    httpserver: HTTPServer, elevate: Callable[..., Exporter]
) -> None:
    serve(httpserver, V4, body(status="IN_PROGRESS"))
    result = scrape(elevate().url)

    assert result.current_status(ID) == "IN_PROGRESS"
    assert result.value("elevate_import_poll_success", id=ID) == 1
    # No type in the Admin API's answers, and a null reason: both empty labels.
    assert result.value("elevate_import_info", id=ID, type="", message="") == 1
    request, _ = httpserver.log[0]
    assert request.path == V4
    assert request.args.getlist("id") == [ID]
    assert request.headers["Api-Key"] == KEY
    assert request.headers["Accept-Encoding"] == "gzip"


def test_the_reason_of_a_failed_import_is_its_message(
    httpserver: HTTPServer, elevate: Callable[..., Exporter]
) -> None:
    serve(httpserver, V4, body(status="FAILURE", reason="Feed rejected: 3 products lack a title"))
    labels = dict(next(iter(info(elevate()))))
    assert labels == {
        "id": ID,
        "type": "",
        "message": "Feed rejected: 3 products lack a title",
    }


def test_admin_v3_asks_the_v3_path(
    httpserver: HTTPServer, elevate: Callable[..., Exporter]
) -> None:
    serve(httpserver, V3, body(status="SUCCESS"))
    result = scrape(elevate(api="admin-v3").url)

    assert result.current_status(ID) == "SUCCESS"
    assert {request.path for request, _ in httpserver.log} == {V3}


def test_a_gzip_answer_is_decoded(httpserver: HTTPServer, elevate: Callable[..., Exporter]) -> None:
    packed = gzip.compress(body(status="ABORTED", reason="Stopped by an operator"))
    serve(httpserver, V4, packed, **{"Content-Encoding": "gzip"})
    result = scrape(elevate().url)

    assert result.current_status(ID) == "ABORTED"
    message = "Stopped by an operator"
    assert result.value("elevate_import_info", id=ID, type="", message=message) == 1


def test_a_gzip_bomb_is_refused_by_the_size_of_what_it_unpacks_to(
    httpserver: HTTPServer, elevate: Callable[..., Exporter]
) -> None:
    # A valid answer that unpacks to 64 MiB from some 64 KiB on the wire: the cap of the
    # body must hold for what the parser would see, not for the bytes that came.
    pad = b" " * (64 * 1024 * 1024)
    bomb = gzip.compress(body(status="FAILURE")[:-1] + b', "pad": "' + pad + b'"}', 1)
    assert len(bomb) < MAX_BODY_BYTES
    httpserver.expect_oneshot_request(V4).respond_with_data(body(status="WAITING"))
    exporter = elevate(retries="0")
    httpserver.expect_oneshot_request(V4).respond_with_data(
        bomb, content_type="application/json", headers={"Content-Encoding": "gzip"}
    )
    httpserver.expect_request(V4).respond_with_data(body(status="SUCCESS"))

    refused = scrape(exporter.url)
    assert refused.value("elevate_import_api_errors_total", reason="invalid_response") == 1
    assert refused.current_status(ID) == "WAITING"
    assert refused.value("elevate_import_poll_success", id=ID) == 0
    # The exporter goes on: the next answer is taken.
    assert scrape(exporter.url).current_status(ID) == "SUCCESS"


NOT_THE_ID_ASKED_FOR = {
    # One less: the same number as the one asked for once both have gone through a float.
    "a neighbouring id": body(import_id="5537431447739019570122"),
    "the id as a fraction": body(import_id="5.537431447739019570123e21"),
    "a negative id": body(import_id="-" + ID),
    "the id as a list": body(import_id=f"[{ID}]"),
}


@pytest.mark.parametrize("data", NOT_THE_ID_ASKED_FOR.values(), ids=NOT_THE_ID_ASKED_FOR.keys())
def test_a_body_whose_id_is_not_the_number_asked_for_is_an_invalid_response(
    httpserver: HTTPServer, elevate: Callable[..., Exporter], data: bytes
) -> None:
    serve(httpserver, V4, data)
    result = scrape(elevate(retries="0").url)

    assert result.value("elevate_import_api_errors_total", reason="invalid_response") == 2
    assert result.value("elevate_import_poll_success", id=ID) == 0
    assert result.current_status(ID) is None


@pytest.mark.parametrize(
    ("answered", "asked"),
    [
        pytest.param(b'{"id": 42, "reason": null, "status": "WAITING"}', "0042", id="zeros"),
        pytest.param(b'{"id": "42", "reason": null, "status": "WAITING"}', "42", id="string"),
        pytest.param(b'{"reason": null, "status": "WAITING"}', "42", id="no-id"),
    ],
)
def test_the_number_answered_matches_the_digits_asked_for_and_the_import_keeps_them(
    answered: bytes, asked: str
) -> None:
    parsed = flavour_named("admin-v4").parse(answered, asked)
    assert (parsed.id, parsed.status, parsed.type, parsed.message) == (asked, "WAITING", "", "")


def test_every_configured_flavour_has_a_url_of_its_own() -> None:
    urls = {
        flavour_named(name).status_url("https://c.elevate-api.cloud", "7") for name in API_FLAVOURS
    }
    assert urls == {
        "https://c.elevate-api.cloud/api/v2/import/status/7",
        "https://c.elevate-api.cloud/api/admin/v4/import/status?id=7",
        "https://c.elevate-api.cloud/api/admin/v3/import/status?id=7",
    }


def test_an_id_that_is_not_a_number_is_skipped_from_the_ids_file_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ids.txt"
    path.write_text(f"{ID}\nimport-7\n0042\n")
    with caplog.at_level(logging.WARNING, logger="elevate_import_exporter.polling.idsfile"):
        ids = IdsFile(path, *id_rule("admin-v4"))

    assert ids.current() == (ID, "0042")
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "line 2" in warning
    assert "'import-7'" in warning
    assert "decimal digits" in warning
    # The same file is good for Web API v2, whose ids may hold letters.
    assert IdsFile(path).current() == (ID, "import-7", "0042")


def test_a_reason_that_echoes_the_key_escaped_or_cuts_an_emoji_leaves_neither_in_the_metrics(
    httpserver: HTTPServer, elevate: Callable[..., Exporter]
) -> None:
    escaped = "".join(f"\\u{ord(c):04x}" for c in KEY)
    data = b'{"id": %s, "reason": "key %s at \\ud83d", "status": "FAILURE"}' % (
        ID.encode(),
        escaped.encode(),
    )
    serve(httpserver, V4, data)
    exporter = elevate()
    with urllib.request.urlopen(exporter.url + "/metrics", timeout=30) as answer:
        text = answer.read().decode("utf-8")
    with urllib.request.urlopen(exporter.url + "/", timeout=30) as page:
        html = page.read().decode("utf-8")
    assert KEY not in text
    assert KEY not in html
    result = scrape(exporter.url)
    assert result.current_status(ID) == "FAILURE"
    assert result.value("elevate_import_info", id=ID, type="", message="key <redacted> at \ufffd")
