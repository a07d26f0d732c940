"""An upstream that does not answer in HTTP at all: a wrong port that speaks SSH, a bare
HTTP/0.9 body, garbage, a TLS server asked in plain HTTP.

Each is a real ``run`` or ``status`` process against a raw-socket server on loopback: the
request is counted (``invalid_response``), one warning line says what answered, and no
traceback reaches the log; ``status`` exits 3 (the API kept failing), not 1.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
import trustme

from tests.conftest import REPO, ExporterProcess, ExporterProcessFor, exporter_env
from tests.support import Scrape, wait_until
from tests.upstream import Close, Send, Upstream

KEY = "KEY-h4-9f3a_DO.NOT-LEAK"
ID = "5537431447739019570"
PATH = f"/api/v2/import/status/{ID}"

NOT_HTTP = {
    "ssh-banner": b"SSH-2.0-OpenSSH_9.6\r\n",
    "http-0.9-body": b'{"id": "5537431447739019570", "status": "SUCCESS"}',
    "non-numeric-code": b"HTTP/1.1 OK fine\r\nContent-Length: 0\r\n\r\n",
    "garbage": bytes(range(1, 64)) + b"\xff\xfe\r\n",
    # A TLS record (an alert), what some TLS servers send to a plain-text client.
    "tls-alert": b"\x15\x03\x01\x00\x02\x02\x46",
    "http-2.0-line": b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
}


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as server:
        yield server


def start_run(exporter_process: ExporterProcessFor, base_url: str) -> ExporterProcess:
    return exporter_process(
        *("--elevate.base-url", base_url, "--elevate.import-id", ID),
        *("--elevate.retries", "0", "--elevate.min-poll-interval", "0s"),
        env={"ELEVATE_API_KEY": KEY},
    )


def warnings_naming(stderr: str, host_port: str) -> list[str]:
    return [line for line in stderr.splitlines() if "level=warn" in line and host_port in line]


def assert_counted_as_invalid_response(proc: ExporterProcess, host_port: str) -> None:
    status, text = proc.get("/metrics")
    assert status == 200
    result = Scrape(text)
    # At least the start-up round's request and the scrape's; every one of them counted
    # as what it was, and under the contract's code for an answer without an HTTP status.
    invalid = result.value("elevate_import_api_errors_total", reason="invalid_response")
    assert invalid is not None, text
    assert invalid >= 2, text
    assert result.value("elevate_import_api_requests_total", code="connection_error") == invalid
    assert result.value("elevate_import_api_errors_total", reason="connection_error") == 0
    assert result.value("elevate_import_poll_success", id=ID) == 0
    stderr = proc.stderr()
    assert "Traceback" not in stderr
    assert "level=error" not in stderr
    lines = [line for line in warnings_naming(stderr, host_port) if "invalid_response" in line]
    assert lines, stderr
    for line in lines:
        assert "not HTTP" in line
        assert len(line) < 500, line
    assert KEY not in stderr


@pytest.mark.parametrize("name", list(NOT_HTTP))
def test_an_upstream_that_does_not_answer_in_http_is_counted_as_invalid_response_in_one_line(
    upstream: Upstream, exporter_process: ExporterProcessFor, name: str
) -> None:
    upstream.on(PATH, [Send(NOT_HTTP[name]), Close()])
    proc = start_run(exporter_process, upstream.url)
    assert_counted_as_invalid_response(proc, upstream.url.removeprefix("http://"))


@pytest.mark.parametrize("name", ["ssh-banner", "http-0.9-body"])
def test_status_against_an_upstream_that_does_not_answer_in_http_exits_3(
    upstream: Upstream, name: str
) -> None:
    upstream.on(PATH, [Send(NOT_HTTP[name]), Close()])
    done = subprocess.run(
        [
            *(sys.executable, "-m", "elevate_import_exporter", "status"),
            *("--elevate.base-url", upstream.url, "--elevate.retries", "0", ID),
        ],
        env=exporter_env(ELEVATE_API_KEY=KEY),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        check=False,
    )
    output = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 3, output
    assert "Traceback" not in output
    assert "invalid_response" in output


# -- a TLS server asked in plain HTTP ----------------------------------------------------


class TlsOnly:
    """A server that speaks only TLS: a plain-text request fails its handshake."""

    def __init__(self) -> None:
        leaf = trustme.CA().issue_cert("127.0.0.1")
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        leaf.configure_cert(self._context)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self._listener.settimeout(0.05)
        while not self._closing.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection.settimeout(10)
            with (
                contextlib.suppress(OSError),
                connection,
                self._context.wrap_socket(connection, server_side=True) as tls,
            ):
                tls.recv(1)

    def close(self) -> None:
        self._closing.set()
        self._thread.join(10)
        self._listener.close()


def test_a_tls_port_asked_in_plain_http_fails_in_one_line_that_suggests_https(
    exporter_process: ExporterProcessFor,
) -> None:
    server = TlsOnly()
    try:
        proc = start_run(exporter_process, f"http://{server.address}")
        status, text = proc.get("/metrics")
    finally:
        server.close()
    assert status == 200
    result = Scrape(text)
    failed = result.value("elevate_import_api_errors_total", reason="connection_error")
    assert failed is not None, text
    assert failed >= 2, text
    stderr = proc.stderr()
    assert "Traceback" not in stderr
    lines = [line for line in warnings_naming(stderr, server.address) if ID in line]
    assert lines, stderr
    assert all("https://" in line for line in lines), lines


def test_a_run_against_an_ssh_port_keeps_serving_and_recovers_when_elevate_answers(
    upstream: Upstream, exporter_process: ExporterProcessFor
) -> None:
    from tests.upstream import json_answer

    upstream.on(
        PATH,
        [Send(NOT_HTTP["ssh-banner"]), Close()],
        [Send(json_answer({"id": ID, "status": "SUCCESS", "type": "PRODUCTS"}))],
    )
    proc = start_run(exporter_process, upstream.url)

    def succeeded() -> bool:
        return Scrape(proc.get("/metrics")[1]).value("elevate_import_poll_success", id=ID) == 1

    wait_until(succeeded, timeout=30, what="a valid answer after the SSH banner")
    assert not re.search(r"Traceback|level=error", proc.stderr())
