"""A simulated Voyado Elevate Web API v2 import-status endpoint.

It serves scripted imports whose status moves on with elapsed time or with the
number of queries answered, and it can misbehave on demand (5xx answers, hangs,
non-JSON bodies, random 503s, a missing cluster), so the exporter can be tried,
tested and benchmarked without a real Elevate cluster. Standard library only:
the ``simulate`` and ``demo`` commands wrap it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import socket
import socketserver
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import formatdate
from http.client import HTTPMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote

log = logging.getLogger(__name__)

STATUS_PATH = "/api/v2/import/status/"
FINAL_STATUSES = frozenset({"SUCCESS", "FAILURE", "ABORTED"})

# A 19-digit id that no demo import uses, so the simulator answers NOT_FOUND for it.
DEMO_UNKNOWN_ID = "9004417265813270626"


class ScenarioError(ValueError):
    """A scenario file or a scripted step is malformed; the message names the problem."""


@dataclass(frozen=True)
class Step:
    """One status an import holds, for ``seconds`` or for ``queries`` answered queries."""

    status: str
    seconds: float | None = None
    queries: int | None = None
    message: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.status, str) or not self.status:
            raise ScenarioError(f"status must be a non-empty string, got {self.status!r}")
        if self.seconds is not None and self.queries is not None:
            raise ScenarioError(f"step {self.status}: give seconds or queries, not both")
        seconds: Any = self.seconds
        if seconds is not None and (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not math.isfinite(seconds)
            or seconds <= 0
        ):
            raise ScenarioError(
                f"step {self.status}: seconds must be a number > 0, got {seconds!r}"
            )
        queries: Any = self.queries
        if queries is not None and (
            isinstance(queries, bool) or not isinstance(queries, int) or queries <= 0
        ):
            raise ScenarioError(
                f"step {self.status}: queries must be an integer > 0, got {queries!r}"
            )
        if self.message is not None and not isinstance(self.message, str):
            raise ScenarioError(f"step {self.status}: message must be a string")


@dataclass(frozen=True)
class ScriptedImport:
    """An import id and the steps it goes through; the last step holds forever."""

    id: str
    steps: tuple[Step, ...]
    type: str | None = "PRODUCTS"

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ScenarioError(f"import id must be a non-empty string, got {self.id!r}")
        # Callers often write a list; keep the value hashable and immutable anyway.
        object.__setattr__(self, "steps", tuple(self.steps))
        if not self.steps:
            raise ScenarioError(f"import {self.id}: steps must not be empty")
        if self.type is not None and not isinstance(self.type, str):
            raise ScenarioError(f"import {self.id}: type must be a string or null")


class _Progress:
    """Where one import stands in its script; advanced lazily when it is queried."""

    __slots__ = ("answered", "began", "imp", "index")

    def __init__(self, imp: ScriptedImport, began: float | None) -> None:
        self.imp = imp
        self.index = 0
        # None: the step began at the simulator's epoch (construction, then start()).
        self.began = began
        self.answered = 0

    def answer(self, now: float, epoch: float) -> Step:
        """The step in force now, counting this query as answered by it."""
        steps = self.imp.steps
        last = len(steps) - 1
        began = epoch if self.began is None else self.began
        index = self.index
        while index < last:
            seconds = steps[index].seconds
            if seconds is None or now < began + seconds:
                break
            # The next step began when this one ran out, not when we noticed.
            began += seconds
            index += 1
            self.answered = 0
        step = steps[index]
        self.answered += 1
        if index < last and step.queries is not None and self.answered >= step.queries:
            index += 1
            began = now
            self.answered = 0
        self.index = index
        self.began = began
        return step


# (HTTP status, content type, body) of an answer.
_Answer = tuple[int, bytes, bytes]

_JSON = b"application/json"
_TEXT = b"text/plain; charset=utf-8"
_HTML = b"text/html; charset=utf-8"
_REASONS = {
    200: b"OK",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}
_FORBIDDEN: _Answer = (
    403,
    _JSON,
    b'{"error": "Forbidden", "message": "The Api-Key could not be validated."}',
)
_CLUSTER_MISSING: _Answer = (
    404,
    _JSON,
    b'{"error": "Not Found", "message": "Cluster not found."}',
)
_NO_SUCH_PATH: _Answer = (404, _JSON, b'{"error": "Not Found", "message": "No such path."}')
_NOT_ALLOWED: _Answer = (
    405,
    _JSON,
    b'{"error": "Method Not Allowed", "message": "Only GET is served here."}',
)
_SERVER_ERROR: _Answer = (500, _TEXT, b"Internal Server Error: simulated failure\n")
_BUSY: _Answer = (
    503,
    _JSON,
    b'{"error": "Service Unavailable", "message": "The cluster is busy, try again later."}',
)
_GARBAGE: _Answer = (
    200,
    _HTML,
    b"<!DOCTYPE html>\n<html><head><title>Maintenance</title></head>"
    b"<body><h1>We'll be back soon</h1><p>Scheduled maintenance.</p></body></html>\n",
)
_HEALTHY: _Answer = (200, _TEXT, b"OK\n")


class Simulator:
    """The simulated API: scripted imports served over HTTP/1.1 with keep-alive.

    ``api_key``, ``latency``, ``error_rate``, ``hang_seconds``, ``fail_ids``,
    ``hang_ids``, ``garbage_ids`` and ``cluster_missing`` may be changed from
    another thread while it serves; each request reads their current values.
    """

    def __init__(
        self,
        imports: Iterable[ScriptedImport] = (),
        *,
        api_key: str = "sim-key",
        latency: float = 0.0,
        error_rate: float = 0.0,
        fail_ids: Iterable[str] = (),
        hang_ids: Iterable[str] = (),
        garbage_ids: Iterable[str] = (),
        hang_seconds: float = 30.0,
        seed: int | None = None,
    ) -> None:
        self.api_key = api_key
        self.latency = latency
        self.error_rate = error_rate
        self.fail_ids: set[str] = set(fail_ids)
        self.hang_ids: set[str] = set(hang_ids)
        self.garbage_ids: set[str] = set(garbage_ids)
        self.hang_seconds = hang_seconds
        self.cluster_missing = False
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._epoch = time.monotonic()
        self._imports: dict[str, _Progress] = {}
        for imp in imports:
            if imp.id in self._imports:
                raise ScenarioError(f"duplicate import id {imp.id}")
            self._imports[imp.id] = _Progress(imp, None)
        self._counts: dict[str, int] = {}
        self._total = 0
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._host = ""

    # -- life cycle ------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve on ``host:port`` (port 0: any free port) from a background thread."""
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._stopping.clear()
        server = _Server((host, port), self, family)
        with self._lock:
            # Scripts given at construction run from the moment the API is reachable.
            self._epoch = time.monotonic()
        self._server = server
        self._host = host
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="elevate-simulator",
            daemon=True,
        )
        self._thread.start()
        log.info("simulated Elevate API listening on %s with %d imports", self.url, len(self))

    def stop(self) -> None:
        """Stop serving, wake hanging handlers and close open connections."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL to give the exporter, e.g. ``http://127.0.0.1:43123``."""
        if self._server is None:
            raise RuntimeError("the simulator is not running")
        port = self._server.server_address[1]
        host = self._host
        # A wildcard address is not one a client can connect to.
        if host in {"", "0.0.0.0"}:
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    def __len__(self) -> int:
        return len(self._imports)

    # -- scripts and counts ----------------------------------------------------------

    def add_import(self, imp: ScriptedImport) -> None:
        """Serve ``imp`` (replacing any import of that id); its first step begins now."""
        with self._lock:
            self._imports[imp.id] = _Progress(imp, time.monotonic())

    def requests_for(self, import_id: str) -> int:
        """Status requests received for ``import_id``, whatever they were answered."""
        with self._lock:
            return self._counts.get(import_id, 0)

    @property
    def requests_total(self) -> int:
        """All status requests received."""
        with self._lock:
            return self._total

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()
            self._total = 0

    # -- answering -------------------------------------------------------------------

    def _answer_status(self, import_id: str, api_key: str | None) -> _Answer | None:
        """The answer to a status query, or None when stop() cut it short."""
        with self._lock:
            self._total += 1
            self._counts[import_id] = self._counts.get(import_id, 0) + 1
        latency = self.latency
        if latency > 0 and self._stopping.wait(latency):
            return None
        if self.cluster_missing:
            return _CLUSTER_MISSING
        if api_key != self.api_key:
            return _FORBIDDEN
        if import_id in self.fail_ids:
            return _SERVER_ERROR
        if import_id in self.hang_ids:
            if self._stopping.wait(self.hang_seconds):
                return None
        elif import_id in self.garbage_ids:
            return _GARBAGE
        elif self.error_rate > 0 and self._random.random() < self.error_rate:
            return _BUSY
        return 200, _JSON, self._status_body(import_id)

    def _status_body(self, import_id: str) -> bytes:
        with self._lock:
            progress = self._imports.get(import_id)
            step = None if progress is None else progress.answer(time.monotonic(), self._epoch)
        if progress is None or step is None:
            return json.dumps({"id": import_id, "status": "NOT_FOUND"}).encode()
        doc = {"id": import_id, "status": step.status}
        if progress.imp.type is not None:
            doc["type"] = progress.imp.type
        if step.message is not None:
            doc["message"] = step.message
        return json.dumps(doc).encode()

    def _answer_get(self, path: str) -> _Answer:
        if self.cluster_missing:
            return _CLUSTER_MISSING
        if path == "/-/healthy":
            return _HEALTHY
        if path == "/-/sim/stats":
            return 200, _JSON, json.dumps({"requests_total": self.requests_total}).encode()
        return _NO_SUCH_PATH

    def _answer_post(self, path: str) -> _Answer:
        if self.cluster_missing:
            return _CLUSTER_MISSING
        if path == "/-/sim/reset":
            self.reset_counts()
            return 200, _JSON, b'{"requests_total": 0}'
        return _NOT_ALLOWED


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # Benchmarks open dozens of connections at once; the default backlog of 5 drops some.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], sim: Simulator, family: int) -> None:
        self.address_family = family
        self.sim = sim
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind also resolves the host name (socket.getfqdn), a DNS
        # lookup that can stall start-up for seconds; nothing here needs that name.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients vanishing mid-answer is normal (timeouts, stop()); no traceback on stderr.
        log.debug("connection from %s ended with an error", client_address, exc_info=True)

    def track(self, conn: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(conn)
        if self.sim._stopping.is_set():
            self._close(conn)

    def untrack(self, conn: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(conn)

    def close_connections(self) -> None:
        """End keep-alive connections, so that a stopped simulator answers nothing more."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            self._close(conn)

    @staticmethod
    def _close(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):  # already closed by the client
            conn.shutdown(socket.SHUT_RDWR)


_date_cache: tuple[int, bytes] = (0, b"")


def _http_date() -> bytes:
    # Formatting the date costs more than the rest of an answer; it changes once a second.
    global _date_cache
    now = int(time.time())
    cached = _date_cache
    if cached[0] != now:
        cached = (now, formatdate(now, usegmt=True).encode("ascii"))
        _date_cache = cached
    return cached[1]


_MAX_HEADERS = 100
_MAX_LINE = 65536
# parse_request fills _Handler.fields instead of the email.message.Message in .headers;
# this empty one stands in so that code expecting .headers finds no fields, not an error.
_NO_MESSAGE = HTTPMessage()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "elevate-simulator"
    # An idle keep-alive connection of a vanished client must not hold a thread forever.
    timeout = 300
    server: _Server
    fields: dict[str, str]  # the request's header fields by lower-case name
    raw_requestline: bytes  # set by handle_one_request before parse_request

    def setup(self) -> None:
        super().setup()
        # Without this an answer can wait ~40 ms for the client's delayed ACK (Nagle).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def parse_request(self) -> bool:
        # The standard parse_request hands every header block to the email package, which
        # cost two thirds of this server's CPU per request. Requests here are small and
        # plain, so a dictionary of lower-cased field names does. HTTP/1.0 and 1.1 only.
        self.close_connection = True
        self.request_version = "HTTP/1.0"  # how to word an error before the version is known
        self.requestline = line = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = line.split()
        if not words:
            return False
        if len(words) != 3:
            self.send_error(400, "Bad request syntax")
            return False
        command, path, version = words
        if version not in {"HTTP/1.1", "HTTP/1.0"}:
            self.send_error(505 if version.startswith("HTTP/") else 400, "Unsupported version")
            return False
        self.command, self.path, self.request_version = command, path, version
        fields: dict[str, str] = {}
        for _ in range(_MAX_HEADERS + 1):
            raw = self.rfile.readline(_MAX_LINE + 1)
            if len(raw) > _MAX_LINE:
                self.send_error(431, "Header line too long")
                return False
            if raw in {b"\r\n", b"\n", b""}:
                break
            name, colon, value = raw.decode("iso-8859-1").partition(":")
            if not colon:
                self.send_error(400, "Bad header line")
                return False
            fields[name.strip().lower()] = value.strip()
        else:
            self.send_error(431, "Too many header fields")
            return False
        self.fields = fields
        self.headers = _NO_MESSAGE
        tokens = {t.strip() for t in fields.get("connection", "").lower().split(",")}
        if version == "HTTP/1.1":
            self.close_connection = "close" in tokens
            if fields.get("expect", "").lower() == "100-continue":
                return self.handle_expect_100()
        else:
            self.close_connection = "keep-alive" not in tokens
        if command not in {"GET", "POST"}:
            # Answered here: any other method, even one http.server has never heard of.
            self._not_allowed()
            return False
        return True

    def do_GET(self) -> None:
        sim = self.server.sim
        path = self.path.partition("?")[0]
        if path.startswith(STATUS_PATH):
            raw_id = path[len(STATUS_PATH) :]
            if raw_id and "/" not in raw_id:
                answer = sim._answer_status(unquote(raw_id), self.fields.get("api-key"))
                if answer is None:
                    self.close_connection = True
                else:
                    self._send(answer)
                return
        self._send(sim._answer_get(path))

    def do_POST(self) -> None:
        self._drain_body()
        self._send(self.server.sim._answer_post(self.path.partition("?")[0]))

    def _not_allowed(self) -> None:
        self._drain_body()
        self._send(_CLUSTER_MISSING if self.server.sim.cluster_missing else _NOT_ALLOWED)

    def _drain_body(self) -> None:
        # Read any request body, or the next request on this connection would start mid-body.
        if self.fields.get("transfer-encoding"):
            self.close_connection = True
            return
        try:
            length = int(self.fields.get("content-length") or 0)
        except ValueError:
            length = -1
        if 0 <= length <= 1 << 20:
            if length:
                self.rfile.read(length)
        else:
            self.close_connection = True

    def _send(self, answer: _Answer) -> None:
        code, content_type, body = answer
        extra = b""
        if code == 405:
            extra += b"Allow: GET\r\n"
        if self.close_connection:
            extra += b"Connection: close\r\n"
        elif self.request_version == "HTTP/1.0":
            extra += b"Connection: keep-alive\r\n"
        # One write for headers and body: one TCP segment for a small answer.
        self.wfile.write(
            b"HTTP/1.1 %d %s\r\nServer: elevate-simulator\r\nDate: %s\r\n"
            b"Content-Type: %s\r\nContent-Length: %d\r\n%s\r\n%s"
            % (
                code,
                _REASONS[code],
                _http_date(),
                content_type,
                len(body),
                extra,
                b"" if self.command == "HEAD" else body,
            )
        )
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s -> %d", self.command, self.path, code)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


# -- scripts ---------------------------------------------------------------------------


def demo_imports() -> list[ScriptedImport]:
    """The imports the ``demo`` command shows: each way an import can go, within ~20 s."""
    return [
        ScriptedImport(
            "5537431447739019570",
            (Step("WAITING", seconds=4), Step("IN_PROGRESS", seconds=12), Step("SUCCESS")),
            type="PRODUCTS",
        ),
        ScriptedImport(
            "5300580843122327405",
            (
                Step("WAITING", seconds=2),
                Step("IN_PROGRESS", seconds=10),
                Step("FAILURE", message="Import failed: 3 products lack a title"),
            ),
            type="PRODUCTS",
        ),
        ScriptedImport(
            "6181926371846532231",
            (Step("WAITING", seconds=3), Step("BLOCKED", seconds=5), Step("IN_PROGRESS")),
            type="SYNONYMS",
        ),
        ScriptedImport(
            "4862914472603840115",
            (Step("IN_PROGRESS", seconds=6), Step("ABORTED")),
            type="ADS",
        ),
        ScriptedImport(
            "7215570016204483911",
            (Step("IN_PROGRESS", seconds=3), Step("SUCCESS")),
            type="PANELS",
        ),
    ]


def generated_imports(
    n: int, status: str = "IN_PROGRESS", type: str = "PRODUCTS"
) -> list[ScriptedImport]:
    """``n`` imports (ids 7000000000000000000, ...+1, ...) that hold ``status`` forever."""
    if n < 0:
        raise ScenarioError(f"the number of imports must be >= 0, got {n}")
    step = (Step(status),)
    return [ScriptedImport(str(7_000_000_000_000_000_000 + i), step, type) for i in range(n)]


_IMPORT_KEYS = frozenset({"id", "type", "steps"})
_STEP_KEYS = frozenset({"status", "seconds", "queries", "message"})


def load_scenario(path: Path) -> list[ScriptedImport]:
    """Read a JSON scenario file: a list of ``{"id", "type", "steps": [...]}`` objects."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read the scenario: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"{path}: the scenario is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ScenarioError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(doc, list):
        raise ScenarioError(f"{path}: the scenario must be a JSON list of imports")
    imports: list[ScriptedImport] = []
    seen: set[str] = set()
    for number, entry in enumerate(doc, start=1):
        imp = _parse_import(f"{path}: import #{number}", entry)
        if imp.id in seen:
            raise ScenarioError(f"{path}: import #{number}: duplicate id {imp.id}")
        seen.add(imp.id)
        imports.append(imp)
    return imports


def _parse_import(where: str, entry: object) -> ScriptedImport:
    if not isinstance(entry, dict):
        raise ScenarioError(f"{where}: must be a JSON object")
    unknown = sorted(set(entry) - _IMPORT_KEYS)
    if unknown:
        raise ScenarioError(f"{where}: unknown key {unknown[0]!r}")
    import_id = entry.get("id")
    if not isinstance(import_id, str) or not import_id:
        raise ScenarioError(f"{where}: 'id' must be a non-empty string")
    where = f"{where} (id {import_id})"
    import_type = entry.get("type", "PRODUCTS")
    if import_type is not None and not isinstance(import_type, str):
        raise ScenarioError(f"{where}: 'type' must be a string or null")
    raw_steps = entry.get("steps")
    if not isinstance(raw_steps, list):
        raise ScenarioError(f"{where}: 'steps' must be a list")
    if not raw_steps:
        raise ScenarioError(f"{where}: 'steps' must not be empty")
    steps = tuple(
        _parse_step(f"{where} step #{number}", raw) for number, raw in enumerate(raw_steps, 1)
    )
    return ScriptedImport(import_id, steps, import_type)


def _parse_step(where: str, raw: object) -> Step:
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: must be a JSON object")
    unknown = sorted(set(raw) - _STEP_KEYS)
    if unknown:
        raise ScenarioError(f"{where}: unknown key {unknown[0]!r}")
    if "status" not in raw:
        raise ScenarioError(f"{where}: 'status' is missing")
    try:
        return Step(
            status=raw["status"],
            seconds=raw.get("seconds"),
            queries=raw.get("queries"),
            message=raw.get("message"),
        )
    except ScenarioError as exc:
        raise ScenarioError(f"{where}: {exc}") from None
