"""Elevate 4, Admin API v4 and its deprecated v3 (end of life 2026-12-31):
``GET {base}/api/admin/v4/import/status?id={id}``.

The body is ``{"id": 5537431447739019570, "reason": null, "status": "IN_PROGRESS"}``:
the id a JSON number, ``reason`` in place of v2's ``message``, no ``type``.
"""

from __future__ import annotations

from urllib.parse import quote

from elevate_import_exporter.core.model import ImportInfo
from elevate_import_exporter.elevate.body import import_info

_MESSAGE_KEYS = ("reason",)


class _Admin:
    name: str
    version: str

    def status_url(self, base_url: str, import_id: str) -> str:
        return f"{base_url}/api/admin/{self.version}/import/status?id={quote(import_id, safe='')}"

    def headers(self) -> dict[str, str]:
        # Only gzip: the encoding the Admin API documents, not whatever the client has.
        return {"Accept": "application/json", "Accept-Encoding": "gzip"}

    def parse(self, body: bytes, import_id: str) -> ImportInfo:
        return import_info(body, import_id, _MESSAGE_KEYS)


class AdminV4(_Admin):
    name = "admin-v4"
    version = "v4"


class AdminV3(_Admin):
    name = "admin-v3"
    version = "v3"
