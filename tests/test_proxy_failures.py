"""The import proxy when things go wrong: Elevate down, slow or refusing; hostile requests;
secrets that must stay where they belong; hop-by-hop headers that must stop here."""

from __future__ import annotations

import base64
import json
import logging
import socket
import time
from collections.abc import Iterator

import bcrypt
import pytest

from elevate_import_exporter.httpd.webconfig import HttpServerConfig, WebConfig
from elevate_import_exporter.simulator import Simulator
from tests.support import free_port, wait_until
from tests.test_proxy import FEED, KEY, ProxyTo, send, started_proxies
from tests.upstream import Hang, Send, Upstream, answer

SECRET = "feed-KEY-93b1c0-NEVER-SHOW"
PATH = "/api/v2/import/products"


@pytest.fixture
def proxy_to() -> Iterator[ProxyTo]:
    yield from started_proxies()


def raw_exchange(port: int, data: bytes, timeout: float = 30.0) -> bytes:
    """Send ``data`` on a fresh connection and read until the proxy closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def json_error(answer_bytes: bytes) -> tuple[int, dict[str, str]]:
    head, _, body = answer_bytes.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_elevate_down_is_a_502_with_a_short_json_error(proxy_to: ProxyTo) -> None:
    run = proxy_to(f"http://127.0.0.1:{free_port()}")
    got = run.send("POST", PATH, FEED, {"Api-Key": KEY})
    assert got.status == 502
    assert got.header("Content-Type") == "application/json"
    assert json.loads(got.body) == {
        "error": "Bad Gateway",
        "message": "Elevate refused the connection.",
    }
    run.wait_answered(1)
    scrape = run.metrics()
    assert scrape.value("elevate_import_proxy_upstream_errors_total", reason="connection_error")
    assert scrape.value("elevate_import_proxy_requests_total", method="POST", code="502") == 1
    assert scrape.value("elevate_import_proxy_imports_total", type="PRODUCTS", outcome="failed")
    assert run.registered == []


def test_elevate_slower_than_the_timeout_is_a_504_and_its_request_is_closed(
    proxy_to: ProxyTo,
) -> None:
    with Upstream() as upstream:
        upstream.on("/api/v2/import/status/1", [Hang()])
        run = proxy_to(upstream.url, timeout=0.5)
        started = time.monotonic()
        got = run.send("GET", "/api/v2/import/status/1", None, {"Api-Key": KEY})
        assert got.status == 504
        assert json.loads(got.body)["error"] == "Gateway Timeout"
        assert time.monotonic() - started < 20
        wait_until(lambda: upstream.peer_left == 1, what="the upstream to see the request end")
        run.wait_answered(1)
        assert run.metrics().value("elevate_import_proxy_upstream_errors_total", reason="timeout")


def test_a_403_from_elevate_reaches_the_client_unchanged(proxy_to: ProxyTo) -> None:
    with Simulator(api_key="the-right-key") as sim:
        run = proxy_to(sim.url)
        direct = send(int(sim.url.rsplit(":", 1)[1]), "POST", PATH, FEED, {"Api-Key": KEY})
        proxied = run.send("POST", PATH, FEED, {"Api-Key": KEY})
    assert direct.status == proxied.status == 403
    assert proxied.body == direct.body

    def without_date(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [(n, v) for n, v in headers if n != "Date"]

    assert without_date(proxied.headers) == without_date(direct.headers)
    run.wait_answered(1)
    scrape = run.metrics()
    assert scrape.value("elevate_import_proxy_upstream_errors_total", reason="forbidden") == 1
    assert scrape.value("elevate_import_proxy_imports_total", type="PRODUCTS", outcome="refused")
    assert run.registered == []


HOP_BY_HOP_REQUEST = (
    "Connection: keep-alive, X-Drop-Me\r\n"
    "Keep-Alive: timeout=5\r\n"
    "Proxy-Authorization: Basic Zm9vOmJhcg==\r\n"
    "Proxy-Connection: keep-alive\r\n"
    "TE: trailers\r\n"
    "Trailer: X-Checksum\r\n"
    "Upgrade: websocket\r\n"
    "X-Drop-Me: 1\r\n"
)


def test_hop_by_hop_request_headers_stay_here_and_the_rest_go_on(proxy_to: ProxyTo) -> None:
    with Upstream() as upstream:
        upstream.on("/api/v2/import/status/7?x=1", [Send(answer(b"{}"))])
        run = proxy_to(upstream.url)
        request = (
            f"GET /api/v2/import/status/7?x=1 HTTP/1.1\r\nHost: proxy.example\r\n"
            f"Api-Key: {KEY}\r\nX-Keep: yes\r\nAccept: application/json\r\n"
            f"{HOP_BY_HOP_REQUEST}Connection: close\r\n\r\n"
        )
        assert b" 200 " in raw_exchange(run.port, request.encode())
        [seen] = upstream.seen
    assert seen.path == "/api/v2/import/status/7?x=1"
    assert seen.headers["host"] == upstream.url.removeprefix("http://")
    assert seen.headers["api-key"] == KEY
    assert seen.headers["x-keep"] == "yes"
    assert seen.headers["accept"] == "application/json"
    forwarded = set(seen.headers)
    for dropped in ("keep-alive", "proxy-authorization", "proxy-connection", "te", "trailer"):
        assert dropped not in forwarded
    assert "upgrade" not in forwarded
    assert "x-drop-me" not in forwarded
    # The proxy's own connection to Elevate says nothing of the client's.
    assert seen.headers.get("connection") in (None, "close")


def test_hop_by_hop_answer_headers_stay_here_and_the_rest_come_back(proxy_to: ProxyTo) -> None:
    headers = {
        "Connection": "X-Internal",
        "X-Internal": "hop",
        "Keep-Alive": "timeout=5",
        "Proxy-Authenticate": "Basic",
        "Upgrade": "h2c",
        "Trailer": "X-Sum",
        "X-End-To-End": "kept",
        "Set-Cookie": "a=1",
    }
    with Upstream() as upstream:
        upstream.on("/x", [Send(answer(b'{"ok": true}', 200, headers))])
        run = proxy_to(upstream.url)
        got = run.send("GET", "/x")
    names = {name.lower() for name, _value in got.headers}
    assert {"x-internal", "keep-alive", "proxy-authenticate", "upgrade", "trailer"} & names == set()
    assert got.header("X-End-To-End") == "kept"
    assert got.header("Set-Cookie") == "a=1"
    assert got.body == b'{"ok": true}'


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (f"POST {PATH} HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n", 400),
        (f"POST {PATH} HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n", 501),
        (f"POST {PATH} HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n", 501),
        (f"POST {PATH} HTTP/1.1\r\nContent-Length: 5, 6\r\n", 400),
        (f"POST {PATH} HTTP/1.1\r\nContent-Length: +5\r\n", 400),
        (f"POST {PATH} HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n", 400),
        (f"POST {PATH} HTTP/1.1\r\nX-A: 1\r\n folded: value\r\n", 400),
        (f"POST {PATH} HTTP/1.1\r\nX-A : 1\r\n", 400),
        (f"POST {PATH} HTTP/1.1\r\nX-A: a\x00b\r\n", 400),
        ("POST http://elsewhere.example/api HTTP/1.1\r\n", 400),
        (f"POST {PATH} HTTP/2.0\r\n", 505),
        (f"POST  {PATH} HTTP/1.1\r\n", 400),
        (f"POST {PATH} HTTP/1.1\r\nExpect: something-else\r\n", 417),
        (f"GET {PATH} HTTP/1.1\r\n" + "X-Pad: " + "a" * 70_000 + "\r\n", 431),
        (f"GET {PATH} HTTP/1.1\r\n" + "X-A: 1\r\n" * 120, 431),
    ],
    ids=[
        "length-and-chunked",
        "gzip-chunked",
        "chunked-not-last",
        "two-lengths-in-one",
        "signed-length",
        "two-length-headers",
        "folded-header",
        "space-before-colon",
        "nul-in-value",
        "absolute-form",
        "http2",
        "double-space",
        "unknown-expect",
        "huge-header",
        "many-headers",
    ],
)
def test_an_ambiguous_or_malformed_request_is_refused_and_never_forwarded(
    proxy_to: ProxyTo, head: str, status: int
) -> None:
    with Upstream() as upstream:
        run = proxy_to(upstream.url)
        request = head + f"Host: proxy\r\nApi-Key: {KEY}\r\n\r\n12345"
        got = raw_exchange(run.port, request.encode("latin-1"))
        assert json_error(got)[0] == status
        assert b"Connection: close" in got
        assert upstream.seen == []


def test_a_broken_chunked_body_ends_the_request_upstream_without_an_import(
    simulator: Simulator, proxy_to: ProxyTo
) -> None:
    run = proxy_to(simulator.url)
    request = (
        f"POST {PATH} HTTP/1.1\r\nHost: proxy\r\nApi-Key: {KEY}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
        "5\r\nhello\r\nzz\r\n"
    )
    assert json_error(raw_exchange(run.port, request.encode()))[0] == 400
    wait_until(lambda: simulator.uploads, what="the upload to end at the simulator")
    assert not simulator.uploads[0].complete
    assert run.registered == []


def test_a_head_that_trickles_in_is_cut_at_the_header_timeout(proxy_to: ProxyTo) -> None:
    with Upstream() as upstream:
        run = proxy_to(upstream.url, header_timeout=0.5)
        with socket.create_connection(("127.0.0.1", run.port), timeout=10) as sock:
            started = time.monotonic()
            closed = False
            for byte in b"GET /x HTTP/1.1\r\nX-Slow: " + b"a" * 100:
                try:
                    sock.sendall(bytes([byte]))
                    time.sleep(0.05)
                except OSError:
                    closed = True
                    break
                if time.monotonic() - started > 5:
                    break
            if not closed:
                sock.settimeout(5)
                closed = sock.recv(100) == b""
            assert closed
            assert time.monotonic() - started < 5
        assert upstream.seen == []


def test_with_every_place_taken_the_connection_waiting_longest_makes_room(
    proxy_to: ProxyTo,
) -> None:
    with Upstream() as upstream:
        upstream.on("/x", [Send(answer(b"{}"))])
        run = proxy_to(upstream.url, max_connections=2)
        idle = [socket.create_connection(("127.0.0.1", run.port)) for _ in range(2)]
        try:
            wait_until(lambda: run.proxy.open_connections == 2, what="both idle ones in")
            assert run.send("GET", "/x").status == 200
        finally:
            for sock in idle:
                sock.close()


def test_the_clients_api_key_reaches_elevate_and_no_log_line_metric_or_registration(
    proxy_to: ProxyTo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key_headers = {"Api-Key": SECRET, "X-Feed-Name": "shop"}
    with Simulator(api_key=SECRET) as sim:
        run = proxy_to(sim.url, timeout=0.5)
        assert run.send("POST", PATH, FEED, key_headers).status == 202  # the key went through
        assert run.send("POST", "/api/v2/import/ads", b"<a/>", key_headers).status == 204
        sim.api_key = "another-key"
        assert run.send("POST", PATH, FEED, key_headers).status == 403
        sim.import_desk.delay = 5
        assert run.send("POST", PATH, FEED, key_headers).status == 504
        raw_exchange(
            run.port,
            f"POST {PATH} HTTP/1.1\r\nHost: p\r\nApi-Key: {SECRET}\r\nX: \x01\r\n\r\n".encode(),
        )
        with socket.create_connection(("127.0.0.1", run.port)) as sock:  # leaves mid-upload
            sock.sendall(f"POST {PATH} HTTP/1.1\r\nHost: p\r\nApi-Key: {SECRET}\r\n".encode())
            sock.sendall(b"Content-Length: 100000\r\n\r\n" + b"x" * 1000)
        down = proxy_to(f"http://127.0.0.1:{free_port()}")
        assert down.send("POST", PATH, FEED, key_headers).status == 502
        run.wait_answered(6)
        down.wait_answered(1)
        scrapes = run.metrics().text + down.metrics().text
    assert len(run.registered) == 1
    assert SECRET not in repr(run.registered)
    assert SECRET not in scrapes
    assert any(r.levelno == logging.DEBUG for r in caplog.records)
    for record in caplog.records:
        assert SECRET not in record.getMessage()
        assert SECRET not in str(record.exc_info)


def test_basic_auth_guards_the_proxy_and_its_credentials_do_not_go_on(proxy_to: ProxyTo) -> None:
    hashed = bcrypt.hashpw(b"feed-password", bcrypt.gensalt(rounds=4)).decode()
    config = WebConfig(
        basic_auth_users={"feed": hashed},
        http=HttpServerConfig(headers={"Strict-Transport-Security": "max-age=60"}),
    )
    with Upstream() as upstream:
        upstream.on("/x", [Send(answer(b"{}"))])
        run = proxy_to(upstream.url, web_config=lambda: config)
        refused = run.send("GET", "/x", None, {"Api-Key": KEY})
        assert refused.status == 401
        assert (
            refused.header(
                "WWW-Authenticate",
            )
            is not None
        )
        assert refused.header("Strict-Transport-Security") == "max-age=60"
        wrong = base64.b64encode(b"feed:nope").decode()
        assert run.send("GET", "/x", None, {"Authorization": f"Basic {wrong}"}).status == 401
        assert upstream.seen == []
        right = base64.b64encode(b"feed:feed-password").decode()
        got = run.send("GET", "/x", None, {"Authorization": f"Basic {right}", "Api-Key": KEY})
        assert got.status == 200
        assert got.header("Strict-Transport-Security") == "max-age=60"
        [seen] = upstream.seen
    assert "authorization" not in seen.headers
    assert seen.headers["api-key"] == KEY
