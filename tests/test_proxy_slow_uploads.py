"""Slow uploads must not lock out the import proxy (issue 20, point 5), through a real
exporter process with the proxy's real limits: 64 connections at once, slow bodies
evicted when a new request needs the room, and a body below the minimum rate cut."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from elevate_import_exporter.simulator import Simulator
from tests.conftest import ExporterProcess, ExporterProcessFor
from tests.support import Scrape, free_port, scrape, wait_until
from tests.test_proxy import FEED, KEY, send

PATH = "/api/v2/import/products"
SLOTS = 64  # the proxy's connections at once (proxy.MAX_CONNECTIONS), written out here


class Tricklers:
    """``count`` clients that each send a request head, then ``piece`` bytes of the body
    (or of the head, with ``in_head``) every ``interval`` seconds, from one thread."""

    def __init__(
        self, port: int, count: int, piece: int, interval: float, *, in_head: bool = False
    ) -> None:
        self.socks: list[socket.socket] = []
        self._stop = threading.Event()
        head = f"POST {PATH} HTTP/1.1\r\nHost: proxy\r\nApi-Key: {KEY}\r\n"
        head += "X-Slow: " if in_head else "Content-Length: 100000000\r\n\r\n"
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(head.encode())
            self.socks.append(sock)
        self._piece = b"a" * piece
        self._interval = interval
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            for sock in self.socks:
                with contextlib.suppress(OSError):
                    sock.sendall(self._piece)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for sock in self.socks:
            sock.close()


@pytest.fixture
def proxy_process(exporter_process: ExporterProcessFor) -> Iterator[tuple[ExporterProcess, int]]:
    with Simulator(api_key=KEY) as sim:
        port = free_port()
        proc = exporter_process(
            "--elevate.base-url",
            sim.url,
            "--proxy.listen-address",
            f"127.0.0.1:{port}",
            env={"ELEVATE_API_KEY": KEY},
        )
        yield proc, port


def in_flight(proc: ExporterProcess) -> float:
    return scrape(proc.url).value("elevate_import_proxy_requests_in_flight") or 0.0


def timed_upload(port: int) -> tuple[int, float]:
    started = time.monotonic()
    got = send(port, "POST", PATH, FEED, {"Api-Key": KEY})
    return got.status, time.monotonic() - started


def counted(proc: ExporterProcess, *codes: str) -> Scrape | None:
    """A scrape once the proxy has counted a POST with each of ``codes``, else None."""
    result = scrape(proc.url)
    found = [
        result.value("elevate_import_proxy_requests_total", method="POST", code=c) for c in codes
    ]
    return result if all(found) else None


@pytest.mark.parametrize(
    ("piece", "interval"),
    [(1, 5.0), (1000, 1.0)],
    # The byte every 5 s; and 1 kB/s, above the minimum rate, that only eviction
    # makes room against.
    ids=["a-byte-every-5s", "1kB-a-second"],
)
def test_a_real_upload_gets_through_when_slow_uploads_hold_every_place(
    proxy_process: tuple[ExporterProcess, int], piece: int, interval: float
) -> None:
    proc, port = proxy_process
    slow = Tricklers(port, SLOTS, piece, interval)
    try:
        wait_until(lambda: in_flight(proc) >= SLOTS, timeout=30, what="every place taken")
        status, seconds = timed_upload(port)
        assert status == 202
        # Without eviction it waits until a trickler leaves: minutes (--proxy.timeout).
        assert seconds < 30
        # A request counts once the proxy is done with it, after the client's answer.
        result = wait_until(
            lambda: counted(proc, "408", "202"), interval=0.2, what="the 408 and the 202 counted"
        )
        assert result.value("elevate_import_proxy_requests_total", method="POST", code="408")
    finally:
        slow.close()


def test_a_real_upload_gets_through_when_slow_heads_hold_every_place(
    proxy_process: tuple[ExporterProcess, int],
) -> None:
    _proc, port = proxy_process
    slow = Tricklers(port, SLOTS, 200, 1.0, in_head=True)
    try:
        status, seconds = timed_upload(port)
        assert status == 202
        assert seconds < 30
    finally:
        slow.close()


def test_a_body_slower_than_the_minimum_rate_is_answered_408_and_closed(
    proxy_process: tuple[ExporterProcess, int],
) -> None:
    proc, port = proxy_process
    # 100 bytes a second, under the minimum rate (500 bytes a second once 30 s have passed).
    slow = Tricklers(port, 1, 100, 1.0)
    started = time.monotonic()
    try:
        [sock] = slow.socks
        sock.settimeout(90)
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
    finally:
        slow.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"Connection: close" in answer
    assert time.monotonic() - started < 90
    result = wait_until(lambda: counted(proc, "408"), interval=0.2, what="the 408 counted")
    assert result.value("elevate_import_proxy_requests_total", method="POST", code="408") == 1
