"""The simulated API's state: scripted imports, request counts, and what it answers.

It can misbehave on demand (5xx answers, hangs, non-JSON bodies, random 503s, a missing
cluster); ``httpd`` serves its answers over HTTP.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import threading
import time
from collections.abc import Iterable
from types import TracebackType

from elevate_import_exporter.simulator.httpd import (
    ADMIN_STATUS_PATHS,
    SIMULATED_APIS,
    STATUS_PATH,
    Answer,
    Server,
)
from elevate_import_exporter.simulator.imports import ImportDesk, Upload
from elevate_import_exporter.simulator.scripts import (
    ScenarioError,
    ScriptedImport,
    Step,
    _Progress,
    check_id,
    fits_api,
)

# The package's logger, not this module's: log records keep the name they had before the
# simulator was split into modules.
log = logging.getLogger("elevate_import_exporter.simulator")

_JSON = b"application/json"
_TEXT = b"text/plain; charset=utf-8"
_HTML = b"text/html; charset=utf-8"
_FORBIDDEN: Answer = (
    403,
    _JSON,
    b'{"error": "Forbidden", "message": "The Api-Key could not be validated."}',
)
_CLUSTER_MISSING: Answer = (
    404,
    _JSON,
    b'{"error": "Not Found", "message": "Cluster not found."}',
)
_NO_SUCH_PATH: Answer = (404, _JSON, b'{"error": "Not Found", "message": "No such path."}')
_BAD_ID: Answer = (
    400,
    _JSON,
    b'{"error": "Bad Request", "message": "The id parameter must be one number."}',
)
_NOT_ALLOWED: Answer = (
    405,
    _JSON,
    b'{"error": "Method Not Allowed", "message": "Only GET is served here."}',
)
_SERVER_ERROR: Answer = (500, _TEXT, b"Internal Server Error: simulated failure\n")
_BUSY: Answer = (
    503,
    _JSON,
    b'{"error": "Service Unavailable", "message": "The cluster is busy, try again later."}',
)
_GARBAGE: Answer = (
    200,
    _HTML,
    b"<!DOCTYPE html>\n<html><head><title>Maintenance</title></head>"
    b"<body><h1>We'll be back soon</h1><p>Scheduled maintenance.</p></body></html>\n",
)
_HEALTHY: Answer = (200, _TEXT, b"OK\n")


class Simulator:
    """The simulated API: scripted imports served over HTTP/1.1 with keep-alive.

    ``api`` is the flavour it speaks, one of :data:`SIMULATED_APIS`: ``web-v2`` (Elevate 3
    Web API v2), ``admin-v4`` or ``admin-v3`` (Elevate 4 Admin API: numeric ids sent as
    JSON numbers, ``reason`` for ``message``, no ``type``, gzip on request). The paths of
    the other flavours answer 404.

    ``api_key``, ``latency``, ``error_rate``, ``hang_seconds``, ``fail_ids``,
    ``hang_ids``, ``garbage_ids`` and ``cluster_missing`` may be changed from
    another thread while it serves; each request reads their current values.
    """

    def __init__(
        self,
        imports: Iterable[ScriptedImport] = (),
        *,
        api: str = "web-v2",
        api_key: str = "sim-key",
        latency: float = 0.0,
        error_rate: float = 0.0,
        fail_ids: Iterable[str] = (),
        hang_ids: Iterable[str] = (),
        garbage_ids: Iterable[str] = (),
        hang_seconds: float = 30.0,
        seed: int | None = None,
    ) -> None:
        if api not in SIMULATED_APIS:
            raise ValueError(f"unknown API flavour {api!r}: one of {', '.join(SIMULATED_APIS)}")
        self._api = api
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
            check_id(imp.id, api)
            if imp.id in self._imports:
                raise ScenarioError(f"duplicate import id {imp.id}")
            self._imports[imp.id] = _Progress(imp, None)
        self._counts: dict[str, int] = {}
        self._total = 0
        self._stopping = threading.Event()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._host = ""
        # What the import endpoints take and answer (see simulator.imports).
        self.import_desk = ImportDesk(self)

    # -- life cycle ------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve on ``host:port`` (port 0: any free port) from a background thread."""
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._stopping.clear()
        server = Server((host, port), self, family)
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

    @property
    def api(self) -> str:
        """The API flavour served, fixed for the simulator's life."""
        return self._api

    @property
    def status_path(self) -> str:
        """The path of one import's status, ``{id}`` standing for the id."""
        if self._api in ADMIN_STATUS_PATHS:
            return f"{ADMIN_STATUS_PATHS[self._api]}?id={{id}}"
        return f"{STATUS_PATH}{{id}}"

    def __len__(self) -> int:
        return len(self._imports)

    # -- scripts and counts ----------------------------------------------------------

    def add_import(self, imp: ScriptedImport) -> None:
        """Serve ``imp`` (replacing any import of that id); its first step begins now."""
        check_id(imp.id, self._api)
        with self._lock:
            self._imports[imp.id] = _Progress(imp, time.monotonic())

    @property
    def uploads(self) -> list[Upload]:
        """Every import request received so far, in order."""
        return self.import_desk.uploads

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

    def _answer_status(self, import_id: str, api_key: str | None) -> Answer | None:
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
        if self._api in ADMIN_STATUS_PATHS:
            return self._admin_answer(import_id)
        return 200, _JSON, self._status_body(import_id)

    def _status_body(self, import_id: str) -> bytes:
        found = self._step(import_id)
        if found is None:
            return json.dumps({"id": import_id, "status": "NOT_FOUND"}).encode()
        imp, step = found
        doc = {"id": import_id, "status": step.status}
        if imp.type is not None:
            doc["type"] = imp.type
        if step.message is not None:
            doc["message"] = step.message
        return json.dumps(doc).encode()

    def _admin_answer(self, import_id: str) -> Answer:
        if not fits_api(import_id, self._api):
            return _BAD_ID
        found = self._step(import_id)
        step = None if found is None else found[1]
        # int() keeps every digit, and json writes it back as it is: beyond 2^53 too.
        doc = {
            "id": int(import_id),
            "reason": None if step is None else step.message,
            "status": "NOT_FOUND" if step is None else step.status,
        }
        return 200, _JSON, json.dumps(doc).encode()

    def _step(self, import_id: str) -> tuple[ScriptedImport, Step] | None:
        """The import of this id and the step it answers with now, or None if unknown."""
        with self._lock:
            progress = self._imports.get(import_id)
            if progress is None:
                return None
            return progress.imp, progress.answer(time.monotonic(), self._epoch)

    def _answer_get(self, path: str) -> Answer:
        if self.cluster_missing:
            return _CLUSTER_MISSING
        if path == "/-/healthy":
            return _HEALTHY
        if path == "/-/sim/stats":
            return 200, _JSON, json.dumps({"requests_total": self.requests_total}).encode()
        return _NO_SUCH_PATH

    def _answer_other_method(self) -> Answer:
        return _CLUSTER_MISSING if self.cluster_missing else _NOT_ALLOWED

    def _answer_post(self, path: str) -> Answer:
        if self.cluster_missing:
            return _CLUSTER_MISSING
        if path == "/-/sim/reset":
            self.reset_counts()
            return 200, _JSON, b'{"requests_total": 0}'
        return _NOT_ALLOWED
