"""The HTTP side under a mix of load, over TLS with basic auth: functional facts only.

Simultaneous scrapes, connections that finish TLS and then send half a request line, and
connections that never finish their TLS handshake, while ``/-/healthy`` is asked every
50 ms. The exporter runs in this process (its threads are counted here); the simulated
API runs in a process of its own, so that its threads are not counted with them.
(bench/web_load.py measures the same mix, larger, with figures.)
"""

from __future__ import annotations

import base64
import http.client
import selectors
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import pytest
import trustme

from elevate_import_exporter.site.web import HEADER_TIMEOUT, MAX_THREADS
from tests.conftest import REPO, SIM_KEY, ExporterFor, exporter_env
from tests.support import free_port, stop_process, wait_until

IMPORTS = 100
CONCURRENCY = 10
# A poll round takes IMPORTS / CONCURRENCY x LATENCY = 3 s: long enough for every scrape
# to arrive while the first ones still wait for it.
LATENCY = 0.3
SCRAPES = 20
HALF_OPEN = 100
STALLED_HANDSHAKES = 30
# Threads of the exporter besides its handler threads and poll workers: the serving
# thread, the first poll round's and the reaper of request deadlines.
FIXED_THREADS = 3
USER, PASSWORD = "prometheus", "load-test-password"
PARTIAL_CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
# Generous: these are no timing assertions, only "answered at all".
ANSWER_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def simulator_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``simulate`` in a child process: IMPORTS imports in progress, answered after LATENCY."""
    port = free_port()
    log = tmp_path_factory.mktemp("simulator") / "simulator.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "elevate_import_exporter",
                "simulate",
                "--web.listen-address",
                f"127.0.0.1:{port}",
                "--generate-imports",
                str(IMPORTS),
                "--latency",
                str(LATENCY),
                "--log.level",
                "warning",
            ],
            env=exporter_env(ELEVATE_API_KEY=SIM_KEY),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(port), timeout=30, what="the simulator process")
        yield url
    finally:
        stop_process(process)


def _answers(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/-/healthy")
            return conn.getresponse().status == 200
        finally:
            conn.close()
    except OSError:
        return False


@dataclass(frozen=True)
class Tls:
    folder: Path
    context: ssl.SSLContext
    authorization: str


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A web config with TLS (a trustme CA) and one basic-auth user, and a client for it."""
    folder = tmp_path_factory.mktemp("web")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    server = ca.issue_cert("127.0.0.1")
    server.cert_chain_pems[0].write_to_path(str(folder / "server.pem"))
    server.private_key_pem.write_to_path(str(folder / "server.key"))
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    (folder / "web-config.yml").write_text(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
        f"basic_auth_users:\n  {USER}: '{hashed}'\n",
        encoding="utf-8",
    )
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    context = ssl.create_default_context(cafile=str(folder / "ca.pem"))
    return Tls(folder, context, f"Basic {token}")


def get(port: int, tls: Tls, path: str) -> int:
    """Status of a GET with credentials, over TLS on a new connection."""
    conn = http.client.HTTPSConnection(
        "127.0.0.1", port, timeout=ANSWER_TIMEOUT, context=tls.context
    )
    try:
        conn.request("GET", path, headers={"Authorization": tls.authorization})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@dataclass
class Load:
    """The test's own threads (not the exporter's), and what they saw."""

    threads: list[threading.Thread] = field(default_factory=list)
    scrapes: list[int | str] = field(default_factory=list)
    health: list[int | str] = field(default_factory=list)
    most_exporter_threads: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(thread)
        thread.start()


def scrape_once(load: Load, port: int, tls: Tls, barrier: threading.Barrier) -> None:
    barrier.wait(timeout=30)
    try:
        load.scrapes.append(get(port, tls, "/metrics"))
    except OSError as exc:
        load.scrapes.append(f"{type(exc).__name__}: {exc}")


def ask_health(load: Load, port: int, tls: Tls) -> None:
    while not load.stop.wait(0.05):
        try:
            load.health.append(get(port, tls, "/-/healthy"))
        except OSError as exc:
            load.health.append(f"{type(exc).__name__}: {exc}")


def count_threads(load: Load, before: set[threading.Thread]) -> None:
    """The most threads alive at once that are neither the test's nor older than the exporter."""
    while not load.stop.wait(0.02):
        mine = set(load.threads)
        theirs = [t for t in threading.enumerate() if t not in before and t not in mine]
        load.most_exporter_threads = max(load.most_exporter_threads, len(theirs))


def open_stalled(stack: ExitStack, port: int, tls: Tls) -> list[socket.socket]:
    stalled: list[socket.socket] = []
    for _ in range(HALF_OPEN):
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock: socket.socket = tls.context.wrap_socket(raw, server_hostname="127.0.0.1")
        stack.callback(sock.close)
        sock.sendall(b"GET /metr")
        stalled.append(sock)
    for n in range(STALLED_HANDSHAKES):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        stack.callback(sock.close)
        if n % 2:
            sock.sendall(PARTIAL_CLIENT_HELLO)
        stalled.append(sock)
    return stalled


def still_open(sockets: list[socket.socket], until: float) -> list[socket.socket]:
    """The sockets the server has not closed by ``until`` (or as soon as all are closed)."""
    left = set(sockets)
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        while left and time.monotonic() < until:
            for key, _events in selector.select(max(0.0, until - time.monotonic())):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                if _closed_by_peer(ready):
                    selector.unregister(ready)
                    left.discard(ready)
    return list(left)


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096) == b""
    except (ssl.SSLWantReadError, BlockingIOError):
        return False
    except OSError:  # reset, or TLS ended without close_notify
        return True


def test_under_scrapes_and_stalled_tls_connections_health_answers_and_threads_stay_bounded(
    simulator_url: str, tls: Tls, exporter_for: ExporterFor
) -> None:
    before = set(threading.enumerate())
    ids = [str(7_000_000_000_000_000_000 + i) for i in range(IMPORTS)]
    exporter = exporter_for(
        simulator_url,
        ids,
        concurrency=str(CONCURRENCY),
        web_config_file=str(tls.folder / "web-config.yml"),
    )
    port = exporter.port
    load = Load()
    with ExitStack() as stack:
        stalled = open_stalled(stack, port, tls)
        opened = time.monotonic()
        load.start(count_threads, load, before)
        load.start(ask_health, load, port, tls)
        barrier = threading.Barrier(SCRAPES)
        for _ in range(SCRAPES):
            load.start(scrape_once, load, port, tls, barrier)
        for thread in load.threads[2:]:
            thread.join(timeout=2 * ANSWER_TIMEOUT)
        left = still_open(stalled, opened + HEADER_TIMEOUT + 30)
        load.stop.set()
        for thread in load.threads[:2]:
            thread.join(timeout=2 * ANSWER_TIMEOUT)

    # Every scrape answered: 200 from the shared round, or 503 beyond the scrape bound.
    assert len(load.scrapes) == SCRAPES
    assert set(load.scrapes) <= {200, 503}, load.scrapes
    assert load.scrapes.count(200) >= 1
    assert load.scrapes.count(200) <= MAX_THREADS // 2
    # Health answered 200 throughout, with credentials, over TLS.
    assert load.health, "no health probe was answered"
    assert set(load.health) == {200}, [h for h in load.health if h != 200][:5]
    # The server itself closed every stalled connection (header timeout), none was left.
    assert left == [], f"{len(left)} of {len(stalled)} stalled connections still open"
    # No thread per connection: handler threads, poll workers and a few fixed ones only.
    assert 0 < load.most_exporter_threads <= MAX_THREADS + CONCURRENCY + FIXED_THREADS
