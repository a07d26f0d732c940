"""Bodies stream through the import proxy: hundreds of MB in bounded memory, chunked or
not, and a client that leaves takes its request at Elevate with it."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from elevate_import_exporter.simulator import Simulator
from tests.support import wait_until
from tests.test_proxy import FEED, KEY, ProxyTo, started_proxies
from tests.upstream import Close, Hang, Send, Upstream, head_of

MIB = 1024 * 1024
PATH = "/api/v2/import/products"

# A proxy alone in a process of its own, so that its memory can be read from /proc; each
# registration it is handed is printed as a JSON line.
PROXY_PROCESS = """
import json, sys
from elevate_import_exporter.proxy.server import ImportProxy

def register(registrations, source):
    for r in registrations:
        print(json.dumps({"id": r.id, "type": r.type, "source": source}), flush=True)
    return [True] * len(registrations)

proxy = ImportProxy(
    [("127.0.0.1", 0)], sys.argv[1], register=register, timeout=60, label_header="X-Feed-Name"
)
print(json.dumps({"port": proxy.ports[0]}), flush=True)
proxy.serve_forever()
"""


@pytest.fixture
def proxy_to() -> Iterator[ProxyTo]:
    yield from started_proxies()


class ProxyProcess:
    """PROXY_PROCESS running against ``upstream``; its printed lines are collected."""

    def __init__(self, upstream: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", PROXY_PROCESS, upstream],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        assert self.process.stdout is not None
        self.port = json.loads(self.process.stdout.readline())["port"]
        self.lines: list[dict[str, str]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(json.loads(line))

    def kib(self, field: str) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def upload(port: int, blocks: int, headers: dict[str, str]) -> tuple[int, bytes, str]:
    """POST ``blocks`` MiB made up on the fly (each block different), with Content-Length;
    the answer's status and body, and the SHA-256 of what was sent."""
    base = bytearray(random.Random(7).randbytes(MIB))
    digest = hashlib.sha256()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.putrequest("POST", PATH)
        for name, value in {**headers, "Content-Length": str(blocks * MIB)}.items():
            conn.putheader(name, value)
        conn.endheaders()
        for index in range(blocks):
            base[:8] = index.to_bytes(8, "big")  # no two blocks alike: none can be swapped
            digest.update(base)
            conn.send(base)
        response = conn.getresponse()
        return response.status, response.read(), digest.hexdigest()
    finally:
        conn.close()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
def test_a_500_mb_feed_streams_through_in_bounded_memory_and_arrives_byte_for_byte() -> None:
    with Simulator(api_key=KEY) as sim:
        proxy = ProxyProcess(sim.url)
        try:
            warm = upload(proxy.port, 1, {"Api-Key": KEY})  # threads and buffers in place
            assert warm[0] == 202
            before = proxy.kib("VmHWM")
            status, body, sent = upload(proxy.port, 500, {"Api-Key": KEY, "X-Feed-Name": "big"})
            peak = proxy.kib("VmHWM")
            assert status == 202
            final = sim.uploads[-1]
            assert (final.bytes, final.sha256, final.complete) == (500 * MIB, sent, True)
            assert json.loads(body)["id"] == final.import_id
            wait_until(lambda: len(proxy.lines) == 2, what="both imports registered")
            assert proxy.lines[-1] == {"id": final.import_id, "type": "PRODUCTS", "source": "proxy"}
        finally:
            proxy.stop()
    growth_mb = (peak - before) / 1024
    assert growth_mb < 50, f"peak RSS grew by {growth_mb:.1f} MB for a 500 MB upload"


def test_a_chunked_upload_arrives_whole_with_chunks_of_any_size(
    simulator: Simulator, proxy_to: ProxyTo
) -> None:
    run = proxy_to(simulator.url)
    rng = random.Random(3)
    pieces = [rng.randbytes(n) for n in (1, 7, 64 * 1024 + 1, 3 * MIB, 1, 12_345)]
    body = b"".join(f"{len(p):x};ext=1\r\n".encode() + p + b"\r\n" for p in pieces)
    head = (
        f"POST {PATH}?name=chunked HTTP/1.1\r\nHost: x\r\nApi-Key: {KEY}\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", run.port), timeout=60) as sock:
        sock.sendall(head.encode() + body + b"0\r\nX-Checksum: 1\r\n\r\n")
        answer = b""
        while data := sock.recv(65536):
            answer += data
    assert answer.startswith(b"HTTP/1.1 202 ")
    [seen] = simulator.uploads
    whole = b"".join(pieces)
    assert (seen.bytes, seen.sha256) == (len(whole), hashlib.sha256(whole).hexdigest())
    assert seen.headers["transfer-encoding"] == "chunked"
    run.wait_answered(1)
    assert [r.id for r in run.registered] == [seen.import_id]


def test_a_client_that_leaves_mid_upload_ends_the_request_upstream_and_nothing_is_tracked(
    simulator: Simulator, proxy_to: ProxyTo
) -> None:
    run = proxy_to(simulator.url)
    with socket.create_connection(("127.0.0.1", run.port), timeout=30) as sock:
        head = (
            f"POST {PATH} HTTP/1.1\r\nHost: p\r\nApi-Key: {KEY}\r\n"
            f"Content-Length: {50 * MIB}\r\n\r\n"
        )
        sock.sendall(head.encode())
        for _ in range(5):
            sock.sendall(os.urandom(MIB))
        wait_until(lambda: run.proxy.stats.snapshot().bytes["upload"] > 0, what="upload begun")
    wait_until(lambda: simulator.uploads, what="the simulator to see the upload end")
    [seen] = simulator.uploads
    assert not seen.complete
    assert seen.bytes < 50 * MIB
    assert seen.import_id is None
    run.wait_answered(1)
    assert run.registered == []
    scrape = run.metrics()
    assert scrape.value("elevate_import_proxy_requests_total", method="POST", code="499") == 1
    assert scrape.value("elevate_import_proxy_imports_total", type="PRODUCTS", outcome="cut") == 1


def test_a_client_that_leaves_while_elevate_works_ends_the_request_upstream(
    proxy_to: ProxyTo,
) -> None:
    with Upstream() as upstream:
        upstream.on("/api/v2/import/status/1", [Hang()])
        run = proxy_to(upstream.url, timeout=60)
        with socket.create_connection(("127.0.0.1", run.port), timeout=30) as sock:
            sock.sendall(b"GET /api/v2/import/status/1 HTTP/1.1\r\nHost: p\r\nApi-Key: k\r\n\r\n")
            wait_until(lambda: upstream.seen, what="the request at the upstream")
        wait_until(lambda: upstream.peer_left == 1, what="the upstream to see the request end")
        run.wait_answered(1)
        assert run.metrics().value("elevate_import_proxy_requests_total", method="GET", code="499")


def test_an_answer_without_a_length_streams_back_chunked_and_whole(proxy_to: ProxyTo) -> None:
    big = random.Random(5).randbytes(20 * MIB)
    with Upstream() as upstream:
        head = head_of(200, {"Content-Type": "application/xml"}, None)
        upstream.on("/api/admin/v4/export/data", [Send(head + big), Close()])
        run = proxy_to(upstream.url)
        got = run.send("GET", "/api/admin/v4/export/data", None, {"Api-Key": KEY})
    assert got.status == 200
    assert got.header("Transfer-Encoding") == "chunked"
    assert hashlib.sha256(got.body).digest() == hashlib.sha256(big).digest()
    run.wait_answered(1)
    assert run.metrics().value("elevate_import_proxy_bytes_total", direction="download") == len(big)


def test_expect_100_continue_is_answered_by_the_proxy_before_the_body(
    simulator: Simulator, proxy_to: ProxyTo
) -> None:
    run = proxy_to(simulator.url)
    with socket.create_connection(("127.0.0.1", run.port), timeout=30) as sock:
        head = (
            f"PUT {PATH} HTTP/1.1\r\nHost: proxy\r\nApi-Key: {KEY}\r\nExpect: 100-continue\r\n"
            f"Content-Length: {len(FEED)}\r\nConnection: close\r\n\r\n"
        )
        sock.sendall(head.encode())
        interim = sock.recv(100)  # the phrase is h11's to write
        assert interim.startswith(b"HTTP/1.1 100 "), interim
        assert interim.endswith(b"\r\n\r\n"), interim
        sock.sendall(FEED)
        answer = b""
        while data := sock.recv(65536):
            answer += data
    assert answer.startswith(b"HTTP/1.1 202 ")
    [seen] = simulator.uploads
    assert "expect" not in seen.headers
    assert seen.sha256 == hashlib.sha256(FEED).hexdigest()
