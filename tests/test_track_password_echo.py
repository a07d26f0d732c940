"""Issue 20, point 12: ``track`` never prints the password, however the exporter echoes it.

The real ``elevate-import-exporter track`` command, as a process, against pytest-httpserver
playing a hostile exporter that sends the password (or the Basic token) back escaped:
URL, form, HTML, ``\\u`` escapes, upper case, a JSON document quoted in the message.
"""

from __future__ import annotations

import base64
import html
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Request, Response

from tests.conftest import REPO, TRACK_VARIABLES, exporter_env
from tests.test_escaped_secrets import holds_key, lower_hex

PATH = "/api/v1/imports"
USER = "feeder"
# A space, '/', '"', '+', a backslash and a letter beyond ASCII: each escaped by some encoder.
PASSWORD = 'Pa55 w/"rd+\\ümlaut'
TOKEN = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
PROCESS_TIMEOUT = 60.0


def command() -> list[str]:
    script = Path(sys.executable).parent / "elevate-import-exporter"
    if script.exists():
        return [str(script), "track"]
    return [sys.executable, "-m", "elevate_import_exporter", "track"]


def run_track(url: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in exporter_env().items() if k not in TRACK_VARIABLES}
    return subprocess.run(
        [*command(), "--exporter", url, "--exporter.username", USER, "--retries", "0", "imp-1"],
        env={**base, "ELEVATE_EXPORTER_PASSWORD": PASSWORD},
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )


def u_escapes(text: str) -> str:
    return "".join(f"\\u{ord(c):04X}" for c in text)


ECHOES: dict[str, Callable[[str], str]] = {
    "url-encoded": lambda p: quote(p, safe=""),
    "url-encoded, lower-case hex": lambda p: lower_hex(quote(p, safe="")),
    "form-encoded": quote_plus,
    "html named": html.escape,
    "html decimal": lambda p: "".join(f"&#{ord(c)};" for c in p),
    "html hex, upper case": lambda p: "".join(f"&#X{ord(c):X};" for c in p),
    "\\u escapes, upper case": u_escapes,
    "upper case": str.upper,
    "a json document quoted": lambda p: json.dumps({"password": p}).replace("/", "\\/"),
    "url-encoded inside a quoted json document": lambda p: json.dumps({"u": quote(p)}),
}


def echoing(escape: Callable[[str], str], as_json: bool) -> Callable[[Request], Response]:
    def handle(request: Request) -> Response:
        said = f"user {USER} with {escape(PASSWORD)} and {escape(TOKEN)} is not allowed"
        if as_json:
            return Response(json.dumps({"error": said}), 400, content_type="application/json")
        return Response(said, 400, content_type="text/plain")

    return handle


@pytest.mark.parametrize("as_json", [True, False], ids=["in the json error", "as plain text"])
@pytest.mark.parametrize("escape", ECHOES.values(), ids=ECHOES.keys())
def test_an_exporter_echoing_the_password_escaped_gets_it_masked_on_stderr(
    httpserver: HTTPServer, escape: Callable[[str], str], as_json: bool
) -> None:
    assert holds_key(escape(PASSWORD), PASSWORD)
    httpserver.expect_request(PATH, method="POST").respond_with_handler(echoing(escape, as_json))
    done = run_track(httpserver.url_for("/"))
    assert done.returncode == 1, done.stderr
    assert len(httpserver.log) == 1
    line = done.stderr.strip()
    assert line.startswith("Error: "), done.stderr
    assert "\n" not in line, done.stderr
    # Just the password and the token masked: the rest of the message stays readable.
    assert f"user {USER} with " in line
    assert line.count("********") == 2
    assert line.endswith(" is not allowed")
    assert not holds_key(done.stdout + done.stderr, PASSWORD)
    assert not holds_key(done.stdout + done.stderr, TOKEN)
