"""Issue 20, point 3: the key comes back escaped the way encoders write it, nested.

Elevate's message may quote a JSON document that holds the key, itself a JSON string
(``\\/``, ``\\"``, ``\\\\``), and inside it URL or HTML escapes, in upper or lower case.
A real exporter process polls pytest-httpserver, which answers every id with one such
message; the key must not be readable in /metrics, the landing page, the log or the
``status`` command's output, however a reader undoes the escapes.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from urllib.parse import quote, quote_plus, unquote, unquote_plus

import pytest
from pytest_httpserver import HTTPServer

from elevate_import_exporter.core.logs import Redactor
from tests.conftest import REPO, ExporterProcessFor, exporter_env
from tests.support import Scrape

# The issue's key: written by PHP's json_encode its '/' becomes '\/'.
ISSUE_KEY = "Zm9vYmFy/c2VjcmV0+a2V5"
# A key with '/', '"', '\' and '+'; its backslash and 't' look like JSON's tab escape.
HARD_KEY = 'Zm9v/Ym"Fy\\tc2+V0'
STATUS_PATH = "/api/v2/import/status/"
PROCESS_TIMEOUT = 60.0


# -- how encoders write the key ----------------------------------------------------------


def php_json(value: object) -> str:
    """JSON as PHP's json_encode writes it: '/' escaped as '\\/'."""
    return json.dumps(value, ensure_ascii=False).replace("/", "\\/")


def lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), text)


def html_numeric(key: str) -> str:
    forms = ["&#x{:X};", "&#{};", "&#x{:x};"]
    return "".join(c if c.isalnum() else forms[n % 3].format(ord(c)) for n, c in enumerate(key))


def u_escapes(key: str) -> str:
    return "".join(f"\\u{ord(c):04X}" for c in key)


def mixed(key: str) -> str:
    forms: list[Callable[[str], str]] = [
        lambda c: f"%{ord(c):02X}",
        lambda c: f"&#{ord(c)};",
        lambda c: f"\\u{ord(c):04x}",
        lambda c: c,
    ]
    return "".join(forms[n % 4](c) for n, c in enumerate(key))


def rejected(**fields: str) -> str:
    return php_json({"error": "rejected", **fields})


FORMS: dict[str, Callable[[str], str]] = {
    "the issue's json document": lambda k: rejected(key=k),
    "json inside json": lambda k: rejected(detail=php_json({"key": k})),
    "json inside json inside json": lambda k: php_json({"a": php_json({"b": php_json(k)})}),
    "url-encoded inside json": lambda k: rejected(url="https://e.example/?k=" + quote(k, safe="")),
    "lower-case url escapes inside json": lambda k: rejected(
        u="?k=" + lower_hex(quote(k, safe=""))
    ),
    "form-encoded inside json": lambda k: rejected(form="k=" + quote_plus(k)),
    "html entities inside json": lambda k: rejected(html="<b>" + html_numeric(k) + "</b>"),
    "html named entities inside json": lambda k: rejected(html=html.escape(k)),
    "upper-case \\u escapes inside json": lambda k: rejected(key=u_escapes(k)),
    "url-encoded html inside json": lambda k: rejected(u=quote(html_numeric(k), safe="")),
    "every form mixed": lambda k: "key " + mixed(k) + " rejected",
    "the key in upper case inside json": lambda k: rejected(key=k.upper()),
    # Not in JSON: the hard key's backslash and 't' must not be read as a tab here.
    "html named entities alone": lambda k: (
        f"<p>{html.escape(k).replace('/', '&sol;')}</p> rejected"
    ),
}


def json_unescape(text: str) -> str:
    return re.sub(
        r'\\(?:u[0-9a-fA-F]{4}|["\\/bfnrt])', lambda m: json.loads(f'"{m.group()}"'), text
    )


def readings(text: str, depth: int = 4) -> set[str]:
    """``text`` as a reader may see it: JSON, HTML and URL escapes undone in any order."""
    seen, frontier = {text}, {text}
    for _ in range(depth):
        found = set()
        for item in frontier:
            for decode in (html.unescape, unquote, unquote_plus, json_unescape):
                decoded = decode(item)
                if decoded not in seen:
                    seen.add(decoded)
                    found.add(decoded)
        frontier = found
    return seen


def holds_key(text: str, key: str) -> bool:
    return any(key.lower() in reading.lower() for reading in readings(text))


@pytest.mark.parametrize("key", [ISSUE_KEY, HARD_KEY])
def test_every_form_holds_the_key_for_a_reader_and_fits_in_a_message(key: str) -> None:
    # The forms the tests send really are the key, and the whole of it is within the
    # 200 characters the exporter keeps of a message.
    for name, form in FORMS.items():
        message = form(key)
        assert holds_key(message, key), name
        assert len(message) < 200, name
        assert key not in message, name


# -- the exporter -------------------------------------------------------------------------


def serve_forms(httpserver: HTTPServer, key: str) -> dict[str, str]:
    """Each form of the key as one id's message; the ids by form name."""
    ids = {}
    for number, (name, form) in enumerate(FORMS.items(), 1001):
        import_id = str(number)
        body = {"id": import_id, "status": "FAILURE", "type": "PRODUCTS", "message": form(key)}
        httpserver.expect_request(STATUS_PATH + import_id).respond_with_json(body)
        ids[name] = import_id
    return ids


@pytest.mark.parametrize("key", [ISSUE_KEY, HARD_KEY], ids=["issue key", "hard key"])
def test_an_escaped_key_in_a_message_reaches_neither_metrics_nor_page_nor_log(
    exporter_process: ExporterProcessFor, httpserver: HTTPServer, key: str
) -> None:
    ids = serve_forms(httpserver, key)
    proc = exporter_process(
        "--elevate.base-url", httpserver.url_for("").rstrip("/"),
        *(arg for import_id in ids.values() for arg in ("--elevate.import-id", import_id)),
        "--log.level", "debug",
        env={"ELEVATE_API_KEY": key},
    )  # fmt: skip
    status, metrics = proc.get("/metrics")
    assert status == 200
    messages = {
        dict(labels)["id"]: dict(labels)["message"]
        for labels in Scrape(metrics).series("elevate_import_info")
    }
    for name, import_id in ids.items():
        assert "<redacted>" in messages[import_id], name
        assert not holds_key(messages[import_id], key), name
    # What is not the key stays: the message still says why.
    assert "rejected" in messages[ids["the issue's json document"]]
    assert not holds_key(metrics, key), "the key is in /metrics"
    status, page = proc.get("/")
    assert status == 200
    assert "&lt;redacted&gt;" in page
    assert not holds_key(page, key), "the key is on the landing page"
    proc.stop()
    assert not holds_key(proc.stderr(), key), "the key is in the log"


def run_status(base_url: str, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "elevate_import_exporter", "status",
         "--elevate.base-url", base_url, *args],
        env=exporter_env(ELEVATE_API_KEY=key),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )  # fmt: skip


@pytest.mark.parametrize("key", [ISSUE_KEY, HARD_KEY], ids=["issue key", "hard key"])
def test_the_status_command_shows_no_escaped_key_in_lines_json_or_log(
    httpserver: HTTPServer, key: str
) -> None:
    ids = serve_forms(httpserver, key)
    base_url = httpserver.url_for("").rstrip("/")
    for args in ((), ("--output", "json"), ("--log.level", "debug")):
        done = run_status(base_url, key, *ids.values(), *args)
        assert done.returncode == 1, done.stderr
        assert done.stdout.count("<redacted>") >= len(ids), done.stdout
        assert not holds_key(done.stdout, key), f"the key is in the output of {args}"
        assert not holds_key(done.stderr, key), f"the key is in the log of {args}"


def test_an_error_answer_quoting_the_key_json_in_json_keeps_it_out_of_the_log(
    exporter_process: ExporterProcessFor, httpserver: HTTPServer
) -> None:
    # Not import information: a 403 whose body quotes a document that quotes the key.
    body = php_json({"message": php_json({"error": "rejected", "key": ISSUE_KEY})})
    httpserver.expect_request(STATUS_PATH + "1001").respond_with_data(
        body, status=403, content_type="application/json"
    )
    proc = exporter_process(
        "--elevate.base-url", httpserver.url_for("").rstrip("/"),
        "--elevate.import-id", "1001", "--elevate.retries", "0", "--log.level", "debug",
        env={"ELEVATE_API_KEY": ISSUE_KEY},
    )  # fmt: skip
    status, metrics = proc.get("/metrics")
    assert status == 200
    assert Scrape(metrics).value("elevate_import_api_errors_total", reason="forbidden")
    proc.stop()
    stderr = proc.stderr()
    assert "<redacted>" in stderr, stderr
    assert not holds_key(stderr, ISSUE_KEY)


# -- a large hostile message ----------------------------------------------------------------

# Escapes that decode into more escapes, entities that are none, a lone surrogate, and
# starts of the key: work for a decoder, none of it the key.
FILLER = "%25252541&amp;amp;#x41;\\\\\\\\u0041&bogus;\\ud800%E9Zm9vYmFy&#x2F;c2Vj "


def hostile_text(key: str, size: int) -> tuple[str, list[str]]:
    inner = php_json(php_json(php_json(key)[1:-1])[1:-1])[1:-1]
    forms = [inner, mixed(key), quote(quote(key, safe=""))]
    filler = FILLER * (size // len(FILLER) // len(forms))
    return "".join(form + filler for form in forms), forms


def test_a_megabyte_of_hostile_text_is_redacted_exactly_and_in_bounded_time() -> None:
    text, forms = hostile_text(ISSUE_KEY, 1024 * 1024)
    started = time.monotonic()
    redacted = Redactor(ISSUE_KEY).sub("<redacted>", text)
    took = time.monotonic() - started
    assert redacted.count("<redacted>") == len(forms)
    # Everything else is left as it was.
    rest = text
    for form in forms:
        rest = rest.replace(form, "")
    assert redacted.replace("<redacted>", "") == rest
    print(f"1 MiB of hostile text redacted in {took:.2f}s")


def test_a_megabyte_of_hostile_text_fails_closed_for_a_key_that_looks_like_escapes() -> None:
    # The hard key's backslash makes other orders of decoders worth trying, within a
    # budget that a megabyte of escapes exceeds: then whatever could hide it goes whole.
    text, forms = hostile_text(HARD_KEY, 1024 * 1024)
    redacted = Redactor(HARD_KEY).sub("<redacted>", text)
    assert redacted.count("<redacted>") >= len(forms)
    for form in forms:
        assert form not in redacted
    assert len(redacted) < len(text)


def test_bytes_are_redacted_as_text_and_bytes_not_utf_8_pass_unchanged() -> None:
    # What the transport hands over: a body as it came, before anything decodes it.
    body = b"\xff\xfe " + php_json(quote(ISSUE_KEY)).encode() + b" \x80"
    assert Redactor(ISSUE_KEY).sub(b"<redacted>", body) == b'\xff\xfe "<redacted>" \x80'


def test_an_exporter_answered_a_megabyte_of_hostile_message_still_answers_and_redacts(
    exporter_process: ExporterProcessFor, httpserver: HTTPServer
) -> None:
    text, _ = hostile_text(ISSUE_KEY, 900 * 1024)
    body = json.dumps({"id": "1001", "status": "FAILURE", "message": text})
    assert len(body.encode()) < 1024 * 1024
    httpserver.expect_request(STATUS_PATH + "1001").respond_with_data(
        body, content_type="application/json"
    )
    proc = exporter_process(
        "--elevate.base-url", httpserver.url_for("").rstrip("/"),
        "--elevate.import-id", "1001",
        env={"ELEVATE_API_KEY": ISSUE_KEY},
    )  # fmt: skip
    status, metrics = proc.get("/metrics")
    assert status == 200
    (labels,) = Scrape(metrics).series("elevate_import_info")
    assert dict(labels)["message"].startswith("<redacted>%2525")
    assert not holds_key(metrics, ISSUE_KEY)


# -- bidirectional controls (point 13) ------------------------------------------------------

BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"


def test_bidi_controls_in_a_message_reach_neither_metrics_nor_page_nor_status(
    exporter_process: ExporterProcessFor, httpserver: HTTPServer
) -> None:
    # "SUCCESS" to the eye once reversed; every bidi control at least once, and in the
    # type as well as the message.
    message = "Import \u202eSSECCUS\u202c done " + "x".join(BIDI)
    body = {"id": "1001", "status": "FAILURE", "type": "PRO\u2067DUCTS", "message": message}
    httpserver.expect_request(STATUS_PATH + "1001").respond_with_json(body)
    proc = exporter_process(
        "--elevate.base-url", httpserver.url_for("").rstrip("/"),
        "--elevate.import-id", "1001",
        env={"ELEVATE_API_KEY": "bidi-key"},
    )  # fmt: skip
    status, metrics = proc.get("/metrics")
    assert status == 200
    (labels,) = Scrape(metrics).series("elevate_import_info")
    assert dict(labels)["message"].startswith("Import \ufffdSSECCUS\ufffd done")
    assert dict(labels)["type"] == "PRO\ufffdDUCTS"
    status, page = proc.get("/")
    assert status == 200
    assert "SSECCUS" in page
    base_url = httpserver.url_for("").rstrip("/")
    outputs = [
        run_status(base_url, "bidi-key", "1001", *args) for args in ((), ("--output", "json"))
    ]
    for done in outputs:
        assert done.returncode == 1, done.stderr
        assert "SSECCUS" in done.stdout
    for where, text in {"/metrics": metrics, "the page": page, "status": outputs[0].stdout,
                        "status json": outputs[1].stdout}.items():  # fmt: skip
        for reading in readings(text, depth=2):
            assert not set(BIDI) & set(reading), f"a bidi control is in {where}"


def test_a_bidi_control_in_an_error_answer_does_not_reach_the_status_command(
    httpserver: HTTPServer,
) -> None:
    httpserver.expect_request(STATUS_PATH + "1001").respond_with_data(
        "Service \u202edeppots\u202c for now", status=503, content_type="text/plain"
    )
    done = run_status(httpserver.url_for("").rstrip("/"), "bidi-key", "1001", "--output", "json")
    assert done.returncode == 3, done.stderr
    detail = json.loads(done.stdout)["imports"][0]["error"]["detail"]
    assert "deppots" in detail
    assert not set(BIDI) & set(done.stdout + detail)


def test_a_key_quoted_json_in_json_at_the_cut_of_an_error_snippet_leaks_no_start(
    exporter_process: ExporterProcessFor, httpserver: HTTPServer
) -> None:
    # The detail of a failed query quotes the body's first 120 characters; the key's
    # nested form straddles that cut, so it must go before the body is cut, not after.
    body = "x" * 100 + php_json(php_json(ISSUE_KEY))
    httpserver.expect_request(STATUS_PATH + "1001").respond_with_data(
        body, status=500, content_type="text/plain"
    )
    proc = exporter_process(
        "--elevate.base-url", httpserver.url_for("").rstrip("/"),
        "--elevate.import-id", "1001", "--elevate.retries", "0", "--log.level", "debug",
        env={"ELEVATE_API_KEY": ISSUE_KEY},
    )  # fmt: skip
    assert proc.get("/metrics")[0] == 200
    proc.stop()
    stderr = proc.stderr()
    assert not holds_key(stderr, ISSUE_KEY[:8]), "the start of the key is in the log"
    assert "<redacted>" in stderr
