"""The import proxy reads requests through the one HTTP/1.1 parser (issue 21, point 3):
what that changes for a feed job, and what must stay as it was (bodies streamed whole,
over TLS too, and connections kept alive across uploads and pipelined requests)."""

from __future__ import annotations

import hashlib
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from elevate_import_exporter.httpd.tls import TlsProvider
from elevate_import_exporter.httpd.webconfig import TlsServerConfig
from elevate_import_exporter.simulator import Simulator
from tests.support import wait_until
from tests.test_proxy import KEY, ProxyTo, started_proxies
from tests.test_proxy_failures import json_error, raw_exchange
from tests.test_proxy_tls import pki  # noqa: F401  (a fixture)
from tests.upstream import Send, Upstream, answer

PATH = "/api/v2/import/products"
MIB = 1024 * 1024


@pytest.fixture
def proxy_to() -> Iterator[ProxyTo]:
    yield from started_proxies()


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    with Simulator(api_key=KEY) as sim:
        yield sim


def test_an_http11_request_without_host_is_refused_400_and_never_forwarded(
    proxy_to: ProxyTo,
) -> None:
    with Upstream() as upstream:
        upstream.on("/x", [Send(answer(b"{}"))])
        run = proxy_to(upstream.url)
        got = raw_exchange(run.port, f"GET /x HTTP/1.1\r\nApi-Key: {KEY}\r\n\r\n".encode())
        status, error = json_error(got)
        assert status == 400
        assert "host" in error["message"].lower()
        assert b"Connection: close" in got
        assert upstream.seen == []


def test_an_http10_request_without_host_is_forwarded_with_elevates_host(
    proxy_to: ProxyTo,
) -> None:
    with Upstream() as upstream:
        upstream.on("/x", [Send(answer(b'{"ok": true}'))])
        run = proxy_to(upstream.url)
        got = raw_exchange(run.port, f"GET /x HTTP/1.0\r\nApi-Key: {KEY}\r\n\r\n".encode())
        assert got.startswith(b"HTTP/1.1 200 ")
        assert got.endswith(b'{"ok": true}')
        [seen] = upstream.seen
        assert {k.lower(): v for k, v in seen.headers.items()}["host"] == upstream.url[7:]


def chunked_body(data: bytes, sizes: tuple[int, ...]) -> Iterator[bytes]:
    """``data`` as chunks of the sizes given in turn, then the last chunk."""
    at, turn = 0, 0
    while at < len(data):
        piece = data[at : at + sizes[turn % len(sizes)]]
        yield b"%x\r\n%s\r\n" % (len(piece), piece)
        at += len(piece)
        turn += 1
    yield b"0\r\n\r\n"


def test_a_chunked_upload_from_a_tls_client_reaches_elevate_whole(
    pki: Path,  # noqa: F811
    proxy_to: ProxyTo,
    simulator: Simulator,
) -> None:
    tls = TlsProvider(TlsServerConfig(cert_file=pki / "server.pem", key_file=pki / "server.key"))
    run = proxy_to(simulator.url, tls=tls)
    # Sizes around TLS records (16 KiB) and the proxy's pieces (64 KiB, 512 KiB), so that
    # chunk lines fall everywhere inside what is read at once.
    feed = bytes(range(256)) * (12 * MIB // 256 + 7)
    sizes = (1, 16 * 1024 - 3, 65 * 1024, 700 * 1024, 5)
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    with (
        socket.create_connection(("127.0.0.1", run.port), timeout=60) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
    ):
        sock.sendall(
            f"POST {PATH} HTTP/1.1\r\nHost: proxy\r\nApi-Key: {KEY}\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode()
        )
        for piece in chunked_body(feed, sizes):
            sock.sendall(piece)
        got = b""
        while data := sock.recv(65536):
            got += data
    assert got.startswith(b"HTTP/1.1 202 "), got[:200]
    [upload] = simulator.uploads
    assert upload.complete
    assert upload.bytes == len(feed)
    assert upload.sha256 == hashlib.sha256(feed).hexdigest()


def read_answer(sock: socket.socket, pending: bytearray) -> tuple[int, bytes]:
    """One answer with a Content-Length, or chunked, from ``sock``; the rest stays in
    ``pending``."""
    while b"\r\n\r\n" not in pending:
        data = sock.recv(65536)
        assert data, "the proxy closed the connection before an answer"
        pending += data
    head, _, rest = bytes(pending).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    pending[:] = rest
    if fields.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            while b"\r\n" not in pending:
                pending += sock.recv(65536)
            line, _, tail = bytes(pending).partition(b"\r\n")
            size = int(line, 16)
            while len(tail) < size + 2:
                tail += sock.recv(65536)
            body += tail[:size]
            pending[:] = tail[size + 2 :]
            if size == 0:
                return int(lines[0].split()[1]), body
    length = int(fields["content-length"])
    while len(pending) < length:
        pending += sock.recv(65536)
    body = bytes(pending[:length])
    del pending[:length]
    return int(lines[0].split()[1]), body


def test_uploads_and_a_request_pipelined_behind_one_share_a_kept_alive_connection(
    proxy_to: ProxyTo, simulator: Simulator
) -> None:
    run = proxy_to(simulator.url)
    feeds = [b"<feed>" + bytes([65 + n]) * (3 * MIB + n) + b"</feed>" for n in range(2)]
    head = f"POST {PATH} HTTP/1.1\r\nHost: proxy\r\nApi-Key: {KEY}\r\n"
    status = f"GET /api/v2/import/status/1 HTTP/1.1\r\nHost: proxy\r\nApi-Key: {KEY}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", run.port), timeout=60) as sock:
        # A body framed by its length, then a chunked one with a request right behind it.
        sock.sendall(f"{head}Content-Length: {len(feeds[0])}\r\n\r\n".encode() + feeds[0])
        sock.sendall(
            f"{head}Transfer-Encoding: chunked\r\n\r\n".encode()
            + b"".join(chunked_body(feeds[1], (100_000, 7)))
            + status.encode()
        )
        pending = bytearray()
        answers = [read_answer(sock, pending)[0] for _ in range(3)]
        sock.sendall(status.encode())  # and the connection still carries one more
        answers.append(read_answer(sock, pending)[0])
    assert answers[:2] == [202, 202]
    assert answers[2] == answers[3] != 400
    wait_until(lambda: len(simulator.uploads) == 2, what="both uploads at the simulator")
    assert [u.sha256 for u in simulator.uploads] == [hashlib.sha256(f).hexdigest() for f in feeds]
