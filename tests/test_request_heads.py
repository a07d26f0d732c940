"""Request heads the parser cannot read, unsupported HTTP versions, framing refused before
or after the auth check, and plain HTTP sent to a TLS port: each through a real `run`
process on raw sockets, since a client library would not send what these tests send."""

from __future__ import annotations

import json
import re
import socket
import ssl
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

import bcrypt
import pytest
import trustme

from elevate_import_exporter.simulator import Simulator
from tests.conftest import SIM_KEY, ExporterProcess, ExporterProcessFor
from tests.support import Scrape, free_port, wait_until

PASSWORD = "s3cret horse"
STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([0-9]{3}) ")


def exchange(port: int, raw: bytes, timeout: float = 20.0) -> bytes:
    """What the server sends back to ``raw`` until it closes the connection (or, if it
    keeps it open, until ``timeout``: the callers then see answers but no close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            received += chunk
    return received


def statuses(received: bytes) -> list[int]:
    """The status of every answer in ``received``, each at the start of a line."""
    return [int(m.group(1)) for m in STATUS_LINE.finditer(received) if _at_line_start(received, m)]


def _at_line_start(data: bytes, match: re.Match[bytes]) -> bool:
    return match.start() == 0 or data[match.start() - 1 : match.start()] == b"\n"


def call(url: str, method: str, path: str, body: bytes | None = None, **headers: str) -> int:
    request = urllib.request.Request(url + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def register(url: str, import_id: str, **headers: str) -> None:
    body = json.dumps({"id": import_id}).encode()
    kind = {"Content-Type": "application/json"}
    assert call(url, "POST", "/api/v1/imports", body, **kind, **headers) == 201


def port_of(proc: ExporterProcess) -> int:
    return int(proc.url.rsplit(":", 1)[1])


@pytest.fixture
def exporter(exporter_process: ExporterProcessFor, simulator: Simulator) -> ExporterProcess:
    return exporter_process(
        "--elevate.base-url",
        simulator.url,
        "--web.enable-registration",
        env={"ELEVATE_API_KEY": SIM_KEY},
    )


# -- 1. a header line the parser cannot read ----------------------------------------------


SMUGGLED = b"DELETE /api/v1/imports/4242 HTTP/1.1\r\nHost: x\r\n\r\n"


def test_a_header_line_with_a_space_before_its_colon_is_refused_and_its_body_never_runs(
    exporter: ExporterProcess,
) -> None:
    register(exporter.url, "4242")
    raw = (
        b"POST /api/v1/imports HTTP/1.1\r\nHost: x\r\nX-Odd : 1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED)
    ) + SMUGGLED
    received = exchange(port_of(exporter), raw)
    assert statuses(received) == [400], received  # one answer, and the connection closed
    assert b"header" in received.lower()
    assert call(exporter.url, "GET", "/api/v1/imports/4242") == 200  # the victim survives


@pytest.mark.parametrize(
    "line",
    [
        b"X-Odd : 1",  # space before the colon
        b"X-Odd\t: 1",  # tab before the colon
        b"NoColonHere",
        b" folded: onto the previous line",  # obs-fold
        b"\tfolded",  # obs-fold with a tab
        b"X-N\x00ul: 1",  # NUL in a name
        b"X-Ctl\x01: 1",  # a control byte in a name
        b": no name",
        b"X-Value: a\x00b",  # NUL in a value
        b"X-Value: a\rb",  # a bare CR in a value
        b"X(Odd): 1",  # a separator in a name
    ],
)
def test_an_unreadable_header_line_gets_400_and_a_close_whatever_follows_it(
    exporter: ExporterProcess, line: bytes
) -> None:
    register(exporter.url, "4242")
    # /-/healthy would answer 200: only the unreadable line makes it a 400.
    raw = (
        b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n" + line + b"\r\n"
        b"Content-Length: %d\r\n\r\n" % len(SMUGGLED)
    ) + SMUGGLED
    received = exchange(port_of(exporter), raw)
    assert statuses(received) == [400], received
    assert b"Connection: close" in received
    assert call(exporter.url, "GET", "/api/v1/imports/4242") == 200


def test_a_request_with_readable_headers_still_keeps_its_connection(
    exporter: ExporterProcess,
) -> None:
    # The strict check must not refuse what is well-formed: odd but valid names, tabs
    # and spaces in values, obs-text, bare LF line ends.
    raw = (
        b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nX-A.b_c~d!#$%&'*+^`|: v\t w \xe9\r\n"
        b"X-Empty:\r\nX-Lf: 1\n\r\n"
        b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert statuses(exchange(port_of(exporter), raw)) == [200, 200]


# -- 13c. HTTP versions -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        (b"GET /-/healthy HTTP/2.0", 505),
        (b"GET /-/healthy HTTP/3.0", 505),
        (b"PRI * HTTP/2.0", 505),  # the start of HTTP/2's connection preface
        (b"GET /-/healthy HTTP/1.1.1", 400),
        (b"GET /-/healthy FTP/1.1", 400),
        (b"GET /-/healthy", 400),  # HTTP/0.9
    ],
)
def test_an_unsupported_http_version_gets_a_status_line_and_a_body(
    exporter: ExporterProcess, request_line: bytes, status: int
) -> None:
    received = exchange(port_of(exporter), request_line + b"\r\nHost: x\r\n\r\n")
    assert received.startswith(b"HTTP/1.1 %d " % status), received[:200]
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"Content-Length: %d" % len(body) in head
    assert body
    assert b"<html" not in body.lower()


# -- 13b. auth comes before the framing ---------------------------------------------------


def hashed(password: str, cost: int = 4) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode()


def basic(user: str, password: str) -> str:
    return "Basic " + b64encode(f"{user}:{password}".encode()).decode()


def invalid_registrations(url: str) -> float:
    request = urllib.request.Request(url + "/metrics", headers={"Authorization": AUTH})
    with urllib.request.urlopen(request, timeout=30) as answer:
        scrape = Scrape(answer.read().decode())
    return scrape.value("elevate_import_registrations_total", result="invalid") or 0.0


AUTH = basic("prom", PASSWORD)


@pytest.fixture
def secured(
    exporter_process: ExporterProcessFor, simulator: Simulator, tmp_path: Path
) -> ExporterProcess:
    config = tmp_path / "web-config.yml"
    config.write_text(f"basic_auth_users:\n  prom: '{hashed(PASSWORD)}'\n")
    address = f"127.0.0.1:{free_port()}"
    proc = exporter_process(
        "--elevate.base-url",
        simulator.url,
        "--web.enable-registration",
        "--web.listen-address",
        address,
        "--web.config.file",
        str(config),
        env={"ELEVATE_API_KEY": SIM_KEY},
        wait=False,
    )
    wait_until(lambda: _ready(proc), timeout=30, what="the secured exporter to answer")
    return proc


def _ready(proc: ExporterProcess) -> bool:
    try:
        return proc.get("/-/ready", Authorization=AUTH)[0] == 200
    except OSError:
        return False


FRAMINGS = [
    ["Transfer-Encoding: chunked"],
    ["Content-Length: 5", "Transfer-Encoding: chunked"],
    ["Transfer-Encoding: gzip, chunked"],
    ["Content-Length: 5", "Content-Length: 6"],
    [f"Content-Length: {'9' * 12}"],
]


@pytest.mark.parametrize("framing", FRAMINGS)
def test_an_unauthenticated_post_with_a_refused_framing_gets_401_and_counts_nothing(
    secured: ExporterProcess, framing: list[str]
) -> None:
    head = "\r\n".join(["POST /api/v1/imports HTTP/1.1", "Host: x", *framing]) + "\r\n\r\n"
    raw = head.encode() + b"0\r\n\r\n" + b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n"
    received = exchange(port_of(secured), raw)
    assert statuses(received) == [401], received
    assert b"WWW-Authenticate: Basic" in received
    assert invalid_registrations(secured.url) == 0


def test_an_authenticated_post_in_an_unknown_coding_is_still_refused_and_counted_as_invalid(
    secured: ExporterProcess,
) -> None:
    raw = (
        b"POST /api/v1/imports HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n"
        b"Authorization: " + AUTH.encode() + b"\r\n\r\n0\r\n\r\n"
    )
    assert statuses(exchange(port_of(secured), raw)) == [501]
    assert invalid_registrations(secured.url) == 1


def test_an_unreadable_header_line_is_refused_without_counting_a_registration(
    secured: ExporterProcess,
) -> None:
    raw = (
        b"POST /api/v1/imports HTTP/1.1\r\nHost: x\r\nX-Odd : 1\r\n"
        b"Authorization: " + AUTH.encode() + b"\r\nContent-Length: 0\r\n\r\n"
    )
    assert statuses(exchange(port_of(secured), raw)) == [400]
    assert invalid_registrations(secured.url) == 0


# -- plain HTTP sent to a TLS port ----------------------------------------------------------


GO_ANSWER = b"Client sent an HTTP request to an HTTPS server.\n"


@pytest.fixture
def tls_folder(tmp_path: Path) -> Path:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server = ca.issue_cert("127.0.0.1")
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    server.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    (tmp_path / "web-config.yml").write_text(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
    )
    return tmp_path


def _tls_ready(port: int, folder: Path) -> bool:
    context = ssl.create_default_context(cafile=str(folder / "ca.pem"))
    try:
        with urllib.request.urlopen(
            f"https://127.0.0.1:{port}/-/healthy", timeout=5, context=context
        ) as answer:
            return int(answer.status) == 200
    except (OSError, urllib.error.URLError):
        return False


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /api/v1/imports HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        b"OPTIONS * HTTP/1.0\r\n\r\n",
    ],
)
def test_plain_http_to_the_tls_ports_gets_400_saying_so_like_go(
    exporter_process: ExporterProcessFor, simulator: Simulator, tls_folder: Path, raw: bytes
) -> None:
    web_port, proxy_port = free_port(), free_port()
    exporter_process(
        "--elevate.base-url",
        simulator.url,
        "--web.listen-address",
        f"127.0.0.1:{web_port}",
        "--proxy.listen-address",
        f"127.0.0.1:{proxy_port}",
        "--web.config.file",
        str(tls_folder / "web-config.yml"),
        env={"ELEVATE_API_KEY": SIM_KEY},
        wait=False,
    )
    wait_until(lambda: _tls_ready(web_port, tls_folder), timeout=30, what="the TLS port")
    for port in (web_port, proxy_port):
        received = exchange(port, raw)
        assert received.startswith(b"HTTP/1.1 400 "), (port, received)
        assert received.endswith(b"\r\n\r\n" + GO_ANSWER), (port, received)
    # and TLS clients are still served
    assert _tls_ready(web_port, tls_folder)
