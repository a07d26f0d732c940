"""Elevate 3, Web API v2: ``GET {base}/api/v2/import/status/{id}``."""

from __future__ import annotations

from urllib.parse import quote

from elevate_import_exporter.core.model import ImportInfo
from elevate_import_exporter.elevate.body import import_info

# ``reason`` as well: a v4-style body from a proxy or a migrated cluster still says why.
_MESSAGE_KEYS = ("message", "reason")


class WebV2:
    name = "web-v2"

    def status_url(self, base_url: str, import_id: str) -> str:
        return f"{base_url}/api/v2/import/status/{quote(import_id, safe='')}"

    def headers(self) -> dict[str, str]:
        return {"Accept": "application/json"}

    def parse(self, body: bytes, import_id: str) -> ImportInfo:
        return import_info(body, import_id, _MESSAGE_KEYS)
