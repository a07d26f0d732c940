"""An Elevate (or a proxy in front of it) that answers in ways no good server would.

Each test points an in-process exporter at :class:`tests.upstream.Upstream`, a raw-socket
server on loopback that sends exact bytes, trickles them, or closes mid-answer, and
checks what the exporter publishes, counts and logs.
"""

from __future__ import annotations

import email.utils
import gzip
import html
import json
import logging
import math
import re
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client.openmetrics import parser as openmetrics_parser

from elevate_import_exporter.app import Application
from elevate_import_exporter.core import logs
from elevate_import_exporter.elevate.transport import MAX_RETRY_AFTER, parse_retry_after
from elevate_import_exporter.polling.poller import PROBE_ID
from tests.conftest import ExporterFor, ExporterProcessFor
from tests.support import Scrape, scrape, wait_until
from tests.upstream import (
    Close,
    Send,
    Step,
    Trickle,
    Upstream,
    answer,
    head_of,
    json_answer,
)

KEY = "KEY-5f1c9e_DO.NOT-LEAK"
ID = "5537431447739019570"
PATH = f"/api/v2/import/status/{ID}"
# When every query of a round fails, the exporter asks for an id that cannot exist to tell
# an outage from an id that fails on its own; here Elevate answers it.
PROBE_PATH = f"/api/v2/import/status/{PROBE_ID}"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as server:
        yield server


@pytest.fixture
def elevate(upstream: Upstream, exporter_for: ExporterFor) -> Callable[..., Application]:
    """An exporter tracking ID (or ``ids``) against the hostile upstream, with KEY."""

    upstream.on(PROBE_PATH, [Send(json_answer({"id": PROBE_ID, "status": "NOT_FOUND"}))])

    def start(ids: tuple[str, ...] = (ID,), **options: Any) -> Application:
        options.setdefault("api_key", KEY)
        return exporter_for(upstream.url, ids, **options)

    return start


def fetch(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        url, headers={k.replace("_", "-"): v for k, v in headers.items()}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, dict(response.headers), response.read()


def doc(**fields: str) -> dict[str, str]:
    return {"id": ID, "status": "FAILURE", "type": "PRODUCTS", "message": "Feed failed", **fields}


def counted(result: Scrape, metric: str, **labels: str) -> float:
    return result.value(f"elevate_import_api_{metric}_total", **labels) or 0.0


# -- 1. a lone surrogate -----------------------------------------------------------------


@pytest.mark.parametrize("field", ["message", "type", "status"])
def test_a_lone_surrogate_from_the_api_breaks_neither_metrics_nor_the_landing_page(
    upstream: Upstream, elevate: Callable[..., Application], field: str
) -> None:
    # What a server that cuts a string inside an emoji sends: json.dumps writes \ud83d.
    sent = doc()
    sent[field] += "\ud83d"
    upstream.on(PATH, [Send(json_answer(sent))])
    exporter = elevate()
    expected = {name: value.replace("\ud83d", "\ufffd") for name, value in sent.items()}

    for _ in range(2):  # once broken, it stayed broken: every scrape
        result = scrape(exporter.url)
        assert result.value("elevate_import_poll_success", id=ID) == 1
        assert result.current_status(ID) == expected["status"]
        info = result.value(
            "elevate_import_info", id=ID, type=expected["type"], message=expected["message"]
        )
        assert info == 1

    status, _headers, body = fetch(exporter.url + "/metrics", Accept=OPENMETRICS)
    assert status == 200
    families = openmetrics_parser.text_string_to_metric_families(body.decode("utf-8"))  # type: ignore[no-untyped-call]
    infos = [s for f in families if f.name == "elevate_import_info" for s in f.samples]
    assert [s.labels["message"] for s in infos] == [expected["message"]]

    status, headers, body = fetch(exporter.url + "/metrics", Accept_Encoding="gzip")
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    unzipped = Scrape(gzip.decompress(body).decode("utf-8"))
    assert unzipped.current_status(ID) == expected["status"]

    status, _headers, body = fetch(exporter.url + "/")
    assert status == 200
    assert html.escape(expected[field]) in body.decode("utf-8")


# -- 2. the key, escaped -----------------------------------------------------------------


def escape_all(key: str) -> str:
    return "".join(f"\\u{ord(c):04x}" for c in key)


ESCAPES: dict[str, Callable[[str], str]] = {
    "json every character": escape_all,
    "json every character, upper case": lambda key: escape_all(key).upper().replace("\\U", "\\u"),
    "json dashes only": lambda key: key.replace("-", "\\u002d"),
    "html decimal dashes": lambda key: key.replace("-", "&#45;"),
    "html hex dashes": lambda key: key.replace("-", "&#x2D;"),
    "html named entities": lambda key: key.replace("_", "&lowbar;").replace(".", "&period;"),
    "mixed": lambda key: "K\\u0045Y&#45;5f1c9e%5FDO&#x2e;NOT\\u002dLEAK",
}


def unescaped(text: str) -> str:
    """``text`` with JSON, HTML and URL escapes undone: how a reader would see a leak."""
    text = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), text)
    text = re.sub(r"%([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), text)
    return html.unescape(html.unescape(text))


def assert_no_key(text: str, where: str) -> None:
    assert KEY not in unescaped(text), f"the key is in {where}"
    # A key cut short by a length limit leaks most of itself.
    assert KEY[:8] not in unescaped(text), f"the start of the key is in {where}"


def test_every_escape_form_names_the_key() -> None:
    # The forms the tests below send really are the key, to a reader.
    for name, escape in ESCAPES.items():
        assert escape(KEY) != KEY, name
        assert unescaped(escape(KEY)) == KEY, name


@pytest.mark.parametrize("field", ["message", "type", "status"])
@pytest.mark.parametrize("escape", ESCAPES.values(), ids=ESCAPES.keys())
def test_import_information_that_echoes_the_key_escaped_never_reaches_metrics_or_the_page(
    upstream: Upstream,
    elevate: Callable[..., Application],
    field: str,
    escape: Callable[[str], str],
) -> None:
    fields = {"status": "FAILURE", "type": "PRODUCTS", "message": "Feed failed"}
    fields[field] = escape(KEY) if field == "status" else f"echo of {escape(KEY)}"
    # Written out, not json.dumps'd: the escapes must reach the exporter as they are.
    body = (
        f'{{"id": "{ID}", "status": "{fields["status"]}", "type": "{fields["type"]}", '
        f'"message": "{fields["message"]}"}}'
    )
    upstream.on(PATH, [Send(answer(body))])
    exporter = elevate()

    result = scrape(exporter.url)
    assert result.value("elevate_import_poll_success", id=ID) == 1
    published = {"status": result.current_status(ID)}
    (labels,) = result.series("elevate_import_info")
    published.update(type=dict(labels)["type"], message=dict(labels)["message"])
    wanted = "<redacted>" if field == "status" else "echo of <redacted>"
    assert published[field] == wanted
    assert_no_key(result.text, "/metrics")
    assert_no_key(fetch(exporter.url + "/")[2].decode("utf-8"), "the landing page")


ERROR_ANSWERS = {
    "403 json": (403, "application/json", '{"message": "Api-Key %s could not be validated"}'),
    "500 html": (500, "text/html", "<html><body>Internal error for Api-Key: %s</body></html>"),
    "200 not json": (200, "text/html", "<html><body>Proxy login for %s</body></html>"),
}


@pytest.mark.parametrize("error", ERROR_ANSWERS.values(), ids=ERROR_ANSWERS.keys())
@pytest.mark.parametrize("escape", ESCAPES.values(), ids=ESCAPES.keys())
def test_an_error_answer_that_echoes_the_key_escaped_does_not_put_it_in_the_log(
    upstream: Upstream,
    elevate: Callable[..., Application],
    caplog: pytest.LogCaptureFixture,
    error: tuple[int, str, str],
    escape: Callable[[str], str],
) -> None:
    status, content_type, template = error
    upstream.on(PATH, [Send(answer(template % escape(KEY), status, content_type=content_type))])
    with caplog.at_level(logging.WARNING):
        result = scrape(elevate(retries="0").url)
    assert result.value("elevate_import_poll_success", id=ID) == 0
    # A 403 concerns the whole key: one line a round says so, with Elevate's detail.
    details = [
        r.getMessage()
        for r in caplog.records
        if "status query failed" in r.getMessage() or "reason=forbidden" in r.getMessage()
    ]
    assert details, "the failure was logged with its detail"
    assert all("<redacted>" in detail for detail in details), details
    assert_no_key("\n".join(details), "the log")


@pytest.mark.parametrize("escape", [ESCAPES["json dashes only"], ESCAPES["mixed"]])
def test_a_real_process_logs_no_escaped_key_even_at_debug_level(
    upstream: Upstream, exporter_process: ExporterProcessFor, escape: Callable[[str], str]
) -> None:
    echo = f"<html><body>Forbidden: Api-Key {escape(KEY)}</body></html>"
    upstream.on(PATH, [Send(answer(echo, 403, content_type="text/html"))])
    proc = exporter_process(
        *("--elevate.base-url", upstream.url, "--elevate.import-id", ID),
        *("--elevate.retries", "0", "--log.level", "debug"),
        env={"ELEVATE_API_KEY": KEY},
    )
    status, text = proc.get("/metrics")
    assert status == 200
    assert Scrape(text).value("elevate_import_api_errors_total", reason="forbidden") == len(
        upstream.seen
    )
    assert_no_key(text + proc.get("/")[1], "the pages")
    proc.stop()
    stderr = proc.stderr()
    assert "Forbidden: Api-Key <redacted>" in stderr
    assert_no_key(stderr, "the log")


@pytest.mark.parametrize(
    "body",
    [
        # Long enough that a snippet of the body ends inside the key.
        answer("x" * 110 + KEY, 500, content_type="text/plain"),
        answer("x" * 60 + escape_all(KEY), 503, content_type="text/plain"),
        # An id that the parser quotes, cut to 80 characters, inside the key.
        json_answer({"id": "x" * 70 + KEY, "status": "SUCCESS"}),
    ],
    ids=["plain key at the cut", "escaped key at the cut", "key in a quoted id"],
)
def test_a_key_cut_short_by_an_error_snippet_does_not_leak_its_start(
    upstream: Upstream,
    elevate: Callable[..., Application],
    caplog: pytest.LogCaptureFixture,
    body: bytes,
) -> None:
    upstream.on(PATH, [Send(body)])
    with caplog.at_level(logging.WARNING):
        scrape(elevate(retries="0").url)
    details = [r.getMessage() for r in caplog.records if "status query failed" in r.getMessage()]
    assert details
    assert_no_key("\n".join(details), "the log")


# -- logged tracebacks -------------------------------------------------------------------


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Whatever logs.configure does to the process (root logger, hooks) is undone after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    hooks = sys.excepthook, threading.excepthook, sys.unraisablehook
    yield
    sys.excepthook, threading.excepthook, sys.unraisablehook = hooks
    logging.captureWarnings(False)
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.usefixtures("root_logging")
@pytest.mark.parametrize("fmt", ["logfmt", "json"])
@pytest.mark.parametrize("escape", [lambda key: key, *ESCAPES.values()], ids=["plain", *ESCAPES])
def test_a_logged_traceback_that_contains_the_key_is_redacted(
    capsys: pytest.CaptureFixture[str], fmt: str, escape: Callable[[str], str]
) -> None:
    logs.configure("debug", fmt, [KEY])
    log = logging.getLogger("elevate_import_exporter.tests")
    try:
        try:
            raise ConnectionError(f"upstream said: bad Api-Key {escape(KEY)}")
        except ConnectionError as cause:
            raise RuntimeError(f"giving up on {escape(KEY)}") from cause
    except RuntimeError:
        log.exception("query failed")
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert "RuntimeError: giving up on <redacted>" in err
    assert "ConnectionError: upstream said: bad Api-Key <redacted>" in err
    assert_no_key(err, "the log")


# -- 3. a trickling answer ----------------------------------------------------------------

HEALTHY = "1001"
SLOW = "2002"


def slow_answer(status: str) -> bytes:
    return json_answer({"id": SLOW, "status": status, "type": "PRODUCTS"})


@pytest.mark.parametrize("part", ["body", "headers"])
def test_an_answer_that_trickles_is_given_up_at_the_deadline_and_frees_its_worker(
    upstream: Upstream, elevate: Callable[..., Application], part: str
) -> None:
    upstream.on(
        f"/api/v2/import/status/{HEALTHY}",
        [Send(json_answer({"id": HEALTHY, "status": "IN_PROGRESS", "type": "PRODUCTS"}))],
    )
    full = slow_answer("IN_PROGRESS")
    head, _, body = full.partition(b"\r\n\r\n")
    # A byte every half second: far below any read timeout, never done within a scrape.
    trickle: list[Step] = [Trickle(full, 0.5)]
    if part == "body":
        trickle = [Send(head + b"\r\n\r\n"), Trickle(body, 0.5)]
    # The start-up round is answered at once, every later one trickles.
    upstream.on(f"/api/v2/import/status/{SLOW}", [Send(full)], trickle)
    # One worker: the healthy id, asked first, gets it only if the slow one lets go.
    exporter = elevate((HEALTHY, SLOW), concurrency="1", retries="0", timeout="5")

    results = []
    for _ in range(4):
        started = time.monotonic()
        results.append(scrape(exporter.url, X_Prometheus_Scrape_Timeout_Seconds="2"))
        assert time.monotonic() - started < 2.0, "the scrape outlasted its timeout"
    for result in results:
        assert result.value("elevate_import_poll_success", id=HEALTHY) == 1
        assert result.value("elevate_import_poll_success", id=SLOW) == 0
    # Each earlier round's slow request was given up, and counted, by the next scrape.
    assert counted(results[-1], "errors", reason="timeout") >= 3
    assert counted(results[-1], "requests", code="timeout") >= 3
    # The connections given up were closed, not left to trickle on.
    wait_until(lambda: upstream.peer_left >= 3, what="the exporter to close the slow connections")


# -- 8. Retry-After ----------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("value", ["³", "1e9", "-5", "soon", "Wed, 32 Oct 2015 07:28:00 GMT"])
def test_an_unusable_retry_after_is_ignored_and_the_answer_still_counted(
    upstream: Upstream,
    elevate: Callable[..., Application],
    caplog: pytest.LogCaptureFixture,
    status: int,
    value: str,
) -> None:
    headers = {"Retry-After": value}
    upstream.on(PATH, [Send(answer(b"slow down", status, headers, "text/plain"))])
    with caplog.at_level(logging.WARNING):
        result = scrape(elevate(retries="1").url)
    sent = len(upstream.seen_for(PATH))
    # Retried after the usual short backoff, as without the header.
    assert sent >= 2
    assert counted(result, "requests", code=str(status)) == sent
    reason = "rate_limited" if status == 429 else "server_error"
    assert counted(result, "errors", reason=reason) == sent
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_huge_retry_after_is_capped_and_digits_other_than_ascii_are_none() -> None:
    assert parse_retry_after("99999999999999999999") == MAX_RETRY_AFTER
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT") == MAX_RETRY_AFTER
    assert parse_retry_after(" 3599 ") == 3599
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0
    # Digits to str.isdigit(), and to float(), but not a number of seconds to HTTP.
    assert parse_retry_after("³") is None
    assert parse_retry_after("٣") is None


def test_a_huge_retry_after_is_counted_and_not_waited_for(
    upstream: Upstream, elevate: Callable[..., Application], caplog: pytest.LogCaptureFixture
) -> None:
    headers = {"Retry-After": "99999999999999999999"}
    upstream.on(PATH, [Send(answer(b"slow down", 429, headers, "text/plain"))])
    with caplog.at_level(logging.WARNING):
        result = scrape(elevate(retries="3").url)
    assert counted(result, "requests", code="429") == len(upstream.seen_for(PATH))
    assert result.value("elevate_import_poll_success", id=ID) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_retry_after_http_date_on_a_503_is_waited_for(
    upstream: Upstream, elevate: Callable[..., Application]
) -> None:
    # Whole seconds, as an HTTP date has them; two to three seconds from now.
    when = math.floor(time.time()) + 3
    busy = answer(
        b"maintenance",
        503,
        {"Retry-After": email.utils.formatdate(when, usegmt=True)},
        "text/plain",
    )
    upstream.on(PATH, [Send(busy)], [Send(json_answer(doc(status="SUCCESS")))])
    exporter = elevate(retries="1")

    first, second = upstream.seen[:2]
    assert second.at >= when - 0.1, f"retried {when - second.at:.2f} s before the date"
    result = scrape(exporter.url)
    assert result.current_status(ID) == "SUCCESS"
    assert counted(result, "requests", code="503") == 1
    assert counted(result, "errors", reason="server_error") == 1
    assert first.at < when


# -- 14. an answer that breaks off ---------------------------------------------------------

BROKEN = {
    "after the status line": b"HTTP/1.1 200 OK\r\n",
    "inside the headers": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Le",
    "after a header line": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n",
    "inside the body": head_of(200, {"Content-Type": "application/json"}, 100) + b'{"id": "55',
    "inside a chunked body": head_of(200, {"Transfer-Encoding": "chunked"}, None)
    + b'1a\r\n{"id": "5537431447739019570"',
    "inside a 503's body": head_of(503, {"Content-Type": "text/plain"}, 100) + b"Service un",
}


@pytest.mark.parametrize("sent", BROKEN.values(), ids=BROKEN.keys())
def test_an_answer_cut_off_by_a_closed_connection_is_a_connection_error(
    upstream: Upstream, elevate: Callable[..., Application], sent: bytes
) -> None:
    upstream.on(PATH, [Send(sent), Close()])
    result = scrape(elevate(retries="0").url)
    requests = len(upstream.seen_for(PATH))
    # The answer never arrived whole, so its status line is not what the request got.
    assert counted(result, "requests", code="connection_error") == requests
    assert counted(result, "errors", reason="connection_error") == requests
    # Only the probe, which Elevate answers whole, got a 200.
    assert counted(result, "requests", code="200") == len(upstream.seen_for(PROBE_PATH))
    assert counted(result, "errors", reason="invalid_response") == 0
    assert result.value("elevate_import_poll_success", id=ID) == 0


def test_a_complete_answer_on_a_connection_closed_after_it_still_counts(
    upstream: Upstream, elevate: Callable[..., Application]
) -> None:
    # The control for the cases above: closing after a whole answer is no error. (Said
    # in advance: a kept-alive connection closed unannounced may be reused in the meantime.)
    whole = json_answer(doc(status="IN_PROGRESS"), headers={"Connection": "close"})
    upstream.on(PATH, [Send(whole), Close()])
    result = scrape(elevate(retries="0").url)
    assert result.current_status(ID) == "IN_PROGRESS"
    assert counted(result, "requests", code="200") == len(upstream.seen_for(PATH))
    assert counted(result, "errors", reason="connection_error") == 0


def test_an_answer_without_length_that_ends_with_the_connection_is_read_whole(
    upstream: Upstream, elevate: Callable[..., Application]
) -> None:
    # HTTP/1.0 style: no Content-Length, the end of the connection ends the body.
    body = json.dumps(doc(status="WAITING")).encode()
    head = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n"
    upstream.on(PATH, [Send(head + body), Close()])
    result = scrape(elevate(retries="0").url)
    assert result.current_status(ID) == "WAITING"
    assert counted(result, "errors", reason="connection_error") == 0
