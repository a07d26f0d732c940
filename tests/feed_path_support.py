"""Real processes for the feed path's tests: feed jobs that upload through the standalone
proxy (tests/standalone_proxy.py), and registration targets that misbehave.

Elevate is the project's simulator, started in the test process so that its record of every
upload (bytes, SHA-256, the answer) can be read; it is still a real HTTP server on loopback.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import SIM_KEY, ExporterProcess
from tests.standalone_proxy import LABEL_HEADER
from tests.support import free_port, wait_until

FEED_PATH = "/api/v2/import/products"
MIB = 1024 * 1024
# More than the simulator's 64 bytes: an import that outlasts its request, answered 202.
_FEED_BODY = json.dumps([{"sku": n, "title": f"product {n}"} for n in range(40)]).encode()


@dataclass(frozen=True)
class Outcome:
    """One upload as the feed job saw it: the status (None: no answer) and the id of a 202."""

    feed: str
    status: int | None
    import_id: str | None
    error: str | None
    seconds: float


def push_feed(port: int, feed: str, timeout: float = 60.0) -> Outcome:
    """One small import through the proxy at ``port``, labelled ``feed``."""
    began = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(
            "POST",
            FEED_PATH + "?name=nightly",
            body=_FEED_BODY,
            headers={
                "Api-Key": SIM_KEY,
                LABEL_HEADER: feed,
                "Content-Type": "application/json",
                "Connection": "close",
            },
        )
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        return Outcome(feed, None, None, f"{type(exc).__name__}: {exc}", time.monotonic() - began)
    finally:
        conn.close()
    import_id = None
    if response.status == 202:
        import_id = str(json.loads(body)["id"])
    return Outcome(feed, response.status, import_id, None, time.monotonic() - began)


class FeedJob:
    """Uploads one feed after another from a thread until stopped, as a nightly job would."""

    def __init__(self, port: int, feed: str, pause: float = 0.1) -> None:
        self._port = port
        self._feed = feed
        self._pause = pause
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._outcomes: list[Outcome] = []
        self._thread = threading.Thread(target=self._run, name=f"feed-{feed}", daemon=True)
        self._thread.start()

    @property
    def outcomes(self) -> list[Outcome]:
        with self._lock:
            return list(self._outcomes)

    def _run(self) -> None:
        while not self._stopping.is_set():
            outcome = push_feed(self._port, self._feed)
            with self._lock:
                self._outcomes.append(outcome)
            self._stopping.wait(self._pause)

    def stop(self) -> list[Outcome]:
        self._stopping.set()
        self._thread.join(90)
        assert not self._thread.is_alive(), "the feed job is stuck in an upload"
        return self.outcomes


def accepted_ids(outcomes: list[Outcome]) -> list[str]:
    return [o.import_id for o in outcomes if o.import_id is not None]


ExporterStart = Callable[..., ExporterProcess]


@dataclass
class RegistrationTarget:
    """Where the proxy registers: an exporter started (and restarted) on one fixed port and
    one store, so that ids it took before a SIGKILL are still there after."""

    start_process: ExporterStart
    elevate_url: str
    store: Path
    port: int = field(default_factory=free_port)
    current: ExporterProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ExporterProcess:
        self.current = self.start_process(
            "--elevate.base-url",
            self.elevate_url,
            "--web.enable-registration",
            "--storage.path",
            str(self.store),
            "--web.listen-address",
            f"127.0.0.1:{self.port}",
            env={"ELEVATE_API_KEY": SIM_KEY},
            wait=False,
        )
        self.current.wait_ready(timeout=40)
        return self.current

    def kill(self) -> None:
        assert self.current is not None
        self.current.process.kill()
        self.current.process.wait(30)

    def proxied(self) -> list[dict[str, Any]]:
        """Every import the exporter has from a proxy, as its API lists them."""
        assert self.current is not None
        status, text = self.current.get("/api/v1/imports?source=proxy&limit=1000")
        assert status == 200, text
        document = json.loads(text)
        imports: list[dict[str, Any]] = document["imports"]
        assert document["total"] == len(imports), "more than one page: the test sent too many"
        return imports

    def wait_for(self, ids: list[str], timeout: float = 60.0) -> list[dict[str, Any]]:
        """The exporter's proxied imports once every one of ``ids`` is among them."""
        wanted = set(ids)

        def all_there() -> list[dict[str, Any]] | None:
            listed = self.proxied()
            return listed if wanted <= {record["id"] for record in listed} else None

        return wait_until(all_there, timeout=timeout, interval=0.25, what=f"{len(wanted)} ids")


def assert_each_once(listed: list[dict[str, Any]], ids: list[str]) -> None:
    """The exporter lists exactly ``ids``, each once, as a proxy's product imports."""
    seen = [record["id"] for record in listed]
    assert sorted(seen) == sorted(ids)
    assert len(set(ids)) == len(ids), "the simulator gave an id twice"
    for record in listed:
        assert record["source"] == "proxy"
        assert record["type"] == "PRODUCTS"
        assert record["labels"]["path"] == FEED_PATH
        assert record["labels"]["name"] == "nightly"
        assert record["labels"]["feed_name"]


class Halves:
    """One large upload sent in two halves on one connection, so that something can
    happen while it is in flight. Blocks are made up on the fly, no two alike."""

    def __init__(self, port: int, mebibytes: int, feed: str) -> None:
        assert mebibytes % 2 == 0
        self._blocks = mebibytes
        self._sent = 0
        self._digest = hashlib.sha256()
        self._base = bytearray(random.Random(11).randbytes(MIB))
        self.size = mebibytes * MIB
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self._conn.putrequest("POST", FEED_PATH + "?name=big")
        for name, value in {
            "Api-Key": SIM_KEY,
            LABEL_HEADER: feed,
            "Content-Length": str(self.size),
        }.items():
            self._conn.putheader(name, value)
        self._conn.endheaders()

    def send_half(self) -> None:
        for _ in range(self._blocks // 2):
            self._base[:8] = self._sent.to_bytes(8, "big")
            self._digest.update(self._base)
            self._conn.send(self._base)
            self._sent += 1

    @property
    def sha256(self) -> str:
        digest: str = self._digest.hexdigest()
        return digest

    def answer(self) -> tuple[int, bytes]:
        response = self._conn.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        self._conn.close()


def new_upload_outcome(port: int) -> str:
    """How the proxy treats a new connection: ``refused``, or the status of its answer, or
    ``no answer: ...`` when it took the connection and then said nothing."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass
    except ConnectionRefusedError:
        return "refused"
    outcome = push_feed(port, "late", timeout=15)
    if outcome.status is None:
        if outcome.error and "ConnectionRefused" in outcome.error:
            return "refused"
        return f"no answer: {outcome.error}"
    return str(outcome.status)


class HostileRegistry:
    """A registration API that misbehaves: reads each request whole (head and
    Content-Length body), then ``garbage`` (a 200 maintenance page in HTML), ``trickle``
    (that page one byte a second, never finished in time) or ``unauthorized`` (the 401 an
    exporter gives wrong credentials)."""

    def __init__(self, mode: str) -> None:
        assert mode in ("garbage", "trickle", "unauthorized")
        self.mode = mode
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self.requests: list[str] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(30)
            try:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(body) < length:
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    body += chunk
                with self._lock:
                    self.requests.append(head.split(b"\r\n")[0].decode("latin-1"))
                page = b"<html><body><h1>Down for maintenance</h1></body></html>"
                answer = (
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                    + f"Content-Length: {len(page)}\r\n\r\n".encode()
                    + page
                )
                if self.mode == "unauthorized":
                    refusal = b'{"error": "unauthorized"}'
                    answer = (
                        b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
                        b'WWW-Authenticate: Basic realm="elevate-import-exporter"\r\n'
                        + f"Content-Length: {len(refusal)}\r\n\r\n".encode()
                        + refusal
                    )
                if self.mode in ("garbage", "unauthorized"):
                    connection.sendall(answer)
                    return
                for index in range(len(answer)):
                    if self._closing.wait(1.0):
                        return
                    connection.sendall(answer[index : index + 1])
            except (OSError, ValueError):  # a client gone, or a Content-Length not a number
                return

    def close(self) -> None:
        self._closing.set()
        self._thread.join(10)
        self._listener.close()
