"""``track`` on requests: hostile exporters that trickle, flood or echo the credentials.

Raw sockets on loopback play the exporter, so that each answer is exactly the bytes a
broken or hostile server would send; the command runs as a real process where what it
prints on stderr (logging included) is the point.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Request, Response

from elevate_import_exporter.lifecycle.track import ANSWER_BYTES, ANSWER_BYTES_PER_ID
from tests.support import wait_until
from tests.test_track_command import PROCESS_TIMEOUT, Silent, invoke, one_error_line, run_track

PATH = "/api/v1/imports"
USER, PASSWORD = "feeder", "tr1ckle-Pa55word"
TOKEN = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
# Far beyond any cap a client could keep in memory: only a limit of its own ends the read.
FLOOD_CHUNK = b"x" * 65536


class Peer(Silent):
    """Reads the request's head, then sends ``head`` at ``head_every`` seconds a byte,
    then ``body`` at ``body_every`` seconds a byte, or with ``flood`` bytes without end.
    Counts what it sent, and sees the client let go of the connection."""

    def __init__(
        self,
        head: bytes,
        body: bytes = b"",
        *,
        head_every: float = 0.0,
        body_every: float = 0.0,
        flood: bool = False,
    ) -> None:
        super().__init__(flood=flood)
        self.head, self.body = head, body
        self.head_every, self.body_every = head_every, body_every
        self.sent = 0
        self.client_gone = threading.Event()

    def _feed(self, connection: socket.socket) -> None:
        try:
            self._read_request(connection)
            self._send(connection, self.head, self.head_every)
            self._send(connection, self.body, self.body_every)
            while self.flood and not self._stop.is_set():
                connection.sendall(FLOOD_CHUNK)
                self.sent += len(FLOOD_CHUNK)
            # The answer is out, whole or cut: the client's end of file says it let go.
            connection.shutdown(socket.SHUT_WR)
            while connection.recv(65536):
                pass
        except OSError:
            pass
        self.client_gone.set()

    @staticmethod
    def _read_request(connection: socket.socket) -> None:
        connection.settimeout(PROCESS_TIMEOUT)
        seen = b""
        while b"\r\n\r\n" not in seen:
            data = connection.recv(65536)
            if not data:
                raise OSError("the client went before its request was whole")
            seen += data

    def _send(self, connection: socket.socket, data: bytes, every: float) -> None:
        if not every:
            connection.sendall(data)
            self.sent += len(data)
            return
        for byte in data:
            if self._stop.wait(every):
                raise OSError("stopped")
            connection.sendall(bytes([byte]))
            self.sent += 1


@pytest.fixture
def peer() -> Iterator[Callable[..., Peer]]:
    peers: list[Peer] = []

    def start(head: bytes, body: bytes = b"", **kwargs: float | bool) -> Peer:
        peers.append(Peer(head, body, **kwargs))  # type: ignore[arg-type]
        return peers[-1]

    yield start
    for each in peers:
        each.close()


SUCCESS_HEAD = (
    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 600\r\n\r\n"
)


# -- a whole answer is bounded in time ------------------------------------------------------


@pytest.mark.parametrize("where", ["head", "body"])
def test_an_answer_trickled_a_byte_a_second_ends_at_the_timeout_and_lets_go_of_the_connection(
    peer: Callable[..., Peer], where: str
) -> None:
    # A byte a second is well within the 3s bound of each read: the whole answer would
    # take ten minutes. Only a bound on the whole request ends it in time.
    every = {"head_every": 1.0} if where == "head" else {"body_every": 1.0}
    server = peer(SUCCESS_HEAD, b" " * 600, **every)
    started = time.monotonic()
    result = invoke("--exporter", server.url, "--timeout", "3s", "--retries", "0", "a")
    took = time.monotonic() - started
    assert result.exit_code == 3, result.stderr
    assert "did not answer within 3s" in one_error_line(result.stderr)
    assert took < 30, f"{took:.1f}s"
    # The socket is shut at the deadline, not left to a thread that still reads it.
    wait_until(server.client_gone.is_set, timeout=10, what="track to close the connection")
    assert server.sent < len(SUCCESS_HEAD) + 600


def test_a_trickled_answer_is_retried_each_attempt_within_its_own_timeout(
    peer: Callable[..., Peer],
) -> None:
    server = peer(SUCCESS_HEAD, b" " * 600, body_every=1.0)
    started = time.monotonic()
    result = invoke("--exporter", server.url, "--timeout", "2s", "--retries", "1", "a")
    assert result.exit_code == 3, result.stderr
    assert "did not answer within 2s (2 attempts)" in one_error_line(result.stderr)
    assert server.accepted == 2
    assert time.monotonic() - started < 40


# -- a whole answer is bounded in size --------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 201 Created\r\nContent-Length: 1000000000000\r\n\r\n",
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n10000000\r\n",
        b"HTTP/1.1 201 Created\r\nConnection: close\r\n\r\n",
    ],
    ids=["a terabyte announced", "one huge chunk", "until the connection ends"],
)
def test_an_oversized_answer_is_read_only_up_to_the_cap(
    peer: Callable[..., Peer], head: bytes
) -> None:
    server = peer(head, flood=True)
    result = invoke("--exporter", server.url, "--timeout", "30s", "--retries", "0", "a")
    assert result.exit_code == 3, result.stderr
    line = one_error_line(result.stderr)
    assert "an answer too large to read" in line
    assert len(line) < 600
    wait_until(server.client_gone.is_set, timeout=10, what="track to close the connection")
    # What the server got out is the cap plus what the kernel's buffers hold: a client
    # that read on would take gigabytes at loopback speed before its 30s were up.
    cap = ANSWER_BYTES + ANSWER_BYTES_PER_ID
    assert server.sent < cap + 64 * 1024 * 1024


# -- credentials never shown ------------------------------------------------------------------


def test_a_redirect_to_a_url_carrying_the_password_never_shows_it(httpserver: HTTPServer) -> None:
    target = f"https://{USER}:{PASSWORD}@elsewhere.example/api/v1/imports"
    answer = Response("", 307, headers={"Location": target})
    httpserver.expect_request(PATH, method="POST").respond_with_response(answer)
    done = run_track(
        "--exporter", httpserver.url_for("/"), "--exporter.username", USER, "a",
        ELEVATE_EXPORTER_PASSWORD=PASSWORD,
    )  # fmt: skip
    assert done.code == 1, done.stderr
    line = one_error_line(done.stderr)
    assert "not followed" in line
    assert "elsewhere.example" in line
    assert PASSWORD not in done.stderr + done.stdout
    assert len(httpserver.log) == 1


def test_a_5xx_that_echoes_the_authorization_header_is_masked_after_the_retries(
    httpserver: HTTPServer,
) -> None:
    def echo(request: Request) -> Response:
        return Response(f"upstream said: {request.headers['Authorization']}", 502)

    httpserver.expect_request(PATH, method="POST").respond_with_handler(echo)
    done = run_track(
        "--exporter", httpserver.url_for("/"), "--exporter.username", USER, "--retries", "1", "a",
        ELEVATE_EXPORTER_PASSWORD=PASSWORD,
    )  # fmt: skip
    assert done.code == 3, done.stderr
    line = one_error_line(done.stderr)
    assert "502: upstream said: Basic ******** (2 attempts)" in line
    assert TOKEN not in done.stderr
    assert len(httpserver.log) == 2


@pytest.mark.parametrize(
    "answer",
    [
        # Not a status line: the client library quotes it in its exception.
        f"Basic {TOKEN} {USER}:{PASSWORD}\r\n\r\n",
        # A header line without a colon: urllib3 logs what it could not parse.
        f"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nBasic {TOKEN}\r\n{PASSWORD}\r\n\r\n",
        # The token in the reason phrase of an answer that then breaks off.
        f"HTTP/1.1 500 Basic {TOKEN}\r\nContent-Length: 100\r\n\r\ncut",
    ],
    ids=["as the status line", "in a broken header", "in the reason of a cut answer"],
)
def test_an_answer_echoing_the_authorization_header_in_its_head_never_shows_it(
    peer: Callable[..., Peer], answer: str
) -> None:
    server = peer(answer.encode())
    done = run_track(
        "--exporter", server.url, "--exporter.username", USER, "--retries", "0",
        "--timeout", "30s", "a",
        ELEVATE_EXPORTER_PASSWORD=PASSWORD,
    )  # fmt: skip
    assert done.code in (1, 3), done.stderr
    one_error_line(done.stderr)
    assert TOKEN not in done.stderr + done.stdout
    assert PASSWORD not in done.stderr + done.stdout


def test_the_authorization_header_goes_to_the_exporter_and_nowhere_else_on_a_redirect(
    httpserver: HTTPServer,
) -> None:
    # The redirect points back at the same server: a client that followed it would
    # send a second request there.
    answer = Response("", 302, headers={"Location": httpserver.url_for("/elsewhere")})
    httpserver.expect_request(PATH, method="POST").respond_with_response(answer)
    httpserver.expect_request("/elsewhere").respond_with_data("", 200)
    done = run_track(
        "--exporter", httpserver.url_for("/"), "--exporter.username", USER, "a",
        ELEVATE_EXPORTER_PASSWORD=PASSWORD,
    )  # fmt: skip
    assert done.code == 1, done.stderr
    assert [request.path for request, _ in httpserver.log] == [PATH]
