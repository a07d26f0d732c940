"""The generic server (``httpd.server.Server``) with routes of a test's own: what it does
before and after the routes, whatever the site."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from elevate_import_exporter.httpd.messages import Answer, Request
from elevate_import_exporter.httpd.server import SERVER, Server
from elevate_import_exporter.httpd.webconfig import HttpServerConfig, WebConfig

WAIT = 20.0


class EchoRoutes:
    """Answers with the method and path; words errors as ``error: <status> <reason>``."""

    def __init__(self) -> None:
        self.answered: list[Request] = []
        self.errors: list[tuple[Request, int]] = []
        self.hold: threading.Event | None = None  # set: answers wait for it
        self.entered = threading.Event()

    def answer(self, request: Request) -> Answer:
        self.answered.append(request)
        self.entered.set()
        if self.hold is not None:
            self.hold.wait(WAIT)
        return Answer(
            200,
            (("Content-Type", "text/plain"),),
            f"{request.method} {request.path} {request.body!r}".encode(),
        )

    def error(self, request: Request, status: int, reason: str) -> Answer:
        self.errors.append((request, status))
        return Answer(
            status, (("Content-Type", "text/plain"),), f"error: {status} {reason}".encode()
        )


Serve = Callable[..., tuple[Server, EchoRoutes]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    started: list[tuple[Server, threading.Thread]] = []

    def start(**options: object) -> tuple[Server, EchoRoutes]:
        routes = EchoRoutes()
        server = Server(routes, "127.0.0.1", 0, **options)  # type: ignore[arg-type]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        started.append((server, thread))
        return server, routes

    yield start
    for server, thread in started:
        server.shutdown()
        thread.join()
        server.close()


def exchange(server: Server, data: bytes) -> bytes:
    """Everything the server sends for ``data`` until it closes (the client half-closes)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_every_answer_carries_server_date_and_the_web_configs_extra_headers(
    serve: Serve,
) -> None:
    config = WebConfig(http=HttpServerConfig(headers={"X-Frame-Options": "deny"}))
    server, _routes = serve(web_config=config)
    received = exchange(server, b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    head = received.split(b"\r\n\r\n")[0].decode()
    assert head.startswith("HTTP/1.1 200 ")
    assert f"\r\nServer: {SERVER}\r\n" in head
    assert "\r\nDate: " in head
    assert "\r\nX-Frame-Options: deny\r\n" in head


def test_an_http11_request_without_host_is_refused_400_in_the_routes_wording(
    serve: Serve,
) -> None:
    server, routes = serve()
    received = exchange(server, b"GET /x HTTP/1.1\r\n\r\n")
    assert received.startswith(b"HTTP/1.1 400 ")
    assert b"error: 400 " in received
    assert routes.answered == []


def test_a_folded_head_is_refused_before_the_auth_check_which_could_not_believe_it(
    serve: Serve,
) -> None:
    users = WebConfig(basic_auth_users={"u": "$2b$04$" + "a" * 53})
    server, routes = serve(web_config=users)
    received = exchange(server, b"GET /x HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n b\r\n\r\n")
    assert received.startswith(b"HTTP/1.1 400 ")
    assert b"WWW-Authenticate" not in received
    assert [status for _request, status in routes.errors] == [400]


def test_a_chunked_body_reaches_the_routes_decoded(serve: Serve) -> None:
    server, routes = serve()
    received = exchange(
        server,
        b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
    )
    assert received.endswith(b"POST /p b'abcde'")
    assert routes.answered[0].body == b"abcde"


def test_an_answer_in_flight_when_the_drain_begins_says_the_connection_closes(
    serve: Serve,
) -> None:
    server, routes = serve()
    routes.hold = threading.Event()
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT) as sock:
        sock.sendall(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
        assert routes.entered.wait(WAIT)
        server.drain(WAIT)
        routes.hold.set()
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nConnection: close\r\n" in received
