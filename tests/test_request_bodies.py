"""Request bodies on raw sockets: read whole without a thread, cut at their deadline, bounded,
and framed one way only (no request smuggling); keep-alive and pipelining still work."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import pytest

from elevate_import_exporter.httpd import connections
from elevate_import_exporter.httpd.connections import MAX_BODY_BYTES
from elevate_import_exporter.site import web
from tests.support import BareSite, wait_until


class RegistrationSite(BareSite):
    """An HttpServer's site with a real catalog on an in-memory store, and nothing to poll."""

    registration_enabled = True


@dataclass
class Served:
    server: web.HttpServer
    site: RegistrationSite
    sockets: list[socket.socket] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.server.port

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        self.sockets.append(sock)
        return sock


Serve = Callable[..., Served]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """``serve(**HttpServer options)``: a served HttpServer over a RegistrationSite."""
    started: list[tuple[Served, threading.Thread]] = []

    def start(**options: Any) -> Served:
        site = RegistrationSite()
        server = web.HttpServer(site, "127.0.0.1", 0, **options)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        served = Served(server, site)
        started.append((served, thread))
        return served

    yield start
    for served, thread in started:
        for sock in served.sockets:
            sock.close()
        served.server.shutdown()
        thread.join()
        served.server.close()
        served.site.store.close()


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        document = json.loads(self.body)
        assert isinstance(document, dict)
        return document


class Reader:
    """Reads the responses that come back on one connection, one after the other."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def response(self) -> Response:
        while b"\r\n\r\n" not in self.buffer:
            assert self._fill(), f"closed before a whole head: {self.buffer[:200]!r}"
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            assert self._fill(), "closed before the whole body"
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return Response(int(lines[0].split()[1]), headers, body)

    def closed(self, timeout: float = 10.0) -> bool:
        """Whether nothing more comes and the server closes within ``timeout`` seconds."""
        readable, _, _ = select.select([self.sock], [], [], timeout)
        if not readable:
            return False
        try:
            return not self._fill() and not self.buffer
        except ConnectionResetError:
            return not self.buffer


def post(path: str, body: bytes, *extra: str, content_type: str = "application/json") -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Type: {content_type}"]
    framed = any(h.lower().startswith(("content-length", "transfer-encoding")) for h in extra)
    head += [*extra] if framed else [f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def registration(import_id: str) -> bytes:
    return json.dumps({"id": import_id}).encode()


# -- bodies arrive whole ----------------------------------------------------------------------


def test_a_body_that_arrives_in_pieces_is_answered_only_once_it_is_whole(serve: Serve) -> None:
    served = serve()
    sock = served.connect()
    request = post("/api/v1/imports", registration("piecewise"))
    cut = request.index(b"\r\n\r\n") + 10  # the head and part of the body
    sock.sendall(request[:cut])
    assert select.select([sock], [], [], 0.5)[0] == []  # nothing answered on half a body
    sock.sendall(request[cut:])
    answer = Reader(sock).response()
    assert answer.status == 201, answer.body
    assert served.site.catalog.get("piecewise") is not None


def test_a_client_that_waits_for_100_continue_gets_it_before_it_sends_the_body(
    serve: Serve,
) -> None:
    sock = serve().connect()
    request = post("/api/v1/imports", registration("careful"), "Expect: 100-continue")
    head, _, body = request.partition(b"\r\n\r\n")
    sock.sendall(head + b"\r\n\r\n")
    reader = Reader(sock)
    interim = reader.response()
    assert interim.status == 100
    sock.sendall(body)
    answer = reader.response()
    assert answer.status == 201
    assert answer.json() == {"imports": [{"id": "careful", "created": True}]}


def test_a_body_that_never_ends_is_cut_at_its_deadline_however_it_trickles(
    serve: Serve,
) -> None:
    served = serve(header_timeout=1.0)
    sock = served.connect()
    sock.sendall(post("/api/v1/imports", b"", "Content-Length: 10000") + b"{")
    started = time.monotonic()
    reader = Reader(sock)
    # A byte every 0.1 s for up to 30 s: trickling must not buy more time.
    while time.monotonic() - started < 30:
        if reader.closed(timeout=0.1):
            break
        try:
            sock.sendall(b" ")
        except OSError:
            break
    else:
        pytest.fail("the server kept a trickled body open for 30 s")
    assert served.site.catalog.query()[1] == 0


def test_bodies_that_trickle_hold_no_thread(serve: Serve) -> None:
    served = serve(header_timeout=30.0, max_threads=2)
    with ExitStack() as stack:
        for _ in range(6):  # three times the threads
            sock = socket.create_connection(("127.0.0.1", served.port), timeout=30)
            stack.callback(sock.close)
            sock.sendall(post("/api/v1/imports", b"", "Content-Length: 1000") + b"[")
        sock = served.connect()
        sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        assert Reader(sock).response().status == 200
        sock.sendall(post("/api/v1/imports", registration("meanwhile")))
        assert Reader(sock).response().status == 201


# -- keep-alive and pipelining ----------------------------------------------------------------


def test_a_connection_stays_usable_after_a_post_and_pipelined_requests_are_answered_in_order(
    serve: Serve,
) -> None:
    sock = serve().connect()
    reader = Reader(sock)
    sock.sendall(post("/api/v1/imports", registration("first")))
    assert reader.response().status == 201
    # Three requests in one write, the body of the second followed at once by the third.
    sock.sendall(
        post("/api/v1/imports", registration("first"))
        + post("/api/v1/imports", registration("second"))
        + b"GET /api/v1/imports/second HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert [reader.response().status for _ in range(3)] == [200, 201, 200]
    sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reader.response().body == b"Healthy.\n"


def test_a_body_on_a_get_is_read_and_not_taken_for_the_next_request(serve: Serve) -> None:
    sock = serve().connect()
    smuggled = b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
    sock.sendall(
        b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(smuggled)
        + smuggled
        + b"GET /-/ready HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    reader = Reader(sock)
    assert reader.response().body == b"Healthy.\n"
    assert reader.response().body == b"Ready.\n"  # not the 404 of the body's "request"


# -- size ------------------------------------------------------------------------------------


def test_a_body_of_exactly_1_mib_is_taken(serve: Serve) -> None:
    served = serve()
    sock = served.connect()
    document = registration("big")
    body = document + b" " * (MAX_BODY_BYTES - len(document))
    sock.sendall(post("/api/v1/imports", body))
    assert Reader(sock).response().status == 201


def test_a_body_over_1_mib_is_refused_with_413_before_it_is_sent(serve: Serve) -> None:
    served = serve()
    sock = served.connect()
    sock.sendall(post("/api/v1/imports", b"", f"Content-Length: {MAX_BODY_BYTES + 1}"))
    reader = Reader(sock)
    answer = reader.response()
    assert answer.status == 413
    assert answer.headers["content-type"] == "application/json"
    assert "1048576" in str(answer.json()["error"])
    assert answer.headers["connection"] == "close"
    assert reader.closed()
    assert served.site.catalog.registrations["invalid"] == 1


def test_a_client_that_sends_its_too_large_body_before_reading_still_gets_the_413(
    serve: Serve,
) -> None:
    # As http.client and many scripts do. The server answers after the head; were it to
    # close with the body unread, the client's writing would fail on a reset connection.
    sock = serve().connect()
    sock.sendall(post("/api/v1/imports", b" " * (4 * MAX_BODY_BYTES)))
    reader = Reader(sock)
    assert reader.response().status == 413
    assert reader.closed()


# How many requests with a 1 MiB body may wait for it at once.
ANNOUNCED = connections.MAX_WAITING_BYTES // (
    MAX_BODY_BYTES + len(post("/api/v1/imports", b"", f"Content-Length: {MAX_BODY_BYTES}"))
)


def announce(served: Served, count: int) -> list[socket.socket]:
    """``count`` connections that each announce a body of 1 MiB and send none of it."""
    socks = []
    for _ in range(count):
        sock = served.connect()
        sock.sendall(post("/api/v1/imports", b"", f"Content-Length: {MAX_BODY_BYTES}"))
        socks.append(sock)
    return socks


def closed_ones(socks: list[socket.socket], timeout: float) -> list[socket.socket]:
    """Those of ``socks`` that the server closes (it sends nothing else) within ``timeout``."""
    readable, _, _ = select.select(socks, [], [], timeout)
    return readable


def test_bodies_on_their_way_are_bounded_in_all(serve: Serve) -> None:
    served = serve(header_timeout=60.0)
    assert ANNOUNCED >= 32
    socks = announce(served, ANNOUNCED + 1)
    wait_until(lambda: closed_ones(socks, 0.1), timeout=20, what="a connection to be closed")
    assert len(closed_ones(socks, 0.5)) == 1  # the one too many, and only it


def test_bodies_announced_by_connections_that_left_no_longer_count(serve: Serve) -> None:
    # A reservation left behind by a closed connection would end in refusing every body.
    served = serve(header_timeout=60.0)
    for _ in range(2):
        for sock in announce(served, ANNOUNCED):
            sock.close()
    kept: list[socket.socket] = []

    def one_more_kept() -> bool:
        # Until the server has seen the others go, a new one may still be closed.
        (sock,) = announce(served, 1)
        if closed_ones([sock], 0.2):
            return False
        kept.append(sock)
        return len(kept) == ANNOUNCED

    wait_until(one_more_kept, timeout=30, what="the server to take as many bodies as at first")
    assert closed_ones(kept, 0.5) == []


# -- framing that could be read two ways -------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (["Content-Length: 5", "Transfer-Encoding: chunked"], 400),
        (["Transfer-Encoding: chunked", "Content-Length: 5"], 400),
        (["Content-Length: 5", "Content-Length: 6"], 400),
        (["Content-Length: abc"], 400),
        (["Content-Length: +5"], 400),
        (["Content-Length: -1"], 400),
        (["Content-Length: 1_0"], 400),
        (["Content-Length: 5, 5"], 400),
        (["Content-Length: \u0665".encode().decode("latin-1")], 400),  # Arabic-Indic five
        (["Content-Length: 0x5"], 400),
        (["Transfer-Encoding: identity"], 501),
        (["Transfer-Encoding: gzip, chunked"], 501),
        (["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"], 501),
        ([f"Content-Length: {'9' * 12}"], 413),
        ([f"Content-Length: {'9' * 40}"], 400),  # more digits than h11 reads
    ],
)
def test_a_framing_that_could_be_read_two_ways_is_refused_and_the_connection_closed(
    serve: Serve, headers: list[str], status: int
) -> None:
    served = serve()
    sock = served.connect()
    smuggled = b"GET /api/v1/imports/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    sock.sendall(post("/api/v1/imports", b"", *headers) + b"0\r\n\r\n" + smuggled)
    reader = Reader(sock)
    answer = reader.response()
    assert answer.status == status
    assert answer.headers["content-type"] == "application/json"
    assert set(answer.json()) == {"error"}
    assert reader.closed()  # and no second answer, to the smuggled request
    assert served.site.catalog.registrations["invalid"] == 1


def test_the_same_content_length_twice_is_one_framing(serve: Serve) -> None:
    sock = serve().connect()
    body = registration("twice")
    sock.sendall(post("/api/v1/imports", body, *[f"Content-Length: {len(body)}"] * 2))
    assert Reader(sock).response().status == 201


def test_a_chunked_registration_is_taken_and_the_request_behind_it_answered(
    serve: Serve,
) -> None:
    served = serve()
    sock = served.connect()
    body = registration("in-chunks")
    chunks = b"%x\r\n%s\r\n%x;ext=1\r\n%s\r\n0\r\n\r\n" % (5, body[:5], len(body) - 5, body[5:])
    sock.sendall(
        post("/api/v1/imports", chunks, "Transfer-Encoding: chunked")
        + b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    reader = Reader(sock)
    assert reader.response().status == 201
    assert reader.response().body == b"Healthy.\n"
    assert served.site.catalog.get("in-chunks") is not None


def test_a_chunked_registration_over_the_body_limit_is_refused_once_read_that_far(
    serve: Serve,
) -> None:
    sock = serve().connect()
    chunk = b" " * 65536
    chunks = b"%x\r\n%s\r\n" % (len(chunk), chunk) * (MAX_BODY_BYTES // len(chunk) + 1)
    sock.sendall(post("/api/v1/imports", chunks, "Transfer-Encoding: chunked"))
    reader = Reader(sock)
    answer = reader.response()
    assert answer.status == 413
    assert answer.headers["content-type"] == "application/json"
    assert reader.closed()


def test_a_broken_chunked_body_elsewhere_gets_400_in_text_and_a_close(serve: Serve) -> None:
    sock = serve().connect()
    sock.sendall(
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n"
        b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    reader = Reader(sock)
    answer = reader.response()
    assert answer.status == 400
    assert answer.headers["content-type"].startswith("text/plain")
    assert reader.closed()
