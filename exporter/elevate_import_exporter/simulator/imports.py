"""The simulated import endpoints, a small subset of Elevate's:

- Web API v2 (``--api web-v2``): ``POST`` or ``PUT /api/v2/import/{type}`` with ``type``
  one of products, ads, synonyms, configuration, panels (the query, ``?name=...`` say,
  is ignored);
- Admin API (``--api admin-v4`` / ``admin-v3``): ``POST`` or ``PUT
  /api/admin/v4/import/data`` (``v3`` alike).

The body is read as it arrives (Content-Length or chunked) and dropped, only counted and
hashed (SHA-256), so that a test can compare what arrived with what was sent. A body of
more than ``sync_bytes`` bytes (64 unless changed) is an import that outlasts the request:
``202 Accepted`` with a fresh id, which the status endpoint knows from then on and which
moves through ``steps`` (WAITING 2 s, IN_PROGRESS 6 s, then SUCCESS, unless changed). A
smaller body finishes within the request: ``204 No Content`` (v2) or ``200`` with status
SUCCESS (Admin API). A wrong ``Api-Key`` gets 403, after the body has been read. A body
that ends early (the connection closed) gets nothing, and is recorded as incomplete.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from io import BufferedIOBase
from typing import TYPE_CHECKING

from elevate_import_exporter.simulator.scripts import ScriptedImport, Step

if TYPE_CHECKING:
    from elevate_import_exporter.simulator.server import Simulator

Answer = tuple[int, bytes, bytes]

# The endpoints in a few lines, for the simulate command's help.
IMPORT_ENDPOINTS = """Imports (body read, counted, hashed and dropped):
  web-v2:   POST|PUT /api/v2/import/{products,ads,synonyms,configuration,panels}
  admin-*:  POST|PUT /api/admin/v4/import/data (v3 alike)
over 64 bytes: 202 with a fresh id (WAITING 2 s, IN_PROGRESS 6 s, SUCCESS), which
the status endpoint then knows; else finished at once: 204 (web-v2), 200 (admin-*)."""

V2_IMPORT_TYPES = ("products", "ads", "synonyms", "configuration", "panels")
_V2_PATH = re.compile(r"/api/v2/import/(" + "|".join(V2_IMPORT_TYPES) + ")")
_ADMIN_PATHS = {
    "admin-v4": "/api/admin/v4/import/data",
    "admin-v3": "/api/admin/v3/import/data",
}
DEFAULT_SYNC_BYTES = 64
DEFAULT_STEPS = (Step("WAITING", seconds=2), Step("IN_PROGRESS", seconds=6), Step("SUCCESS"))
_JSON = b"application/json"
_PIECE = 256 * 1024
_CLUSTER_MISSING = b'{"error": "Not Found", "message": "Cluster not found."}'


@dataclass(frozen=True)
class Upload:
    """One import request as the simulator received it. ``headers``: the request's
    header fields by lower-case name, without the Api-Key."""

    method: str
    path: str
    headers: dict[str, str]
    bytes: int
    sha256: str
    complete: bool
    status: int | None = None  # what it was answered; None: nothing (the body ended early)
    import_id: str | None = None


def import_kind(api: str, path: str) -> str | None:
    """The type of an import to ``path`` in ``api`` (upper case), None for other paths."""
    if api in _ADMIN_PATHS:
        return "DATA" if path == _ADMIN_PATHS[api] else None
    match = _V2_PATH.fullmatch(path)
    return match.group(1).upper() if match else None


class ImportDesk:
    """Takes the simulator's imports. ``sync_bytes``, ``steps`` and ``delay`` (seconds
    before an answer) may be changed while it serves."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim
        self.sync_bytes = DEFAULT_SYNC_BYTES
        self.steps: tuple[Step, ...] = DEFAULT_STEPS
        self.delay = 0.0
        self._lock = threading.Lock()
        self._uploads: list[Upload] = []
        self._issued: set[str] = set()

    @property
    def uploads(self) -> list[Upload]:
        with self._lock:
            return list(self._uploads)

    def receive(
        self, method: str, path: str, fields: dict[str, str], body: BufferedIOBase
    ) -> Answer | None:
        """Read the body of an import request and answer it; None if the body ended early
        or the simulator stopped meanwhile (nothing is answered then)."""
        kind = import_kind(self._sim.api, path)
        assert kind is not None
        count, digest, complete = read_body(body, fields)
        headers = {name: value for name, value in fields.items() if name != "api-key"}
        upload = Upload(method, path, headers, count, digest, complete)
        answer = None
        if complete and not (self.delay > 0 and self._sim._stopping.wait(self.delay)):
            answer, upload = self._answer(kind, fields.get("api-key"), upload)
        with self._lock:
            self._uploads.append(upload)
        return answer

    def _answer(self, kind: str, key: str | None, upload: Upload) -> tuple[Answer, Upload]:
        sim = self._sim
        if sim.cluster_missing:
            answer: Answer = (
                404,
                _JSON,
                b'{"error": "Not Found", "message": "Cluster not found."}',
            )
        elif key != sim.api_key:
            answer = (403, _JSON, b'{"error": "Forbidden", "message": "Incorrect Api-Key."}')
        elif upload.bytes <= self.sync_bytes:
            answer = self._finished()
        else:
            import_id = self._fresh_id()
            imported_type = None if sim.api in _ADMIN_PATHS else kind
            sim.add_import(ScriptedImport(import_id, self.steps, imported_type))
            answer = (202, _JSON, self._information(import_id, kind, "WAITING"))
            return answer, _with(upload, answer[0], import_id)
        return answer, _with(upload, answer[0], None)

    def _finished(self) -> Answer:
        if self._sim.api in _ADMIN_PATHS:
            return 200, _JSON, self._information(self._fresh_id(), "", "SUCCESS")
        return 204, b"", b""

    def _information(self, import_id: str, kind: str, status: str) -> bytes:
        if self._sim.api in _ADMIN_PATHS:
            # int() keeps every digit, and json writes it back as it is: beyond 2^53 too.
            return json.dumps({"id": int(import_id), "reason": None, "status": status}).encode()
        return json.dumps({"id": import_id, "status": status, "type": kind}).encode()

    def _fresh_id(self) -> str:
        with self._lock:
            while True:
                # 19 digits, as Elevate's ids; as an Admin API number, beyond 2^53.
                import_id = str(self._sim._random.randrange(10**18, 10**19))
                if import_id not in self._issued:
                    self._issued.add(import_id)
                    return import_id


def _with(upload: Upload, status: int, import_id: str | None) -> Upload:
    return Upload(
        upload.method,
        upload.path,
        upload.headers,
        upload.bytes,
        upload.sha256,
        upload.complete,
        status,
        import_id,
    )


def read_body(body: BufferedIOBase, fields: dict[str, str]) -> tuple[int, str, bool]:
    """Read a request body to its end and drop it: (bytes, SHA-256 hex, whether whole)."""
    digest = hashlib.sha256()
    count = 0
    buffer = bytearray(_PIECE)
    view = memoryview(buffer)

    def take(size: int) -> bool:
        nonlocal count
        while size:
            got = body.readinto(view[: min(size, _PIECE)])
            if not got:
                return False
            digest.update(view[:got])
            count += got
            size -= got
        return True

    try:
        if "chunked" in fields.get("transfer-encoding", "").lower():
            complete = _chunks(body, take)
        else:
            complete = take(int(fields.get("content-length") or 0))
    except (OSError, ValueError):
        complete = False
    return count, digest.hexdigest(), complete


def _chunks(body: BufferedIOBase, take: Callable[[int], bool]) -> bool:
    while True:
        line = body.readline(1024)
        if not line.endswith(b"\n"):
            return False
        size = int(line.split(b";")[0].strip(), 16)
        if size == 0:
            while (trailer := body.readline(1024)) not in (b"\r\n", b"\n"):
                if not trailer:
                    return False
            return True
        if not take(size) or body.readline(3) not in (b"\r\n", b"\n"):
            return False
