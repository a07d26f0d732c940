"""Clients that misbehave on purpose: never finish their headers, trickle them, stay idle,
come by the hundreds, leave before their answer. None of them may stop the exporter."""

from __future__ import annotations

import http.client
import json
import os
import re
import resource
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from prometheus_client import Gauge

from elevate_import_exporter.polling.poller import Snapshot
from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from elevate_import_exporter.site import web
from tests.conftest import REPO, SIM_KEY, ExporterFor, ExporterProcessFor, exporter_env
from tests.support import BareSite, free_port, stop_process, wait_until


class TinySite(BareSite):
    """The smallest thing an HttpServer serves; ``gate`` holds ``/`` and ``/metrics``."""

    def __init__(self) -> None:
        super().__init__()
        Gauge("tiny_up", "Always 1.", registry=self.registry).set(1)
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()
        self.inside = 0
        self.most_inside = 0

    def poll(self, budget: float) -> None:
        self._held()

    def snapshot(self) -> Snapshot:
        self._held()
        return Snapshot({}, None)

    def _held(self) -> None:
        with self._lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            self.gate.wait(60)
        finally:
            with self._lock:
                self.inside -= 1


Serve = Callable[..., tuple[web.HttpServer, str]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """``serve(site=None, **HttpServer options)``: a served HttpServer and its URL."""
    started: list[tuple[web.HttpServer, threading.Thread]] = []

    def start(site: TinySite | None = None, **options: float) -> tuple[web.HttpServer, str]:
        server = web.HttpServer(site or TinySite(), "127.0.0.1", 0, **options)  # type: ignore[arg-type]
        thread = threading.Thread(target=server.serve_forever, name="test-serve", daemon=True)
        thread.start()
        started.append((server, thread))
        return server, f"http://127.0.0.1:{server.port}"

    yield start
    for server, thread in started:
        server.shutdown()
        thread.join()
        server.close()


def get(url: str, path: str, timeout: float = 20.0) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def half_requests(port: int, count: int, data: bytes = b"GET /metr") -> list[socket.socket]:
    """``count`` connections that each send ``data`` and nothing more."""
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(data)
        socks.append(sock)
    return socks


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Whether the other end closes ``sock`` within ``timeout`` seconds."""
    readable, _, _ = select.select([sock], [], [], timeout)
    if not readable:
        return False
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


def handler_threads(port: int) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(f"http-{port}-")]


# -- connections that hold on ------------------------------------------------------------


def test_300_connections_that_never_finish_their_headers_stop_neither_health_nor_metrics(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    simulator.add_import(ScriptedImport("1001", (Step("IN_PROGRESS"),)))
    running = exporter_for(simulator.url, ["1001"])
    threads_before = threading.active_count()
    with ExitStack() as stack:
        for sock in half_requests(running.port, 300):
            stack.callback(sock.close)
        assert get(running.url, "/-/healthy", timeout=5)[0] == 200
        status, body = get(running.url, "/metrics", timeout=15)
        assert status == 200
        assert b'elevate_import_poll_success{id="1001"} 1.0' in body
        # A thread per connection would be 300 more.
        assert threading.active_count() < threads_before + 20
        assert len(handler_threads(running.port)) <= web.MAX_THREADS


def test_no_more_requests_are_handled_at_once_than_the_thread_bound(serve: Serve) -> None:
    site = TinySite()
    site.gate.clear()
    server, url = serve(site, max_threads=4)
    results: list[int] = []
    clients = [
        threading.Thread(target=lambda: results.append(get(url, "/", timeout=60)[0]))
        for _ in range(12)
    ]
    with ExitStack() as stack:
        for sock in half_requests(server.port, 100):
            stack.callback(sock.close)
        for client in clients:
            client.start()
        wait_until(lambda: site.inside == 4, what="four requests to be handled at once")
        # Eight requests wait for a thread; none may have started one of its own.
        time.sleep(0.5)
        assert site.most_inside == 4
        assert len(handler_threads(server.port)) == 4
        site.gate.set()
        for client in clients:
            client.join(60)
    assert results == [200] * 12
    assert site.most_inside == 4


def test_scrapes_waiting_for_a_round_leave_threads_for_the_health_check(serve: Serve) -> None:
    site = TinySite()
    site.gate.clear()
    _server, url = serve(site, max_threads=4)
    results: list[int] = []
    clients = [
        threading.Thread(target=lambda: results.append(get(url, "/metrics", timeout=60)[0]))
        for _ in range(6)
    ]
    for client in clients:
        client.start()
    # Half the threads may wait for a round; the other scrapes are told to come back.
    wait_until(lambda: results.count(503) == 4, what="the scrapes beyond two to get 503")
    assert site.inside == 2
    assert get(url, "/-/healthy", timeout=5)[0] == 200
    site.gate.set()
    for client in clients:
        client.join(60)
    assert sorted(results) == [200, 200, 503, 503, 503, 503]


def test_a_connection_that_trickles_its_headers_is_closed_at_the_header_timeout(
    serve: Serve,
) -> None:
    server, _url = serve(header_timeout=1.0)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    started = time.monotonic()
    closed_after = None
    # One byte every 0.2 s: each byte is news, so a timeout per read would never fire.
    for byte in b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 200:
        try:
            sock.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            closed_after = time.monotonic() - started
            break
        if closed_by_peer(sock, 0.2):
            closed_after = time.monotonic() - started
            break
    sock.close()
    assert closed_after is not None, "still open after 40 s of trickling"
    assert closed_after >= 0.9


def test_a_connection_that_sends_nothing_is_closed_at_the_header_timeout(serve: Serve) -> None:
    server, _url = serve(header_timeout=1.0)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        started = time.monotonic()
        assert closed_by_peer(sock, 20)
        assert time.monotonic() - started >= 0.9


class Answers:
    """Answers read one by one from a kept-alive connection (by their Content-Length)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._data = b""

    def next(self) -> tuple[bytes, bytes]:
        """The next answer's head and body; what follows it stays for the next call."""
        while b"\r\n\r\n" not in self._data:
            self._more()
        head, _, self._data = self._data.partition(b"\r\n\r\n")
        match = re.search(rb"(?im)^content-length: *(\d+)", head)
        assert match is not None, head
        while len(self._data) < int(match[1]):
            self._more()
        body, self._data = self._data[: int(match[1])], self._data[int(match[1]) :]
        return head, body

    def _more(self) -> None:
        chunk = self._sock.recv(65536)
        assert chunk, f"closed after {self._data!r}"
        self._data += chunk


def test_a_kept_alive_connection_serves_the_next_request_and_is_closed_when_idle(
    serve: Serve,
) -> None:
    server, _url = serve(idle_timeout=1.0)
    request = b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        answers = Answers(sock)
        sock.sendall(request)
        assert answers.next()[0].startswith(b"HTTP/1.1 200")
        sock.sendall(request)
        head, body = answers.next()
        assert head.startswith(b"HTTP/1.1 200")
        assert body == b"Healthy.\n"
        idle_since = time.monotonic()
        assert closed_by_peer(sock, 20)
        assert time.monotonic() - idle_since >= 0.5


def test_pipelined_requests_are_answered_in_order_on_one_connection(serve: Serve) -> None:
    server, _url = serve()
    requests = b"".join(
        f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        for path in ("/-/healthy", "/nope", "/-/ready")
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(requests)
        reader = Answers(sock)
        answers = [reader.next() for _ in range(3)]
    assert [head.split(b"\r\n")[0] for head, _body in answers] == [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 404 Not Found",
        b"HTTP/1.1 200 OK",
    ]
    assert [body for _head, body in answers] == [b"Healthy.\n", b"Not found.\n", b"Ready.\n"]


def test_beyond_the_connection_limit_the_longest_waiting_connection_makes_room(
    serve: Serve,
) -> None:
    server, url = serve(max_connections=20, header_timeout=60)
    socks = half_requests(server.port, 100)
    try:
        # Room is made for the newcomers in turn, each place once its holder has waited
        # connections.EVICT_AFTER: seconds in all, waited out in the backlog.
        assert get(url, "/-/healthy", timeout=30)[0] == 200
        still_open = [s for s in socks if not closed_by_peer(s, 0)]
        assert len(still_open) < 20
        # The oldest went first: the last ones connected are among those still open.
        assert socks[-1] in still_open
    finally:
        for sock in socks:
            sock.close()


# -- the open-file limit ------------------------------------------------------------------


def thread_cpu_seconds(native_id: int) -> float:
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


HOLDER = """
import resource, socket, sys
_soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # not the limit it inherits
socks = []
for _ in range(int(sys.argv[2])):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    s.sendall(b"GET /metr")
    socks.append(s)
print("connected", flush=True)
sys.stdin.read()
"""


def hold_connections(port: int, count: int) -> subprocess.Popen[bytes]:
    """``count`` half requests from another process, which has its own open-file limit."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(port), str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline() == b"connected\n"
    return holder


def test_out_of_file_descriptors_the_accept_loop_backs_off_instead_of_spinning(
    serve: Serve,
) -> None:
    if not Path("/proc/self/task").is_dir():
        pytest.skip("needs /proc to measure a thread's CPU time")
    # A connection limit above the open-file limit: accept() itself must fail.
    server, url = serve(max_connections=100_000, header_timeout=60)
    serving = next(t for t in threading.enumerate() if t.name == "test-serve")
    assert serving.native_id is not None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(list(Path("/proc/self/fd").iterdir()))
    holder = None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 30, hard))
        try:
            holder = hold_connections(server.port, 100)
            # The listener now has connections waiting that accept() cannot take.
            cpu_before = thread_cpu_seconds(serving.native_id)
            time.sleep(2)
            spent = thread_cpu_seconds(serving.native_id) - cpu_before
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert spent < 1.0, f"the accept loop used {spent:.2f} s of CPU in 2 s"
        assert get(url, "/-/healthy", timeout=10)[0] == 200
    finally:
        if holder is not None:
            holder.communicate(b"")


def test_under_a_low_open_file_limit_600_idle_connections_neither_stop_nor_spin_the_exporter(
    simulator: Simulator, tmp_path: Path
) -> None:
    simulator.add_import(ScriptedImport("1001", (Step("IN_PROGRESS"),)))
    port = free_port()
    stderr = (tmp_path / "stderr").open("wb")
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "elevate_import_exporter", "run"),
            *("--elevate.base-url", simulator.url, "--elevate.import-id", "1001"),
            *("--web.listen-address", f"127.0.0.1:{port}"),
        ],
        env=exporter_env(ELEVATE_API_KEY=SIM_KEY),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)),
    )
    url = f"http://127.0.0.1:{port}"
    socks: list[socket.socket] = []
    try:
        wait_until(lambda: _answers(url, "/-/ready"), timeout=30, what="the exporter to be ready")
        socks = half_requests(port, 600)
        cpu_before = process_cpu_seconds(process.pid)
        time.sleep(2)
        spent = process_cpu_seconds(process.pid) - cpu_before
        assert spent < 1.0, f"the exporter used {spent:.2f} s of CPU in 2 s"
        assert get(url, "/-/healthy", timeout=10)[0] == 200
        status, body = get(url, "/metrics", timeout=15)
        assert status == 200
        assert b'elevate_import_poll_success{id="1001"} 1.0' in body
    finally:
        for sock in socks:
            sock.close()
        stop_process(process)
        stderr.close()
    assert "Traceback" not in (tmp_path / "stderr").read_text()


def _answers(url: str, path: str) -> bool:
    try:
        return get(url, path, timeout=5)[0] == 200
    except OSError:
        return False


# -- nothing reaches stderr outside the log format ----------------------------------------

LOGFMT_PAIR = r'[a-z_]+=(?:"(?:[^"\\]|\\.)*"|[^\s"=\\]+)'
LOGFMT_LINE = re.compile(rf"{LOGFMT_PAIR}(?: {LOGFMT_PAIR})*")


def logfmt(line: str) -> dict[str, str]:
    assert LOGFMT_LINE.fullmatch(line), f"not a logfmt line: {line!r}"
    fields = {}
    for pair in re.findall(LOGFMT_PAIR, line):
        key, _, value = pair.partition("=")
        fields[key] = json.loads(value) if value.startswith('"') else value
    return fields


def rst(sock: socket.socket) -> None:
    """Close with a reset instead of a FIN, as a client that crashes does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_clients_that_leave_before_their_answer_leave_debug_lines_not_tracebacks(
    exporter_process: ExporterProcessFor,
) -> None:
    imports = [ScriptedImport(str(1000 + n), (Step("IN_PROGRESS"),)) for n in range(20)]
    # Each round takes a while, so every client is gone before its answer is written.
    with Simulator(imports, api_key=SIM_KEY, latency=0.3) as sim:
        proc = exporter_process(
            "--elevate.base-url",
            sim.url,
            *(arg for imp in imports for arg in ("--elevate.import-id", imp.id)),
            "--elevate.min-poll-interval",
            "0s",
            "--log.level",
            "debug",
            env={"ELEVATE_API_KEY": SIM_KEY},
        )
        port = int(proc.url.rsplit(":", 1)[1])
        asked = sim.requests_total
        socks = half_requests(port, 12, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: sim.requests_total > asked, what="the scrapes to start a round")
        for sock in socks:
            rst(sock)
        wait_until(
            lambda: proc.stderr().count("left before its answer was written") >= 6,
            timeout=60,
            what="the exporter to notice the clients that left",
        )
        assert proc.get("/-/healthy")[0] == 200
        proc.stop()
    lines = proc.stderr().splitlines()
    assert lines
    parsed = [logfmt(line) for line in lines]
    assert not [f for f in parsed if f["level"] in ("error", "critical")]
    assert not [line for line in lines if line.startswith("Traceback")]


CRASHES = """
import sys, threading
from elevate_import_exporter.core import logs

logs.configure("info", sys.argv[1], ["top-secret-key"])

def crash():
    raise RuntimeError("thread failed with top-secret-key")

thread = threading.Thread(target=crash, name="worker-1")
thread.start()
thread.join()
raise ValueError("main failed with top-secret-key")
"""


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_uncaught_exceptions_are_logged_in_the_configured_format_with_the_key_redacted(
    fmt: str,
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CRASHES, fmt],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    records = [logfmt(line) if fmt == "logfmt" else json.loads(line) for line in lines]
    assert [(r["level"], r["msg"]) for r in records] == [
        ("error", "uncaught exception in thread worker-1"),
        ("critical", "uncaught exception, exiting"),
    ]
    assert "RuntimeError: thread failed with <redacted>" in records[0]["error"]
    assert "ValueError: main failed with <redacted>" in records[1]["error"]
    assert "top-secret-key" not in result.stderr
