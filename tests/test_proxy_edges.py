"""The import proxy's edges, through a real exporter process: ids of the wrong flavour,
a feed's own key echoed in its answer, labels with control characters, interim answers,
half-closing clients and header lines split by a bare CR (issue 20, points 8, 9 and 11)."""

from __future__ import annotations

import base64
import json
import select
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pytest

from tests.conftest import ExporterProcess, ExporterProcessFor
from tests.support import free_port, scrape, wait_until
from tests.upstream import Send, Upstream, answer

EXPORTER_KEY = "exporter-KEY-5a1f-own"
FEED_KEY = "FEED-JOB-SECRET-KEY-42"
PATH = "/api/v2/import/products"


@dataclass
class ProxiedExporter:
    """An exporter process with its proxy on a known port, and its store's path."""

    proc: ExporterProcess
    port: int
    store: Path

    def imports(self) -> list[dict[str, object]]:
        status, body = self.proc.get("/api/v1/imports")
        assert status == 200, body
        found: list[dict[str, object]] = json.loads(body)["imports"]
        return found

    def wait_answered(self, count: int) -> None:
        def answered() -> bool:
            series = scrape(self.proc.url).series("elevate_import_proxy_requests_total")
            return sum(series.values()) >= count

        wait_until(answered, timeout=30, what=f"{count} requests counted by the proxy")

    def stored_types(self) -> list[str]:
        with sqlite3.connect(self.store) as db:
            return [row[0] for row in db.execute("SELECT type FROM imports")]


ProxiedFor = Callable[..., ProxiedExporter]


@pytest.fixture
def proxied(exporter_process: ExporterProcessFor, tmp_path: Path) -> ProxiedFor:
    def start(upstream: str, *args: str) -> ProxiedExporter:
        port = free_port()
        store = tmp_path / f"store-{port}.db"
        proc = exporter_process(
            "--elevate.base-url",
            upstream,
            "--proxy.listen-address",
            f"127.0.0.1:{port}",
            *args,
            env={"ELEVATE_API_KEY": EXPORTER_KEY, "ELEVATE_EXPORTER_STORAGE_PATH": str(store)},
        )
        return ProxiedExporter(proc, port, store)

    return start


def exchange(port: int, request: bytes, *, half_close: bool = False) -> bytes:
    """Send ``request`` on a fresh connection (then half-close it if asked) and read the
    answer until the proxy closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def post(path: str, headers: str = "", body: bytes = b"") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: proxy\r\nApi-Key: {FEED_KEY}\r\n{headers}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode("latin-1") + body


def status_of(raw: bytes) -> int:
    assert raw, "the proxy sent no answer"
    return int(raw.split(b" ", 2)[1])


def warnings(proc: ExporterProcess) -> list[str]:
    return [line for line in proc.stderr().splitlines() if "level=warn" in line]


# -- point 8: ids of the configured flavour only --------------------------------------


@pytest.mark.parametrize(
    ("flavour", "path", "doc"),
    [
        ("admin-v4", "/api/admin/v4/import/data", {"id": "not-numeric_ID", "type": "DATA"}),
        # Variant: the v3 flavour, and an id that is a number written as text with a sign.
        ("admin-v3", "/api/admin/v3/import/data", {"id": "-42", "status": "WAITING"}),
    ],
    ids=["admin-v4-word", "admin-v3-signed"],
)
def test_an_id_outside_the_configured_flavours_rule_is_counted_and_not_tracked(
    proxied: ProxiedFor, flavour: str, path: str, doc: dict[str, object]
) -> None:
    with Upstream() as upstream:
        upstream.on(path, [Send(answer(json.dumps(doc), 202))])
        run = proxied(upstream.url, "--elevate.api", flavour)
        got = exchange(run.port, post(path))
        assert status_of(got) == 202
        assert got.endswith(json.dumps(doc).encode())  # the client has Elevate's answer
        run.wait_answered(1)
        result = scrape(run.proc.url)
    assert result.value("elevate_import_proxy_imports_total", type="DATA", outcome="accepted")
    assert set(result.series("elevate_import_proxy_tracked_total").values()) == {0}
    assert run.imports() == []
    [warning] = [line for line in warnings(run.proc) if "proxy" in line]
    assert "decimal digits" in warning


def test_a_numeric_admin_id_is_still_tracked(proxied: ProxiedFor) -> None:
    path = "/api/admin/v4/import/data"
    with Upstream() as upstream:
        upstream.on(path, [Send(answer(b'{"id": 123456789012345678901, "type": "DATA"}', 202))])
        run = proxied(upstream.url, "--elevate.api", "admin-v4")
        assert status_of(exchange(run.port, post(path))) == 202
        wait_until(run.imports, timeout=30, what="the import tracked")
    assert [record["id"] for record in run.imports()] == ["123456789012345678901"]


# -- point 9: the feed's own secrets, and labels by the registration API's rule ----------


BASIC = base64.b64encode(b"feeduser:feed-PASSWORD-77").decode()


@pytest.mark.parametrize(
    ("headers", "echoed", "secrets"),
    [
        ("", f"PRODUCTS ({FEED_KEY})", [FEED_KEY]),
        # Variants: the key still escaped once the answer is decoded (a message that
        # quotes JSON), and the feed's basic credentials (when the proxy asks for none,
        # Authorization goes on to Elevate).
        ("", "PRODUCTS " + FEED_KEY.replace("-", "\\\\u002d"), [FEED_KEY]),
        (
            f"Authorization: Basic {BASIC}\r\n",
            f"PRODUCTS {BASIC} feed-PASSWORD-77",
            [BASIC, "feed-PASSWORD-77"],
        ),
    ],
    ids=["plain-key", "json-escaped-key", "basic-credentials"],
)
def test_a_feeds_own_secret_echoed_in_the_answers_type_is_not_logged_stored_or_shown(
    proxied: ProxiedFor, headers: str, echoed: str, secrets: list[str]
) -> None:
    # The answer's text is JSON: an escaped key is written raw so that it stays escaped.
    body = '{"id": "echokey1", "status": "WAITING", "type": "' + echoed + '"}'
    with Upstream() as upstream:
        upstream.on(PATH, [Send(answer(body, 202))])
        run = proxied(upstream.url, "--log.level", "debug")
        assert status_of(exchange(run.port, post(PATH, headers))) == 202
        wait_until(run.imports, timeout=30, what="the import tracked")
        shown = run.proc.get("/api/v1/imports")[1] + run.proc.get("/")[1]
        shown += run.proc.get("/metrics")[1]
        stored = run.stored_types()
        logged = [line for line in run.proc.stderr().splitlines() if "tracking import" in line]
    assert [record["id"] for record in run.imports()] == ["echokey1"]
    assert logged, "no line says the import is tracked"
    escaped = FEED_KEY.replace("-", "\\u002d")
    for secret in secrets:
        for text in (shown, *stored, *logged):
            assert secret not in text
            assert escaped not in text
    assert stored[0].startswith("PRODUCTS")  # the rest of the type is kept


@pytest.mark.parametrize(
    "query",
    ["name=a%0Ab", "name=tab%09here", "name=bell%07"],
    ids=["newline", "tab", "bell"],
)
def test_a_label_value_with_a_control_character_is_left_out_as_the_registration_api_refuses_it(
    proxied: ProxiedFor, query: str
) -> None:
    with Upstream() as upstream:
        upstream.on(f"{PATH}?{query}", [Send(answer(b'{"id": "lbl1", "type": "PRODUCTS"}', 202))])
        run = proxied(upstream.url)
        request = post(f"{PATH}?{query}", "X-Feed-Name: shop-se\r\n")
        assert status_of(exchange(run.port, request)) == 202
        wait_until(run.imports, timeout=30, what="the import tracked")
    [record] = run.imports()
    assert record["labels"] == {"path": PATH, "feed_name": "shop-se"}


# -- point 11: interim answers, half-closes, header lines ------------------------------


EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
ACCEPTED = answer(b'{"id": "hint1", "status": "WAITING", "type": "PRODUCTS"}', 202)


@pytest.mark.parametrize(
    "interim",
    [
        EARLY_HINTS,
        # Variants: several interim answers, one without headers, one with a 100 between.
        b"HTTP/1.1 102 Processing\r\n\r\n" + EARLY_HINTS + b"HTTP/1.1 100 Continue\r\n\r\n",
    ],
    ids=["103", "102-103-100"],
)
def test_interim_answers_before_the_202_are_skipped_and_the_final_answer_is_relayed(
    proxied: ProxiedFor, interim: bytes
) -> None:
    with Upstream() as upstream:
        upstream.on(PATH, [Send(interim + ACCEPTED)])
        run = proxied(upstream.url)
        got = exchange(run.port, post(PATH))
        wait_until(run.imports, timeout=30, what="the import tracked")
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 202 ")
    assert b"Link:" not in head  # the hints were for a browser, not for the final answer
    assert json.loads(body)["id"] == "hint1"
    assert [record["id"] for record in run.imports()] == ["hint1"]


@pytest.mark.parametrize(
    "evil",
    [b"X-Evil: a\rSet-Cookie: injected=1\r\n", b"X-Evil: a\nSet-Cookie: injected=1\r\n"],
    ids=["bare-cr", "bare-lf"],
)
def test_a_header_line_broken_by_a_bare_cr_or_lf_is_refused_with_a_502(
    proxied: ProxiedFor, evil: bytes
) -> None:
    with Upstream() as upstream:
        body = b'{"id": "evil1", "type": "PRODUCTS"}'
        head = b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n" + evil
        upstream.on(PATH, [Send(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)])
        run = proxied(upstream.url)
        got = exchange(run.port, post(PATH))
        run.wait_answered(1)
        result = scrape(run.proc.url)
    assert status_of(got) == 502
    assert b"injected" not in got
    assert result.value("elevate_import_proxy_upstream_errors_total", reason="invalid_response")
    assert run.imports() == []


@dataclass
class HeldUpstream:
    """Reads one whole request (Content-Length or chunked body), waits for ``release``,
    then for up to ``hold`` seconds sees whether the proxy gives up on the request; if it
    does not, sends ``reply``."""

    reply: bytes
    hold: float = 2.0
    received: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    proxy_left: bool = False
    body: bytes = b""

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._listener.settimeout(60)
        while True:
            conn, _ = self._listener.accept()
            with conn:
                conn.settimeout(60)
                reader = conn.makefile("rb")
                head = b""
                while (line := reader.readline()) not in (b"\r\n", b""):
                    head += line
                if head.startswith(b"POST "):  # not the exporter's own status queries
                    self._answer(conn, reader, head)
                    return

    def _answer(self, conn: socket.socket, reader: BinaryIO, head: bytes) -> None:
        if b"transfer-encoding: chunked" in head.lower():
            while (size := int(reader.readline().split(b";")[0], 16)) > 0:
                self.body += reader.read(size)
                reader.readline()
            while reader.readline() not in (b"\r\n", b""):
                pass
        else:
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            self.body = reader.read(length)
        self.received.set()
        self.release.wait(60)
        readable, _, _ = select.select([conn], [], [], self.hold)
        if readable and conn.recv(1, socket.MSG_PEEK) == b"":
            self.proxy_left = True
            return
        conn.sendall(self.reply)

    def close(self) -> None:
        self.release.set()
        self._thread.join(30)
        self._listener.close()


@pytest.fixture
def held() -> Iterator[Callable[[bytes], HeldUpstream]]:
    made: list[HeldUpstream] = []

    def make(reply: bytes) -> HeldUpstream:
        made.append(HeldUpstream(reply))
        return made[-1]

    yield make
    for upstream in made:
        upstream.close()


def test_a_client_that_half_closes_after_its_whole_request_gets_the_answer_and_is_tracked(
    proxied: ProxiedFor, held: Callable[[bytes], HeldUpstream]
) -> None:
    upstream = held(answer(b'{"id": "half1", "status": "WAITING", "type": "PRODUCTS"}', 202))
    run = proxied(upstream.url)
    feed = b"<operations>" + b"<product/>" * 1000 + b"</operations>"
    with socket.create_connection(("127.0.0.1", run.port), timeout=30) as sock:
        sock.sendall(post(PATH, body=feed))
        assert upstream.received.wait(30)
        sock.shutdown(socket.SHUT_WR)
        upstream.release.set()
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
    assert not upstream.proxy_left
    assert upstream.body == feed
    assert status_of(got) == 202
    wait_until(run.imports, timeout=30, what="the import tracked")
    assert [record["id"] for record in run.imports()] == ["half1"]


def test_a_half_close_right_behind_a_chunked_uploads_last_chunk_still_gets_the_answer(
    proxied: ProxiedFor, held: Callable[[bytes], HeldUpstream]
) -> None:
    upstream = held(answer(b'{"id": "half2", "status": "WAITING", "type": "PRODUCTS"}', 202))
    run = proxied(upstream.url)
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: proxy\r\nApi-Key: {FEED_KEY}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", run.port), timeout=30) as sock:
        sock.sendall(head + b"6\r\n<feed>\r\n7\r\n</feed>\r\n")
        sock.sendall(b"0\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        upstream.release.set()
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
    assert not upstream.proxy_left
    assert upstream.body == b"<feed></feed>"
    assert status_of(got) == 202
    wait_until(run.imports, timeout=30, what="the import tracked")
    assert [record["id"] for record in run.imports()] == ["half2"]
