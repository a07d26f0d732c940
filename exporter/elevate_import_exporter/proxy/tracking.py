"""What the import proxy learns from what passes through it: which requests are imports,
which answers hold an import id, and the labels an import tracked that way gets.

Elevate 3's Web API v2 takes imports at ``POST /api/v2/import/{type}`` (products, ads,
synonyms, configuration, panels) and Elevate 4's Admin API at
``POST /api/admin/v4/import/data`` (v3 alike). An import that outlasts the request is
answered ``202 Accepted`` with the import's information, its id among it: a string in
v2 (``{"id": "5537431447739019570", "status": "WAITING", "type": "PRODUCTS"}``), a JSON
number in the Admin API, exact beyond 2^53. One that finishes in time is answered 2xx.
"""

from __future__ import annotations

import json
import logging
import re
import zlib
from collections.abc import Callable
from urllib.parse import parse_qsl

from elevate_import_exporter.core.model import (
    FINAL_STATUSES,
    is_valid_import_id,
    one_line,
    safe_text,
)
from elevate_import_exporter.core.records import FieldError, Labels, checked_text

log = logging.getLogger(__name__)

# The most of an answer's body read for an id; a longer body is forwarded, not parsed.
MAX_PARSED_BYTES = 64 * 1024
MAX_LABEL_CHARS = 128
MAX_TYPE_CHARS = 64
_MAX_NUMERIC_ID_DIGITS = 64
# Text from an answer read for secrets at most (the type is cut after the redaction, so
# that a cut cannot leave part of a key behind).
_MAX_REDACTED_CHARS = 4096

Redact = Callable[[str], str]


def _unchanged(text: str) -> str:
    return text


# Types of the import paths; other types (from answers) are "OTHER" in metric labels, so
# that neither a client nor an answer can make series without end.
IMPORT_TYPES = ("PRODUCTS", "ADS", "SYNONYMS", "CONFIGURATION", "PANELS", "DATA")
OTHER_TYPE = "OTHER"
_IMPORT_PATH = re.compile(
    r"/api/(?:v2/import/(products|ads|synonyms|configuration|panels)|admin/v[34]/import/(data))/?"
)
# How an import request ended, for elevate_import_proxy_imports_total{outcome}: accepted
# (202), finished (2xx, or the final status a 2xx body names in lower case), refused
# (4xx), failed (5xx, or Elevate not reached), cut (the client left mid-request).
OUTCOMES = ("accepted", "finished", "success", "failure", "aborted", "refused", "failed", "cut")


def import_type(path: str) -> str | None:
    """The type of an import request to ``path`` (upper case); None for any other path."""
    match = _IMPORT_PATH.fullmatch(path)
    if match is None:
        return None
    return (match.group(1) or match.group(2)).upper()


def metric_type(kind: str) -> str:
    """``kind`` as a metric label: one of :data:`IMPORT_TYPES` or ``OTHER``."""
    return kind if kind in IMPORT_TYPES else OTHER_TYPE


def outcome(code: int, document: dict[str, object] | None) -> str:
    """How an import request answered ``code`` ended (see :data:`OUTCOMES`)."""
    if code == 499:  # the proxy's code for a client that left mid-request
        return "cut"
    if code == 202:
        return "accepted"
    if 200 <= code < 300:
        status = document.get("status") if document is not None else None
        return (
            status.lower() if status in FINAL_STATUSES and isinstance(status, str) else "finished"
        )
    if 400 <= code < 500:
        return "refused"
    return "failed"


def answer_document(body: bytes, content_encoding: str) -> dict[str, object] | None:
    """The JSON object of an answer's (small) body, decompressed if gzip or deflate; None
    if it is something else or larger than :data:`MAX_PARSED_BYTES` once decompressed."""
    if len(body) > MAX_PARSED_BYTES:
        return None
    coding = content_encoding.strip().lower()
    if coding in ("gzip", "x-gzip", "deflate"):
        try:
            inflate = zlib.decompressobj(wbits=47)  # gzip or zlib, told by the header
            body = inflate.decompress(body, MAX_PARSED_BYTES + 1)
        except zlib.error:
            return None
        if len(body) > MAX_PARSED_BYTES:
            return None
    elif coding not in ("", "identity"):
        return None
    try:
        # Integers stay Python ints: an Admin API id beyond 2^53 keeps every digit.
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def accepted_import(
    document: dict[str, object],
    valid_id: Callable[[str], bool] = is_valid_import_id,
    redact: Redact = _unchanged,
) -> tuple[str, str] | None:
    """The id and the type (``""`` if none) of the import a 202 body describes, or None
    if it holds no usable id (a float, a bool, text that is no import id): one that
    ``valid_id``, the rule of the configured API's ids, takes. The type is ``redact``-ed
    (the request's own secrets), then made one line of at most 64 characters."""
    raw = document.get("id")
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        if raw < 0:
            return None
        import_id = str(raw)
    elif isinstance(raw, str):
        import_id = raw
    else:
        return None
    if len(import_id) > _MAX_NUMERIC_ID_DIGITS or not valid_id(import_id):
        return None
    kind = document.get("type")
    if not isinstance(kind, str):
        return import_id, ""
    # Elevate's text, not the client's: made fit rather than refused (as the registration
    # API would refuse it), so that the import is tracked all the same.
    return import_id, one_line(safe_text(redact(kind[:_MAX_REDACTED_CHARS]), MAX_TYPE_CHARS))


def label_key(header: str) -> str:
    """The label that the value of request header ``header`` goes under: ``X-Feed-Name``
    gives ``feed_name`` (lower case, without ``x-``, other characters as ``_``)."""
    name = header.lower()
    name = name.removeprefix("x-")
    key = re.sub(r"[^a-z0-9_]", "_", name)[:64]
    return key if re.match(r"[a-z_]", key) else f"_{key}"[:64]


def labels(
    path: str,
    query: str,
    header_key: str,
    header_value: str | None,
    redact: Redact = _unchanged,
) -> Labels:
    """The labels of an import tracked from a request to ``path?query``: ``path``, the
    import's ``name`` (the v2 query parameter) if given, and the label header's value.

    Values are ``redact``-ed and cut to 128 characters as before; then the registration
    API's rule for label values holds for them too (one rule for both). A value that
    breaks it (a control character: ``?name=a%0Ab``) is left out, not cleaned: the
    registration API refuses such text rather than repair it, and so does this; but the
    import, started at Elevate already, is tracked all the same with its other labels.
    """
    found = {"path": path}
    names = [value for key, value in parse_qsl(query, keep_blank_values=False) if key == "name"]
    if names:
        found["name"] = names[0]
    if header_key and header_value:
        found[header_key] = header_value
    kept = []
    for key, value in found.items():
        text = redact(value)[:MAX_LABEL_CHARS]
        try:
            kept.append((key, checked_text(text, MAX_LABEL_CHARS, f"labels.{key}")))
        except FieldError as exc:
            log.warning("proxy: the label %s of an import from %s is left out: %s", key, path, exc)
    return tuple(sorted(kept))
