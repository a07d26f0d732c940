"""``track``: what a feed job sees when it hands ids to the exporter.

pytest-httpserver plays the exporter (every answer of the registration API, and hostile
ones); raw sockets play servers that never answer or trickle; trustme makes the
certificates. CliRunner for most cases, real processes where exit status, time or signals
are the point; and the real exporter once its registration API exists.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import trustme
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization
from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Request, Response

from elevate_import_exporter.cli import cli
from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from tests.conftest import REPO, TRACK_VARIABLES, ExporterFor, exporter_env
from tests.support import free_port, scrape, stop_process, wait_until

PATH = "/api/v1/imports"
USER, PASSWORD = "feeder", "s3cret-Pa55word"
TOKEN = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
# Every variable `track` reads: a test starts from none of them.
TRACK_ENV = TRACK_VARIABLES
PROCESS_TIMEOUT = 60.0


# -- running the command ----------------------------------------------------------------


def invoke(*args: str, **env: str) -> Result:
    """``track`` through CliRunner, with only the given variables of TRACK_ENV set."""
    variables: dict[str, str | None] = dict.fromkeys(TRACK_ENV)
    variables.update(env)
    return CliRunner().invoke(cli, ["track", *args], env=variables)


@dataclass
class Finished:
    code: int
    stdout: str
    stderr: str
    seconds: float


def track_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "elevate_import_exporter", "track", *args]


def track_process_env(**env: str) -> dict[str, str]:
    base = {k: v for k, v in exporter_env().items() if k not in TRACK_ENV}
    return {**base, **env}


def run_track(*args: str, **env: str) -> Finished:
    """``track`` as a real process; waits for its end."""
    started = time.monotonic()
    done = subprocess.run(
        track_argv(*args),
        env=track_process_env(**env),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )
    return Finished(
        done.returncode,
        done.stdout.decode("utf-8", "replace"),
        done.stderr.decode("utf-8", "replace"),
        time.monotonic() - started,
    )


def one_error_line(stderr: str) -> str:
    """The one line a failure prints, checked to be one printable line."""
    assert stderr.startswith("Error: "), stderr
    assert stderr.endswith("\n"), stderr
    line = stderr[:-1]
    assert "\n" not in line, stderr
    assert line.isprintable(), repr(stderr)
    assert "Traceback" not in stderr
    return line


# -- playing the exporter ---------------------------------------------------------------


def registrar(known: set[str] | None = None) -> Callable[[Request], Response]:
    """An exporter's POST /api/v1/imports as issue 11 describes it: 201 if any id is new."""
    seen = known if known is not None else set()

    def handle(request: Request) -> Response:
        document = json.loads(request.get_data())
        items = document if isinstance(document, list) else [document]
        answers = [{"id": item["id"], "created": item["id"] not in seen} for item in items]
        seen.update(item["id"] for item in items)
        status = 201 if any(a["created"] for a in answers) else 200
        return Response(json.dumps({"imports": answers}), status, content_type="application/json")

    return handle


def error(status: int, message: str, field: str | None = None) -> Response:
    body: dict[str, str] = {"error": message}
    if field:
        body["field"] = field
    return Response(json.dumps(body), status, content_type="application/json")


def requests_seen(server: HTTPServer) -> list[Request]:
    return [request for request, _ in server.log]


def body_of(request: Request) -> Any:
    return json.loads(request.get_data())


def ids_sent(server: HTTPServer) -> list[str]:
    """Every id of every request, in order, whether a request held one or several."""
    found: list[str] = []
    for request in requests_seen(server):
        document = body_of(request)
        items = document if isinstance(document, list) else [document]
        found += [item["id"] for item in items]
    return found


class Silent:
    """A TCP server that accepts and then sends nothing, or ``trickle`` a byte at a time;
    with ``hang_up`` it closes the connection after that, else it holds it."""

    def __init__(
        self, trickle: bytes = b"", every: float = 0.2, hang_up: bool = False, flood: bool = False
    ) -> None:
        self.trickle, self.every, self.hang_up, self.flood = trickle, every, hang_up, flood
        self.accepted = 0
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self._connections.append(connection)
            self.accepted += 1
            threading.Thread(target=self._feed, args=(connection,), daemon=True).start()

    def _feed(self, connection: socket.socket) -> None:
        if self.flood:
            self._flood(connection)
            return
        for byte in self.trickle:
            if self._stop.wait(self.every):
                return
            try:
                connection.sendall(bytes([byte]))
            except OSError:
                return
        if self.hang_up:
            # The request read first: closing with it unread would reset the connection.
            with contextlib.suppress(OSError):
                connection.settimeout(5)
                connection.recv(65536)
            connection.close()

    def _flood(self, connection: socket.socket) -> None:
        """``trickle`` at once, then bytes without end until the client goes."""
        with contextlib.suppress(OSError):
            connection.sendall(self.trickle)
            while not self._stop.is_set():
                connection.sendall(b"x" * 65536)

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for connection in self._connections:
            connection.close()


@pytest.fixture
def silent() -> Iterator[Callable[..., Silent]]:
    servers: list[Silent] = []

    def start(
        trickle: bytes = b"", every: float = 0.2, hang_up: bool = False, flood: bool = False
    ) -> Silent:
        servers.append(Silent(trickle, every, hang_up, flood))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


# -- the request --------------------------------------------------------------------------


def test_one_id_goes_as_a_json_object_with_type_labels_and_basic_auth(
    httpserver: HTTPServer,
) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_handler(registrar())
    result = invoke(
        "--exporter", httpserver.url_for("/"), "--exporter.username", USER,
        "--type", "PRODUCT", "--label", "feed=products", "--label", "run=2024-05-01/42",
        "imp-1",
        ELEVATE_EXPORTER_PASSWORD=PASSWORD,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "imp-1 created\n"
    assert result.stderr == ""
    (request,) = requests_seen(httpserver)
    assert request.method == "POST"
    assert request.path == PATH
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Authorization"] == f"Basic {TOKEN}"
    assert body_of(request) == {
        "id": "imp-1",
        "type": "PRODUCT",
        "labels": {"feed": "products", "run": "2024-05-01/42"},
    }


def test_several_ids_go_in_one_array_and_each_gets_its_own_line(httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_handler(registrar({"b"}))
    result = invoke("--exporter", httpserver.url_for("/"), "a", "b", "c", "a")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "a created\nb already tracked\nc created\n"
    (request,) = requests_seen(httpserver)
    # No type, no labels, no Authorization when none are given; a repeated id once.
    assert body_of(request) == [{"id": "a"}, {"id": "b"}, {"id": "c"}]
    assert "Authorization" not in request.headers


def test_ids_all_known_already_are_a_success_answered_200(httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_handler(registrar({"a", "b"}))
    result = invoke("--exporter", httpserver.url_for("/"), "a", "b")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "a already tracked\nb already tracked\n"
    assert httpserver.log[0][1].status_code == 200


def test_quiet_prints_nothing_on_success(httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_handler(registrar())
    result = invoke("--exporter", httpserver.url_for("/"), "--quiet", "a")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    assert len(httpserver.log) == 1


def test_more_ids_than_one_request_may_carry_go_in_several_requests(
    httpserver: HTTPServer,
) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_handler(registrar())
    ids = [f"id-{n}" for n in range(1001)]
    result = invoke("--exporter", httpserver.url_for("/"), *ids)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [f"{i} created" for i in ids]
    first, second = (body_of(r) for r in requests_seen(httpserver))
    assert isinstance(first, list)
    assert len(first) == 1000
    assert second == {"id": "id-1000"}


def test_large_labels_keep_each_request_within_one_mebibyte(httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_handler(registrar())
    labels = [arg for n in range(8) for arg in ("--label", f"k{n}={'v' * 128}")]
    ids = [f"{n:064d}" for n in range(1000)]
    result = invoke("--exporter", httpserver.url_for("/"), "--quiet", *labels, *ids)
    assert result.exit_code == 0, result.stderr
    sizes = [len(request.get_data()) for request in requests_seen(httpserver)]
    assert len(sizes) > 1
    assert max(sizes) <= 1024 * 1024
    assert ids_sent(httpserver) == ids


def test_a_path_prefix_in_the_exporter_url_is_kept(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/exporter" + PATH, method="POST").respond_with_handler(registrar())
    result = invoke("--exporter", httpserver.url_for("/exporter/"), "a")
    assert result.exit_code == 0, result.stderr
    assert requests_seen(httpserver)[0].path == "/exporter" + PATH


def test_the_password_file_gives_the_password_without_its_final_newline(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_handler(registrar())
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    result = invoke(
        "--exporter", httpserver.url_for("/"), "--exporter.username", USER,
        "--exporter.password-file", str(secret), "a",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert requests_seen(httpserver)[0].headers["Authorization"] == f"Basic {TOKEN}"


def test_the_url_and_credentials_come_from_the_environment(httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_handler(registrar())
    result = invoke(
        "a",
        ELEVATE_EXPORTER_URL=httpserver.url_for("/"),
        ELEVATE_EXPORTER_USERNAME=USER,
        ELEVATE_EXPORTER_PASSWORD=PASSWORD,
    )
    assert result.exit_code == 0, result.stderr
    assert requests_seen(httpserver)[0].headers["Authorization"] == f"Basic {TOKEN}"


# -- usage errors: exit 2, one line, nothing sent -----------------------------------------


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--label", "feed", "a"], "'feed'"),
        (["--label", "Feed=x", "a"], "'Feed'"),
        (["--label", "1feed=x", "a"], "'1feed'"),
        (["--label", "=x", "a"], "''"),
        (["--label", "fe-ed=x", "a"], "'fe-ed'"),
        (["--label", "feed=a", "--label", "feed=b", "a"], "'feed'"),
        (["a", ""], "number 2 is empty"),
        (["  "], "number 1 is empty"),
        (["bad\udcff"], "not valid UTF-8"),
        (["--timeout", "0s", "a"], "--timeout"),
        (["--timeout", "soon", "a"], "'soon'"),
        (["--timeout", "2h", "a"], "--timeout"),
    ],
)
def test_a_bad_value_is_refused_with_exit_2_naming_it_before_anything_is_sent(
    httpserver: HTTPServer, args: list[str], named: str
) -> None:
    result = invoke("--exporter", httpserver.url_for("/"), *args)
    assert result.exit_code == 2
    assert named in one_error_line(result.stderr)
    assert httpserver.log == []


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("ftp://127.0.0.1:9", "http:// or https://"),
        ("127.0.0.1:9", "http:// or https://"),
        ("http://", "http:// or https://"),
        ("http://127.0.0.1:99999", "99999"),
        ("http://127.0.0.1:9/?x=1", "without query"),
        ("http://127.0.0.1:9/a b", "without query"),
        ("http://exporter.bücher.example", "http:// or https://"),
    ],
)
def test_an_exporter_url_that_is_not_a_base_url_is_refused(url: str, named: str) -> None:
    result = invoke("--exporter", url, "a")
    assert result.exit_code == 2
    assert named in one_error_line(result.stderr)


def test_credentials_in_the_url_are_refused_without_showing_them() -> None:
    result = invoke("--exporter", f"https://{USER}:{PASSWORD}@exporter.example:10025", "a")
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert "--exporter.username" in line
    assert PASSWORD not in result.stderr + result.stdout


def test_without_an_exporter_url_the_command_says_what_is_missing() -> None:
    result = invoke("a")
    assert result.exit_code == 2
    assert "ELEVATE_EXPORTER_URL" in one_error_line(result.stderr)


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--exporter.username", USER], {}, "needs a password"),
        ([], {"ELEVATE_EXPORTER_PASSWORD": PASSWORD}, "no --exporter.username"),
        (["--exporter.username", "a:b"], {"ELEVATE_EXPORTER_PASSWORD": PASSWORD}, "':'"),
        (
            ["--exporter.username", USER, "--exporter.password-file", "FILE"],
            {"ELEVATE_EXPORTER_PASSWORD": PASSWORD},
            "password once",
        ),
    ],
)
def test_credentials_that_do_not_add_up_are_refused(
    httpserver: HTTPServer, tmp_path: Path, args: list[str], env: dict[str, str], named: str
) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD)
    args = [str(secret) if arg == "FILE" else arg for arg in args]
    result = invoke("--exporter", httpserver.url_for("/"), *args, "a", **env)
    assert result.exit_code == 2
    assert named in one_error_line(result.stderr)
    assert PASSWORD not in result.stderr
    assert httpserver.log == []


@pytest.mark.parametrize("kind", ["empty", "directory", "missing", "fifo"])
def test_a_password_file_that_holds_no_password_is_refused_at_once(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "password"
    if kind == "empty":
        path.write_text("\n")
    elif kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        # Opening a named pipe for reading would wait for a writer forever.
        os.mkfifo(path)
    result = invoke(
        "--exporter", "http://127.0.0.1:9", "--exporter.username", USER,
        "--exporter.password-file", str(path), "a",
    )  # fmt: skip
    assert result.exit_code == 2
    assert str(path) in one_error_line(result.stderr)


def test_a_password_for_another_host_over_http_is_refused_unless_allowed(
    httpserver: HTTPServer,
) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_handler(registrar())
    port = httpserver.port
    # 0.0.0.0 reaches this host's listeners but is not a loopback address: it stands for
    # another host here, without leaving the machine.
    elsewhere = f"http://0.0.0.0:{port}"
    refused = invoke(
        "--exporter", elsewhere, "--exporter.username", USER, "a",
        ELEVATE_EXPORTER_PASSWORD=PASSWORD,
    )  # fmt: skip
    assert refused.exit_code == 2
    assert "--exporter.allow-insecure" in one_error_line(refused.stderr)
    assert httpserver.log == []
    allowed = invoke(
        "--exporter", elsewhere, "--exporter.username", USER, "--exporter.allow-insecure", "a",
        ELEVATE_EXPORTER_PASSWORD=PASSWORD,
    )  # fmt: skip
    assert allowed.exit_code == 0, allowed.stderr
    assert allowed.stderr == ""
    assert len(httpserver.log) == 1


def test_a_password_to_this_host_over_http_needs_no_permission(httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_handler(registrar())
    for host in ("127.0.0.1", "localhost"):
        result = invoke(
            "--exporter", f"http://{host}:{httpserver.port}", "--exporter.username", USER, "a",
            ELEVATE_EXPORTER_PASSWORD=PASSWORD,
        )  # fmt: skip
        assert (result.exit_code, result.stderr) == (0, "")


def test_tls_options_with_an_http_url_are_refused(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca))
    result = invoke("--exporter", "http://127.0.0.1:9", "--exporter.ca-file", str(ca), "a")
    assert result.exit_code == 2
    assert "https://" in one_error_line(result.stderr)


# -- the exporter refuses: exit 1, one request, its message on one line --------------------


@pytest.mark.parametrize(
    ("answer", "shown"),
    [
        (error(400, "label value longer than 128 characters", "labels.feed"), "labels.feed"),
        (error(403, "registration is disabled; start with --web.enable-registration"), "403"),
        (error(404, "not found"), "/api/v1/imports?"),
        (error(413, "body larger than 1 MiB"), "larger than 1 MiB"),
        (error(415, "Content-Type must be application/json", "Content-Type"), "415"),
        (Response("<html>no</html>", 400), "<html>no</html>"),
        (Response("", 422), "(empty answer)"),
    ],
)
def test_a_refusal_exits_1_with_the_exporters_message_and_is_not_retried(
    httpserver: HTTPServer, answer: Response, shown: str
) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_response(answer)
    result = invoke("--exporter", httpserver.url_for("/"), "--retries", "3", "a")
    assert result.exit_code == 1
    line = one_error_line(result.stderr)
    assert shown in line
    assert str(answer.status_code) in line
    assert len(httpserver.log) == 1
    assert result.stdout == ""


def test_a_401_without_credentials_says_how_to_give_them(httpserver: HTTPServer) -> None:
    answer = error(401, "unauthorized")
    answer.headers["WWW-Authenticate"] = 'Basic realm="elevate-import-exporter"'
    httpserver.expect_request(PATH, method="POST").respond_with_response(answer)
    result = invoke("--exporter", httpserver.url_for("/"), "a")
    assert result.exit_code == 1
    assert "--exporter.username" in one_error_line(result.stderr)


def test_a_401_with_wrong_credentials_never_shows_the_password(httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_response(error(401, "nope"))
    result = invoke(
        "--exporter", httpserver.url_for("/"), "--exporter.username", USER, "a",
        ELEVATE_EXPORTER_PASSWORD=PASSWORD,
    )  # fmt: skip
    assert result.exit_code == 1
    assert "check --exporter.username" in one_error_line(result.stderr)
    assert PASSWORD not in result.stderr


def test_a_server_that_echoes_the_credentials_gets_them_masked(httpserver: HTTPServer) -> None:
    def echo(request: Request) -> Response:
        said = f"bad: {request.headers['Authorization']} means {USER}:{PASSWORD}"
        return error(400, said, PASSWORD)

    httpserver.expect_request(PATH, method="POST").respond_with_handler(echo)
    result = invoke(
        "--exporter", httpserver.url_for("/"), "--exporter.username", USER, "a",
        ELEVATE_EXPORTER_PASSWORD=PASSWORD,
    )  # fmt: skip
    assert result.exit_code == 1
    line = one_error_line(result.stderr)
    assert PASSWORD not in line
    assert TOKEN not in line
    assert "********" in line


def test_a_redirect_is_not_followed(httpserver: HTTPServer) -> None:
    answer = Response("", 308, headers={"Location": "https://elsewhere.example/api/v1/imports"})
    httpserver.expect_request(PATH, method="POST").respond_with_response(answer)
    result = invoke("--exporter", httpserver.url_for("/"), "a")
    assert result.exit_code == 1
    assert "https://elsewhere.example/api/v1/imports" in one_error_line(result.stderr)
    assert len(httpserver.log) == 1


# -- hostile answers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "\x1b[2J\x1b[31mred\x1b[0m",
        "line one\nline two\r\nthree",
        "\u202etxt.exe",
        "nul\x00byte\x07bell",
        "\ud800 lone surrogate",
    ],
)
def test_an_error_message_with_control_characters_is_shown_as_one_clean_line(
    httpserver: HTTPServer, text: str
) -> None:
    body = json.dumps({"error": text, "field": text})
    httpserver.expect_request(PATH, method="POST").respond_with_data(body, 400)
    result = invoke("--exporter", httpserver.url_for("/"), "a")
    assert result.exit_code == 1
    line = one_error_line(result.stderr)
    for character in ("\x1b", "\u202e", "\x00", "\x07", "\r"):
        assert character not in line


def test_a_raw_error_body_with_escapes_is_shown_cleaned_and_cut(httpserver: HTTPServer) -> None:
    body = b"\x1b]0;pwned\x07" + b"\xff\xfe" + b"A" * 5000
    httpserver.expect_request(PATH, method="POST").respond_with_data(body, 400)
    result = invoke("--exporter", httpserver.url_for("/"), "a")
    assert result.exit_code == 1
    line = one_error_line(result.stderr)
    assert "\x1b" not in line
    assert len(line) < 500


@pytest.mark.parametrize("status", [201, 500])
def test_an_answer_of_ten_megabytes_is_not_read_whole(httpserver: HTTPServer, status: int) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_data(b"[" * 10_000_000, status)
    result = invoke("--exporter", httpserver.url_for("/"), "--retries", "0", "a")
    assert result.exit_code == 3
    line = one_error_line(result.stderr)
    assert len(line) < 600


def test_an_endless_answer_is_read_only_up_to_the_limit(silent: Callable[..., Silent]) -> None:
    # A terabyte announced, sent as fast as the client takes them: a client without a
    # limit would read until the timeout (or memory) ends it.
    head = b"HTTP/1.1 201 Created\r\nContent-Length: 1000000000000\r\n\r\n"
    server = silent(trickle=head, every=0.0, flood=True)
    result = invoke("--exporter", server.url, "--timeout", "20s", "--retries", "0", "a")
    assert result.exit_code == 3
    assert "an answer too large to read" in one_error_line(result.stderr)


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        (b"<html>ok</html>", "not JSON"),
        (b"", "not JSON"),
        (b"\xff\xfe{}", "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "too large"),
        (b"[" * 30_000 + b"]" * 30_000, "not JSON"),
        (b'{"imports": {"id": "a"}}', '"imports" list'),
        (b'{"imports": [{"id": "b", "created": true}]}', "'a' first"),
        (b'{"imports": [{"id": "a", "created": "yes"}]}', "'a' first"),
        (b'{"imports": [{"id": "a", "created": 1}]}', "'a' first"),
        (b'{"imports": [{"id": "a", "created": true}], "n": 1' + b"0" * 5000 + b"}", "not JSON"),
    ],
)
def test_a_success_status_with_an_unreadable_answer_exits_3_and_is_not_retried(
    httpserver: HTTPServer, body: bytes, shown: str
) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_data(body, 201)
    result = invoke("--exporter", httpserver.url_for("/"), "a")
    assert result.exit_code == 3
    assert shown in one_error_line(result.stderr)
    assert result.stdout == ""
    assert len(httpserver.log) == 1


def test_the_answers_other_entries_are_ignored_when_every_id_has_one(
    httpserver: HTTPServer,
) -> None:
    answer = {"imports": [{"id": "\x1b[31mx", "created": True}, {"id": "a", "created": False}, 7]}
    httpserver.expect_request(PATH, method="POST").respond_with_json(answer, 201)
    result = invoke("--exporter", httpserver.url_for("/"), "a")
    assert (result.exit_code, result.stdout) == (0, "a already tracked\n")


# -- the exporter fails or is away: exit 3, retried ---------------------------------------


def test_a_5xx_is_retried_and_then_exits_3_with_the_message(httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_response(
        error(503, "the store is not writable")
    )
    result = invoke("--exporter", httpserver.url_for("/"), "--retries", "1", "a")
    assert result.exit_code == 3
    line = one_error_line(result.stderr)
    assert "503: the store is not writable (2 attempts)" in line
    assert len(httpserver.log) == 2


def test_a_5xx_followed_by_success_is_a_success(httpserver: HTTPServer) -> None:
    answers = iter([error(500, "internal error")])
    fallback = registrar()

    def flaky(request: Request) -> Response:
        return next(answers, None) or fallback(request)

    httpserver.expect_request(PATH, method="POST").respond_with_handler(flaky)
    result = invoke("--exporter", httpserver.url_for("/"), "a")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "a created\n"
    assert [body_of(r) for r in requests_seen(httpserver)] == [{"id": "a"}, {"id": "a"}]


def test_connection_refused_exits_3_after_the_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = invoke("--exporter", url, "--retries", "1", "a")
    assert result.exit_code == 3
    line = one_error_line(result.stderr)
    assert "refused" in line.lower()
    assert "(2 attempts)" in line


def test_a_server_that_hangs_up_without_a_word_is_retried_then_exits_3(
    silent: Callable[..., Silent],
) -> None:
    server = silent(hang_up=True)
    result = invoke("--exporter", server.url, "--retries", "1", "--timeout", "30s", "a")
    assert result.exit_code == 3
    assert "closed the connection without an answer (2 attempts)" in one_error_line(result.stderr)
    assert server.accepted == 2


def test_a_server_that_does_not_speak_http_exits_3(silent: Callable[..., Silent]) -> None:
    server = silent(trickle=b"SSH-2.0-OpenSSH_9.6\r\n", every=0.001, hang_up=True)
    result = invoke("--exporter", server.url, "--retries", "2", "--timeout", "30s", "a")
    assert result.exit_code == 3
    assert "did not answer in HTTP" in one_error_line(result.stderr)
    assert server.accepted == 1


def test_a_server_that_never_answers_ends_at_the_timeout_as_a_process(
    silent: Callable[..., Silent],
) -> None:
    server = silent()
    finished = run_track("--exporter", server.url, "--timeout", "2s", "--retries", "0", "a")
    assert finished.code == 3
    assert "did not answer within 2s" in one_error_line(finished.stderr)
    assert server.accepted == 1
    # Generous: the server would hold the connection until the test ends.
    assert finished.seconds < 30


def test_a_timeout_is_retried(silent: Callable[..., Silent]) -> None:
    server = silent()
    result = invoke("--exporter", server.url, "--timeout", "500ms", "--retries", "1", "a")
    assert result.exit_code == 3
    assert "(2 attempts)" in one_error_line(result.stderr)
    assert server.accepted == 2


def test_an_answer_trickled_byte_by_byte_is_cut_at_the_timeout(
    silent: Callable[..., Silent],
) -> None:
    # Every byte comes well within the timeout of one read; only a bound on the whole
    # exchange ends this answer, which would take minutes.
    head = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 900\r\n\r\n"
    server = silent(trickle=head + b" " * 900, every=0.1)
    started = time.monotonic()
    result = invoke("--exporter", server.url, "--timeout", "1s", "--retries", "0", "a")
    assert result.exit_code == 3
    assert "did not answer within 1s" in one_error_line(result.stderr)
    assert time.monotonic() - started < 30


def test_ctrl_c_ends_the_command_with_130(silent: Callable[..., Silent]) -> None:
    server = silent()
    process = subprocess.Popen(
        track_argv("--exporter", server.url, "--timeout", "60s", "a"),
        env=track_process_env(),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(lambda: server.accepted > 0, timeout=30, what="the request to arrive")
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        stop_process(process)
    assert process.returncode == 130
    assert stderr == b"interrupted\n"


# -- as a real process --------------------------------------------------------------------


def test_a_pipeline_tracks_ids_with_a_real_process_and_never_prints_the_password(
    httpserver: HTTPServer,
) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_handler(registrar({"known"}))
    finished = run_track(
        "--exporter.username", USER, "--type", "PRODUCT", "new", "known",
        ELEVATE_EXPORTER_URL=httpserver.url_for("/"),
        ELEVATE_EXPORTER_PASSWORD=PASSWORD,
    )  # fmt: skip
    assert finished.code == 0, finished.stderr
    assert finished.stdout == "new created\nknown already tracked\n"
    assert finished.stderr == ""
    (request,) = requests_seen(httpserver)
    assert request.headers["Authorization"] == f"Basic {TOKEN}"
    assert request.headers["User-Agent"].startswith("elevate-import-exporter/")
    assert body_of(request) == [
        {"id": "new", "type": "PRODUCT"},
        {"id": "known", "type": "PRODUCT"},
    ]


def test_a_refusal_seen_from_a_real_process_is_one_line_and_exit_1(
    httpserver: HTTPServer,
) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_response(
        error(400, "id 'a b' is not 1 to 64 characters of A-Z a-z 0-9 _ -", "id")
    )
    finished = run_track("--exporter", httpserver.url_for("/"), "a b")
    assert finished.code == 1
    line = one_error_line(finished.stderr)
    assert "(field id)" in line
    assert finished.stdout == ""


# -- TLS ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    folder: Path
    ca: trustme.CA
    server: trustme.LeafCert

    def file(self, name: str) -> str:
        return str(self.folder / name)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca, stranger = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    for name, issuer in (("client", ca), ("stranger", stranger)):
        leaf = issuer.issue_cert(f"{name}.example")
        leaf.cert_chain_pems[0].write_to_path(str(tmp_path / f"{name}.pem"))
        leaf.private_key_pem.write_to_path(str(tmp_path / f"{name}.key"))
    return Pki(tmp_path, ca, ca.issue_cert("127.0.0.1", "localhost"))


@contextmanager
def https_server(pki: Pki, *, client_certificates: bool = False) -> Iterator[HTTPServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pki.server.configure_cert(context)
    if client_certificates:
        pki.ca.configure_trust(context)
        context.verify_mode = ssl.CERT_REQUIRED
    server = HTTPServer(host="127.0.0.1", port=0, ssl_context=context)
    server.expect_request(PATH, method="POST").respond_with_handler(registrar())
    server.start()
    try:
        yield server
    finally:
        server.clear()
        server.stop()


def https_url(server: HTTPServer) -> str:
    return f"https://127.0.0.1:{server.port}"


def test_https_with_a_private_ca_and_basic_auth(pki: Pki) -> None:
    with https_server(pki) as server:
        result = invoke(
            "--exporter", https_url(server), "--exporter.ca-file", pki.file("ca.pem"),
            "--exporter.username", USER, "a",
            ELEVATE_EXPORTER_PASSWORD=PASSWORD,
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
        assert result.stdout == "a created\n"
        assert requests_seen(server)[0].headers["Authorization"] == f"Basic {TOKEN}"


def test_https_with_an_untrusted_certificate_exits_3_and_names_the_ca_flag(pki: Pki) -> None:
    with https_server(pki) as server:
        result = invoke("--exporter", https_url(server), "--retries", "2", "a")
        assert result.exit_code == 3
        line = one_error_line(result.stderr)
        assert "certificate" in line
        assert "--exporter.ca-file" in line
        assert "attempts" not in line  # a certificate does not get better by asking again
        assert server.log == []


def test_a_client_certificate_is_presented_when_the_exporter_requires_one(pki: Pki) -> None:
    with https_server(pki, client_certificates=True) as server:
        result = invoke(
            "--exporter", https_url(server), "--exporter.ca-file", pki.file("ca.pem"),
            "--exporter.cert-file", pki.file("client.pem"),
            "--exporter.key-file", pki.file("client.key"), "a",
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
        assert len(server.log) == 1


@pytest.mark.parametrize("client", [None, "stranger"])
def test_without_an_accepted_client_certificate_the_tls_failure_exits_3(
    pki: Pki, client: str | None
) -> None:
    certificate = []
    if client:
        certificate = [
            "--exporter.cert-file", pki.file(f"{client}.pem"),
            "--exporter.key-file", pki.file(f"{client}.key"),
        ]  # fmt: skip
    with https_server(pki, client_certificates=True) as server:
        result = invoke(
            "--exporter", https_url(server), "--exporter.ca-file", pki.file("ca.pem"),
            *certificate, "a",
        )  # fmt: skip
        assert result.exit_code == 3
        assert "TLS" in one_error_line(result.stderr)
        assert server.log == []


def test_a_tls_handshake_that_never_ends_is_cut_at_the_timeout(
    pki: Pki, silent: Callable[..., Silent]
) -> None:
    server = silent()
    url = server.url.replace("http://", "https://")
    result = invoke(
        "--exporter", url, "--exporter.ca-file", pki.file("ca.pem"), "--timeout", "1s",
        "--retries", "0", "a",
    )  # fmt: skip
    assert result.exit_code == 3
    assert "did not answer within 1s" in one_error_line(result.stderr)


@pytest.mark.parametrize("problem", ["ca garbage", "mismatch", "encrypted", "alone", "fifo"])
def test_tls_files_that_do_not_work_are_refused_with_exit_2(pki: Pki, problem: str) -> None:
    garbage = pki.folder / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    encrypted = pki.folder / "encrypted.key"
    key = serialization.load_pem_private_key(Path(pki.file("client.key")).read_bytes(), None)
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    fifo = pki.folder / "fifo.pem"
    os.mkfifo(fifo)
    args, named = {
        "ca garbage": (["--exporter.ca-file", str(garbage)], str(garbage)),
        "mismatch": (
            ["--exporter.cert-file", pki.file("client.pem"),
             "--exporter.key-file", pki.file("stranger.key")],
            "client.pem",
        ),
        "encrypted": (
            ["--exporter.cert-file", pki.file("client.pem"),
             "--exporter.key-file", str(encrypted)],
            "encrypted",
        ),
        "alone": (["--exporter.cert-file", pki.file("client.pem")], "go together"),
        "fifo": (["--exporter.ca-file", str(fifo)], "named pipe"),
    }[problem]  # fmt: skip
    result = invoke("--exporter", "https://127.0.0.1:9", *args, "a")
    assert result.exit_code == 2
    assert named in one_error_line(result.stderr)


# -- the real exporter --------------------------------------------------------------------


def test_an_id_tracked_with_the_real_exporter_is_on_its_metrics_after_the_next_scrape(
    simulator: Simulator, exporter_for: ExporterFor, tmp_path: Path
) -> None:
    simulator.add_import(ScriptedImport("tracked-1", (Step("IN_PROGRESS"),)))
    web_config = tmp_path / "web-config.yml"
    # The exporter's basic auth, as a web config sets it up.
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    web_config.write_text(f"basic_auth_users:\n  {USER}: {hashed}\n")
    exporter = exporter_for(
        simulator.url, (), enable_registration=True, web_config_file=str(web_config)
    )
    finished = run_track(
        "--exporter", exporter.url, "--exporter.username", USER, "--type", "PRODUCT",
        "--label", "feed=products", "tracked-1",
        ELEVATE_EXPORTER_PASSWORD=PASSWORD,
    )  # fmt: skip
    assert (finished.code, finished.stdout, finished.stderr) == (0, "tracked-1 created\n", "")
    again = run_track(
        "--exporter", exporter.url, "--exporter.username", USER, "tracked-1",
        ELEVATE_EXPORTER_PASSWORD=PASSWORD,
    )  # fmt: skip
    assert (again.code, again.stdout) == (0, "tracked-1 already tracked\n")
    authorization = f"Basic {TOKEN}"
    result = scrape(exporter.url, Authorization=authorization)
    assert result.current_status("tracked-1") == "IN_PROGRESS"
    assert simulator.requests_for("tracked-1") >= 1


def test_the_real_exporter_refuses_with_registration_disabled_and_a_bad_id(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    disabled = exporter_for(simulator.url, ())
    finished = run_track("--exporter", disabled.url, "a")
    assert finished.code == 1
    assert "--web.enable-registration" in one_error_line(finished.stderr)
    enabled = exporter_for(simulator.url, (), enable_registration=True)
    bad = run_track("--exporter", enabled.url, "not an id!")
    assert bad.code == 1
    assert "400" in one_error_line(bad.stderr)
    labels = [arg for n in range(9) for arg in ("--label", f"k{n}=v")]
    crowded = run_track("--exporter", enabled.url, *labels, "fine")
    assert crowded.code == 1
    assert "labels" in one_error_line(crowded.stderr)
