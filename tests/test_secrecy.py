"""The API key never shows: not in metrics, pages, logs at debug level, nor error messages."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pytest_httpserver import HTTPServer

from elevate_import_exporter.cli import cli
from elevate_import_exporter.core.logs import redacting
from elevate_import_exporter.lifecycle.registration import RegistrationError, parse
from elevate_import_exporter.settings.config import ConfigError, load_settings
from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from tests.conftest import EXPORTER_ENV, ExporterProcess, ExporterProcessFor
from tests.support import Scrape, wait_until

KEY = "KEY-5f1c9e-DO-NOT-LEAK"
STATUS_PATH = "/api/v2/import/status/"


def everything_served(proc: ExporterProcess) -> dict[str, str]:
    """Every page the exporter serves, after a scrape, by path."""
    pages = {}
    for path in ("/metrics", "/", "/-/healthy", "/-/ready"):
        status, text = proc.get(path)
        assert status == 200, path
        pages[path] = text
    return pages


def assert_no_key_anywhere(proc: ExporterProcess) -> None:
    for path, text in everything_served(proc).items():
        assert KEY not in text, f"the key is in {path}"
    proc.stop()
    stderr = proc.stderr()
    assert KEY not in stderr, "the key is in the log"
    # The log was at debug level, so the test saw everything the exporter can log.
    assert "level=debug" in stderr or '"level": "debug"' in stderr


@pytest.mark.parametrize("log_format", ["logfmt", "json"])
def test_the_key_stays_secret_through_good_answers_and_403s(
    exporter_process: ExporterProcessFor, log_format: str
) -> None:
    imports = [
        ScriptedImport("1001", (Step("IN_PROGRESS"),)),
        ScriptedImport("1002", (Step("FAILURE", message="Import failed."),)),
    ]
    with Simulator(imports, api_key=KEY) as sim:
        proc = exporter_process(
            "--elevate.base-url",
            sim.url,
            "--elevate.import-id",
            "1001",
            "--elevate.import-id",
            "1002",
            "--log.level",
            "debug",
            "--log.format",
            log_format,
            # Every scrape runs a round, so the one after the key changes meets the 403.
            "--elevate.min-poll-interval",
            "0s",
            env={"ELEVATE_API_KEY": KEY},
        )
        assert Scrape(proc.get("/metrics")[1]).value("elevate_import_up") == 1
        sim.api_key = "rotated-key"
        forbidden = Scrape(proc.get("/metrics")[1])
        assert forbidden.value("elevate_import_up") == 0
        assert forbidden.value("elevate_import_api_errors_total", reason="forbidden") == 1
        assert_no_key_anywhere(proc)


def echo_server(httpserver: HTTPServer, status: int, body: str, content_type: str) -> str:
    # Every status request gets the echo: the probe of an id that cannot exist (sent when
    # no id gets a valid answer) must not leak what it echoes either.
    httpserver.expect_request(re.compile(re.escape(STATUS_PATH) + ".*")).respond_with_data(
        body, status=status, content_type=content_type
    )
    return httpserver.url_for("").rstrip("/")


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (403, json.dumps({"message": f"Api-Key {KEY} could not be validated"}), "application/json"),
        (404, f"<html><body>No cluster for key {KEY}</body></html>", "text/html"),
        (500, f"Internal error while checking Api-Key: {KEY}", "text/plain"),
        (503, json.dumps({"error": "busy", "key": KEY}), "application/json"),
        (429, f"Too many requests for {KEY}", "text/plain"),
        (400, f"Bad request, headers were Api-Key: {KEY}", "text/plain"),
        (200, f"<html>Proxy login for {KEY}</html>", "text/html"),
        (200, json.dumps([KEY]), "application/json"),
    ],
)
def test_an_error_body_that_echoes_the_key_does_not_leak_it(
    exporter_process: ExporterProcessFor,
    httpserver: HTTPServer,
    status: int,
    body: str,
    content_type: str,
) -> None:
    base_url = echo_server(httpserver, status, body, content_type)
    proc = exporter_process(
        "--elevate.base-url",
        base_url,
        "--elevate.import-id",
        "1001",
        "--elevate.retries",
        "0",
        "--elevate.min-poll-interval",
        "0s",
        "--log.level",
        "debug",
        env={"ELEVATE_API_KEY": KEY},
    )
    scraped = Scrape(proc.get("/metrics")[1])
    assert scraped.value("elevate_import_up") == 0
    assert scraped.value("elevate_import_poll_success", id="1001") == 0
    # The key did go to the API, in the start-up round and the scrape's: the body
    # really echoed what the exporter sent, twice (and to the probe, if one was sent).
    asked = [request.path for request, _ in httpserver.log]
    assert asked.count(STATUS_PATH + "1001") == 2
    assert {request.headers.get("Api-Key") for request, _ in httpserver.log} == {KEY}
    assert_no_key_anywhere(proc)


@pytest.mark.parametrize("field", ["message", "type", "status"])
def test_import_information_that_echoes_the_key_does_not_leak_it(
    exporter_process: ExporterProcessFor, httpserver: HTTPServer, field: str
) -> None:
    doc = {"id": "1001", "status": "FAILURE", "type": "PRODUCTS", "message": "Import failed."}
    doc[field] = f"{KEY}" if field == "status" else f"echo of {KEY}"
    base_url = echo_server(httpserver, 200, json.dumps(doc), "application/json")
    proc = exporter_process(
        "--elevate.base-url",
        base_url,
        "--elevate.import-id",
        "1001",
        "--log.level",
        "debug",
        env={"ELEVATE_API_KEY": KEY},
    )
    assert Scrape(proc.get("/metrics")[1]).value("elevate_import_poll_success", id="1001") == 1
    assert_no_key_anywhere(proc)


def test_a_redirect_does_not_carry_the_key_to_another_server(
    exporter_process: ExporterProcessFor, httpserver: HTTPServer
) -> None:
    with Simulator([ScriptedImport("1001", (Step("SUCCESS"),))], api_key=KEY) as elsewhere:
        httpserver.expect_request(STATUS_PATH + "1001").respond_with_data(
            "", status=302, headers={"Location": f"{elsewhere.url}{STATUS_PATH}1001"}
        )
        proc = exporter_process(
            "--elevate.base-url",
            httpserver.url_for("").rstrip("/"),
            "--elevate.import-id",
            "1001",
            "--log.level",
            "debug",
            env={"ELEVATE_API_KEY": KEY},
        )
        scraped = Scrape(proc.get("/metrics")[1])
        wait_until(lambda: len(httpserver.log) >= 1, what="the exporter's request")
        assert scraped.value("elevate_import_poll_success", id="1001") == 0
        assert elsewhere.requests_total == 0
        assert_no_key_anywhere(proc)


# -- configuration errors -----------------------------------------------------------------


def _config_error(**options: Any) -> str:
    options.setdefault("base_url", "http://127.0.0.1:9")
    with pytest.raises(ConfigError) as caught:
        load_settings(**options)
    return str(caught.value)


def test_configuration_errors_do_not_quote_the_key(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    control_file = tmp_path / "control-key"
    control_file.write_text(KEY + "\x1b[0m\n")
    messages = [
        _config_error(api_key=KEY + "\nX: y"),
        _config_error(api_key=KEY + "\t"),
        _config_error(api_key=KEY, api_key_file=str(key_file)),
        _config_error(api_key_file=str(control_file)),
        _config_error(api_key=KEY, base_url=f"https://user:{KEY}@elevate.example"),
        _config_error(api_key=KEY, base_url=f"https://elevate.example/?key={KEY}"),
        _config_error(api_key=KEY, concurrency="0"),
        _config_error(api_key=KEY, listen_address="nowhere"),
    ]
    for message in messages:
        assert message
        assert KEY not in message, message


def test_the_command_line_does_not_print_the_key_on_a_configuration_error(
    tmp_path: Path,
) -> None:
    env: dict[str, str | None] = dict.fromkeys(EXPORTER_ENV)
    env.update(ELEVATE_API_KEY=KEY + "\n", ELEVATE_BASE_URL="http://127.0.0.1:9")
    result = CliRunner().invoke(cli, ["run"], env=env)
    assert result.exit_code == 2
    assert KEY not in result.output
    env.update(ELEVATE_API_KEY=KEY, ELEVATE_BASE_URL=f"https://u:{KEY}@elevate.example")
    result = CliRunner().invoke(cli, ["run"], env=env)
    assert result.exit_code == 2
    assert KEY not in result.output


def test_a_registration_that_carries_the_exporters_key_stores_and_shows_it_nowhere(
    exporter_process: ExporterProcessFor, httpserver: HTTPServer
) -> None:
    doc = {"id": "1001", "status": "RUNNING", "type": "PRODUCTS", "message": ""}
    base_url = echo_server(httpserver, 200, json.dumps(doc), "application/json")
    proc = exporter_process(
        "--elevate.base-url",
        base_url,
        "--web.enable-registration",
        "--imports.metric-labels",
        "team,feed_name",
        "--log.level",
        "debug",
        env={"ELEVATE_API_KEY": KEY},
    )
    # A feed job that put its key where a label goes: plainly, URL-escaped, inside a JSON
    # text. Whoever reads /metrics or the page must not learn it from them.
    escaped = "%" + "%".join(f"{ord(c):02X}" for c in KEY)
    body = [
        {"id": "1001", "type": f"PRODUCTS {KEY}", "labels": {"team": KEY}},
        {"id": "1002", "type": "PRICES", "labels": {"feed_name": f"nightly?key={escaped}"}},
        {"id": "1003", "labels": {"team": json.dumps({"key": KEY})}},
    ]
    status, answer = proc.post_json("/api/v1/imports", body)
    assert status == 201, answer
    status, listed = proc.get("/api/v1/imports")
    assert status == 200
    records = {r["id"]: r for r in json.loads(listed)["imports"]}
    assert records["1001"]["type"] == "PRODUCTS <redacted>"
    assert records["1001"]["labels"] == {"team": "<redacted>"}
    assert records["1002"]["labels"] == {"feed_name": "nightly?key=<redacted>"}
    page = Scrape(proc.get("/metrics")[1])
    assert page.value("elevate_import_labels", id="1001", team="<redacted>", feed_name="") == 1
    assert KEY not in listed
    assert escaped not in listed
    assert_no_key_anywhere(proc)


def test_an_id_that_holds_the_exporters_key_is_refused_naming_the_field_not_the_key() -> None:
    body = json.dumps({"id": f"id-{KEY}", "type": "PRODUCTS"}).encode()

    def any_id(_: str) -> bool:
        return True

    with pytest.raises(RegistrationError) as refused:
        parse(body, any_id, "any text", redact=redacting([KEY]))
    assert refused.value.field == "id"
    assert KEY not in str(refused.value)
    # Without the exporter's key in the redaction the same id is taken.
    assert [r.id for r in parse(body, any_id, "any text")] == [f"id-{KEY}"]
