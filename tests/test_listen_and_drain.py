"""Several listen addresses, and a stop that drains the requests in flight.

``--web.listen-address`` may be given more than once, as in the exporter-toolkit: the
exporter serves on every address, or refuses to start naming the one it cannot bind.
SIGTERM stops taking requests at once, closes connections that wait for one, lets the
answers in flight be written for at most ``web.DRAIN_SECONDS``, and exits 0.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from elevate_import_exporter.app import Application
from elevate_import_exporter.settings.config import load_settings
from elevate_import_exporter.simulator import Simulator
from elevate_import_exporter.site import web
from tests.conftest import SIM_KEY, ExporterFor, ExporterProcess, ExporterProcessFor
from tests.support import Scrape, free_port, wait_until

# Room for a process to start, end and be reaped on a slow machine; never a speed test.
MARGIN = 5.0


class GatedUpstream:
    """Elevate's Web API v2 whose answers wait while ``gate`` is closed; ``asked`` is set
    when a request has arrived."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.asked = threading.Event()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                upstream.asked.set()
                upstream.gate.wait(60)
                import_id = self.path.rsplit("/", 1)[-1]
                body = json.dumps({"id": import_id, "status": "WAITING"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def hold(self) -> None:
        self.asked.clear()
        self.gate.clear()

    def close(self) -> None:
        self.gate.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def upstream() -> Iterator[GatedUpstream]:
    gated = GatedUpstream()
    yield gated
    gated.close()


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def get(url: str, path: str, **headers: str) -> http.client.HTTPResponse:
    """The response to one GET, its body read."""
    parts = url.removeprefix("http://").rsplit(":", 1)
    host = parts[0].strip("[]")
    connection = http.client.HTTPConnection(host, int(parts[1]), timeout=60)
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def status_of(url: str, path: str) -> tuple[int, bytes]:
    parts = url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(parts[0].strip("[]"), int(parts[1]), timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def start_exporter(upstream_url: str, *args: str, proc: ExporterProcessFor) -> ExporterProcess:
    return proc(
        "--elevate.base-url",
        upstream_url,
        "--elevate.import-id",
        "1001",
        "--elevate.min-poll-interval",
        "0s",
        "--elevate.timeout",
        "60",
        *args,
        env={"ELEVATE_API_KEY": SIM_KEY},
    )


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
            return sock.recv(1) == b""  # accepted by the kernel, closed unanswered
    except OSError:
        return True


# -- several addresses ----------------------------------------------------------------------


def test_every_listen_address_serves_metrics_and_health(
    exporter_for: ExporterFor, simulator: Simulator
) -> None:
    second = "[::1]:0" if ipv6_loopback() else "127.0.0.1:0"
    running = exporter_for(simulator.url, ["1001"], listen_address=["127.0.0.1:0", second])
    assert len(running.urls) == 2
    assert running.urls[0] == running.url
    assert running.urls[0] != running.urls[1]
    for url in running.urls:
        assert status_of(url, "/-/healthy")[0] == 200, url
        status, body = status_of(url, "/metrics")
        assert status == 200, url
        assert Scrape(body.decode()).value("elevate_import_up") == 1, url


def test_the_first_listen_address_is_the_one_the_settings_name(simulator: Simulator) -> None:
    chosen = load_settings(
        base_url=simulator.url, api_key=SIM_KEY, listen_address=["127.0.0.1:9", "[::1]:10"]
    )
    assert (chosen.listen_host, chosen.listen_port) == ("127.0.0.1", 9)
    assert chosen.listen_addresses == (("127.0.0.1", 9), ("::1", 10))


def test_a_second_address_that_cannot_be_bound_stops_the_start_naming_it(
    simulator: Simulator,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        first = free_port()
        settings = load_settings(
            base_url=simulator.url,
            api_key=SIM_KEY,
            listen_address=[f"127.0.0.1:{first}", address],
            storage_path="",
        )
        with pytest.raises(web.ListenError, match=address):
            Application(settings)
    # The first address, bound before the second failed, is given back.
    with socket.create_server(("127.0.0.1", first)):
        pass


def test_run_with_a_second_address_in_use_exits_2_naming_it(
    exporter_process: ExporterProcessFor,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        # Neither the first nor the last: every address is bound, not only one of them.
        proc = exporter_process(
            "--elevate.base-url",
            "http://127.0.0.1:9",
            *("--web.listen-address", f"127.0.0.1:{free_port()}"),
            *("--web.listen-address", address),
            *("--web.listen-address", f"127.0.0.1:{free_port()}"),
            env={"ELEVATE_API_KEY": SIM_KEY},
            wait=False,
        )
        proc.assert_setup_error(address)


def test_the_variable_takes_a_comma_separated_list_of_addresses(
    exporter_process: ExporterProcessFor, simulator: Simulator
) -> None:
    ports = [free_port(), free_port()]
    proc = exporter_process(
        "--elevate.base-url",
        simulator.url,
        env={
            "ELEVATE_API_KEY": SIM_KEY,
            "ELEVATE_EXPORTER_LISTEN_ADDRESS": f"127.0.0.1:{ports[0]}, 127.0.0.1:{ports[1]}",
        },
        wait=False,
    )
    proc.url = f"http://127.0.0.1:{ports[0]}"  # the fixture took the whole list for one
    proc.wait_ready()
    for port in ports:
        assert status_of(f"http://127.0.0.1:{port}", "/-/healthy")[0] == 200, port
    assert proc.stop() == 0


# -- draining, in process -------------------------------------------------------------------


def serving(app: Application) -> bool:
    thread = app._thread  # started by the fixture
    assert thread is not None
    return thread.is_alive()


def test_a_scrape_in_flight_when_the_drain_begins_is_answered_and_closes_its_connection(
    upstream: GatedUpstream, exporter_for: ExporterFor
) -> None:
    running = exporter_for(upstream.url, ["1001"])
    upstream.hold()
    answers: list[http.client.HTTPResponse] = []
    scraper = threading.Thread(target=lambda: answers.append(get(running.url, "/metrics")))
    scraper.start()
    assert upstream.asked.wait(30), "the scrape did not reach the upstream"

    running.drain()
    wait_until(lambda: refuses_connections(running.port), what="new connections refused")
    upstream.gate.set()
    scraper.join(30)
    assert answers, "the scrape in flight got no answer"
    assert answers[0].status == 200
    assert answers[0].getheader("Connection") == "close"
    # serve_forever returned by itself: the drain is over.
    wait_until(lambda: not serving(running), what="serving to end after the drain")


def test_a_drain_closes_idle_and_half_sent_connections_at_once(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    running = exporter_for(simulator.url, ["1001"])
    idle = http.client.HTTPConnection("127.0.0.1", running.port, timeout=30)
    idle.request("GET", "/-/healthy")
    assert idle.getresponse().read() == b"Healthy.\n"
    half = socket.create_connection(("127.0.0.1", running.port), timeout=30)
    half.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    assert status_of(running.url, "/-/healthy")[0] == 200  # the loop has seen both

    running.drain()
    # Both were closed by the server, without waiting for the header or idle timeout.
    assert half.recv(1) == b""
    assert idle.sock is not None
    assert idle.sock.recv(1) == b""
    wait_until(lambda: not serving(running), what="serving to end after the drain")
    half.close()
    idle.close()


# -- SIGTERM, a real process ----------------------------------------------------------------


def test_sigterm_lets_a_scrape_waiting_for_elevate_be_answered_then_exits_0(
    exporter_process: ExporterProcessFor, upstream: GatedUpstream
) -> None:
    proc = start_exporter(upstream.url, proc=exporter_process)
    port = int(proc.url.rsplit(":", 1)[1])
    upstream.hold()
    answers: list[tuple[int, str]] = []
    scraper = threading.Thread(target=lambda: answers.append(proc.get("/metrics")))
    scraper.start()
    assert upstream.asked.wait(30), "the scrape did not reach the upstream"

    proc.process.terminate()
    wait_until(lambda: refuses_connections(port), what="new connections refused after SIGTERM")
    assert proc.process.poll() is None, "the exporter exited with a scrape in flight"
    upstream.gate.set()
    scraper.join(30)
    assert answers, "the scrape in flight got no answer"
    status, text = answers[0]
    assert status == 200
    assert Scrape(text).current_status("1001") == "WAITING"
    assert proc.process.wait(timeout=web.DRAIN_SECONDS + MARGIN) == 0
    assert "Traceback" not in proc.stderr()


def test_sigterm_cuts_a_scrape_still_waiting_when_the_drain_time_is_over(
    exporter_process: ExporterProcessFor, upstream: GatedUpstream
) -> None:
    proc = start_exporter(upstream.url, proc=exporter_process)
    upstream.hold()

    def scrape() -> None:
        # Allowed a minute: only the drain's end can cut it sooner.
        with contextlib.suppress(OSError):
            proc.get("/metrics", **{"X-Prometheus-Scrape-Timeout-Seconds": "60"})

    scraper = threading.Thread(target=scrape, daemon=True)
    scraper.start()
    assert upstream.asked.wait(30), "the scrape did not reach the upstream"

    began = time.monotonic()
    proc.process.terminate()
    try:
        returncode = proc.process.wait(timeout=web.DRAIN_SECONDS + MARGIN)
    except subprocess.TimeoutExpired:
        pytest.fail("the exporter waited past the drain time for its poll round")
    assert returncode == 0
    # It did wait for the answer in flight, up to the drain time.
    assert time.monotonic() - began >= web.DRAIN_SECONDS - 0.5
    stderr = proc.stderr()
    assert "Traceback" not in stderr
    assert "cut" in stderr


def test_sigterm_with_a_half_sent_request_and_an_idle_connection_exits_at_once(
    exporter_process: ExporterProcessFor, simulator: Simulator
) -> None:
    proc = start_exporter(simulator.url, proc=exporter_process)
    port = int(proc.url.rsplit(":", 1)[1])
    idle = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    idle.request("GET", "/-/healthy")
    assert idle.getresponse().read() == b"Healthy.\n"
    half = socket.create_connection(("127.0.0.1", port), timeout=30)
    half.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    assert proc.get("/-/healthy")[0] == 200  # the loop has seen both

    proc.process.terminate()
    try:
        # Neither the header timeout (10 s) nor the idle one (120 s) is waited for,
        # nor the drain time: no request is in flight.
        returncode = proc.process.wait(timeout=web.DRAIN_SECONDS - 1)
    except subprocess.TimeoutExpired:
        pytest.fail("the exporter waited for connections that had no request in flight")
    assert returncode == 0
    half.close()
    idle.close()


def test_sigterm_with_nothing_in_flight_exits_0_without_waiting_the_drain_time(
    exporter_process: ExporterProcessFor, simulator: Simulator
) -> None:
    proc = start_exporter(simulator.url, proc=exporter_process)
    assert proc.get("/metrics")[0] == 200
    proc.process.terminate()
    try:
        returncode = proc.process.wait(timeout=web.DRAIN_SECONDS - 1)
    except subprocess.TimeoutExpired:
        pytest.fail("the exporter waited out the drain time with nothing in flight")
    assert returncode == 0
    assert "Traceback" not in proc.stderr()
