"""What the answers of every flavour share: a JSON object about one import.

Only a JSON object with a status string is import information. An id in it, a string
(Web API v2) or a JSON number (Admin API, possibly beyond 2^53), must be the one asked
for; the import is always reported under the id asked for.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from elevate_import_exporter.core.model import MAX_STATUS_CHARS, ImportInfo, snippet


def import_info(body: bytes, import_id: str, message_keys: Sequence[str]) -> ImportInfo:
    """Import information from a 2xx body, or ``ValueError`` saying why it is none.

    The message is the first string among ``message_keys`` (v2 ``message``, Admin
    ``reason``); a missing or null one is ``""``. A missing ``type`` is ``""``.
    """
    data = _json_object(body)
    status = data.get("status")
    if not isinstance(status, str) or not 0 < len(status) <= MAX_STATUS_CHARS:
        raise ValueError(f"no status string of 1 to {MAX_STATUS_CHARS} characters in the body")
    _check_id(data.get("id"), import_id)
    kind = data.get("type")
    if kind is not None and not isinstance(kind, str):
        raise ValueError(f"the type in the body is a {type(kind).__name__}")
    messages = (data.get(key) for key in message_keys)
    return ImportInfo(
        id=import_id,
        status=status,
        type=kind or "",
        message=next((m for m in messages if isinstance(m, str)), ""),
    )


def _json_object(body: bytes) -> dict[str, object]:
    try:
        # Integers stay Python ints, exact at any size; only fractions become floats,
        # and a float id is refused below rather than rounded into another id.
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise ValueError(f"body is not JSON: {snippet(body)}") from None
    if not isinstance(data, dict):
        raise ValueError(f"body is JSON but not an object: {snippet(body)}")
    return data


def _check_id(answered: object, import_id: str) -> None:
    if answered is None:
        return
    if isinstance(answered, bool) or not isinstance(answered, str | int):
        raise ValueError(f"the id in the body is a {type(answered).__name__}")
    if isinstance(answered, int):
        # A number answers the digits asked for, leading zeros or not.
        same = import_id.isascii() and import_id.isdigit() and int(import_id) == answered
    else:
        same = answered == import_id
    if not same:
        raise ValueError(f"the body is about id {str(answered)[:80]!r}, not the one asked for")
