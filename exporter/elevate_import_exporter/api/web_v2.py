"""Elevate 3, Web API v2: ``GET {base}/api/v2/import/status/{id}``."""

from __future__ import annotations

import json
from urllib.parse import quote

from elevate_import_exporter.model import MAX_STATUS_CHARS, ImportInfo, snippet


class WebV2:
    name = "web-v2"

    def status_url(self, base_url: str, import_id: str) -> str:
        return f"{base_url}/api/v2/import/status/{quote(import_id, safe='')}"

    def headers(self) -> dict[str, str]:
        return {"Accept": "application/json"}

    def parse(self, body: bytes, import_id: str) -> ImportInfo:
        return parse_import_info(body, import_id)


def parse_import_info(body: bytes, import_id: str) -> ImportInfo:
    """Import information from a 2xx body, or ``ValueError`` saying why it is none."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise ValueError(f"body is not JSON: {snippet(body)}") from None
    if not isinstance(data, dict):
        raise ValueError(f"body is JSON but not an object: {snippet(body)}")
    status = data.get("status")
    if not isinstance(status, str) or not 0 < len(status) <= MAX_STATUS_CHARS:
        raise ValueError(f"no status string of 1 to {MAX_STATUS_CHARS} characters in the body")
    answered_id = data.get("id")
    # v4 sends the id as a JSON number (exact: Python's json keeps big ints whole).
    if isinstance(answered_id, bool) or not isinstance(answered_id, str | int | None):
        raise ValueError(f"the id in the body is a {type(answered_id).__name__}")
    if answered_id is not None and str(answered_id) != import_id:
        raise ValueError(f"the body is about id {str(answered_id)[:80]!r}, not the one asked for")
    kind = data.get("type")
    if kind is not None and not isinstance(kind, str):
        raise ValueError(f"the type in the body is a {type(kind).__name__}")
    message = data.get("message", data.get("reason"))
    return ImportInfo(
        id=import_id,
        status=status,
        type=kind or "",
        message=message if isinstance(message, str) else "",
    )
