"""Registration bodies: JSON from a client, checked whole into :class:`Registration` values.

Strict on purpose: what a client sends ends up in the store, on the landing page and in
the API's answers, so anything this module cannot read one way only is refused, never
repaired: a byte order mark, invalid UTF-8, duplicate keys, NaN and Infinity, unknown
keys, control characters. A body is taken whole or not at all.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

from elevate_import_exporter.core.model import one_line
from elevate_import_exporter.core.records import (
    MAX_LABEL_VALUE_CHARS,
    FieldError,
    Registration,
    checked_labels,
    checked_text,
    shown_text,
)

MAX_IMPORTS = 1000  # per request
MAX_TYPE_CHARS = 64
KEYS = ("id", "type", "labels", "accepted_at")
# How far a client's clock may run ahead of ours in accepted_at: beyond it, a mistake
# (milliseconds, a date in the future), refused.
CLOCK_ALLOWANCE = 300.0
# A number longer than this is no time in Unix seconds (never converted: see _Number).
_MAX_NUMBER_CHARS = 32
JSON_TYPE = "application/json"

IdCheck = Callable[[str], bool]


class RegistrationError(ValueError):
    """A body that is not a valid registration; ``field`` names the part to blame (or None)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class _Number:
    """A JSON number, kept as its text: only accepted_at takes one, converted when short
    (no 10,000-digit ints)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text[: _MAX_NUMBER_CHARS + 1]


def content_type_error(value: str | None) -> str | None:
    """Why a ``Content-Type`` is not JSON in UTF-8 (None: it is)."""
    media, _, parameters = (value or "").partition(";")
    if media.strip().lower() != JSON_TYPE:
        return f"the body must be JSON: Content-Type: {JSON_TYPE}"
    for parameter in parameters.split(";"):
        name, _, given = parameter.partition("=")
        if name.strip().lower() == "charset" and given.strip().strip('"').lower() != "utf-8":
            return "the body must be UTF-8: charset=utf-8 or no charset"
    return None


def parse(
    body: bytes,
    valid_id: IdCheck,
    id_rule: str,
    now: float | None = None,
    redact: Callable[[str], str] = str,
) -> list[Registration]:
    """The registrations of a body: one JSON object, or an array of 1 to 1000 of them.
    ``now``: the time accepted_at must not be later than (by more than an allowance).
    ``redact``: takes the exporter's own secrets out of the type and the label values,
    which are stored and shown on /metrics and the page, where the key never is; an id
    that holds one is refused (an id is shown as given or not at all).

    Raises :class:`RegistrationError` for the first thing wrong.
    """
    document = _decode(body)
    latest = (time.time() if now is None else now) + CLOCK_ALLOWANCE
    if isinstance(document, dict):
        return [_registration(document, "", valid_id, id_rule, latest, redact)]
    if not isinstance(document, list):
        raise RegistrationError("the body must be a JSON object or an array of objects")
    if not document:
        raise RegistrationError("the array is empty: give at least one import")
    if len(document) > MAX_IMPORTS:
        raise RegistrationError(f"at most {MAX_IMPORTS} imports per request, got {len(document)}")
    return [
        _registration(item, f"[{n}].", valid_id, id_rule, latest, redact)
        for n, item in enumerate(document)
    ]


def _decode(body: bytes) -> Any:
    if not body.strip():
        raise RegistrationError("the body is empty")
    if body.startswith(b"\xef\xbb\xbf"):
        raise RegistrationError("the body starts with a byte order mark; send plain UTF-8")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RegistrationError(f"the body is not UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constant,
            parse_int=_number,
            parse_float=_number,
        )
    except RegistrationError:
        raise
    except RecursionError:
        raise RegistrationError("the body is nested too deeply") from None
    except ValueError as exc:
        raise RegistrationError(f"the body is not JSON: {one_line(str(exc))}") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise RegistrationError(f"key {_shown(key)} is given twice", _shown(key))
        found[key] = value
    return found


def _no_constant(name: str) -> Any:
    raise RegistrationError(f"{name} is not a JSON value")


def _number(text: str) -> _Number:
    return _Number(text)


def accepted_time(value: Any, latest: float, field: str = "accepted_at") -> float:
    """``value`` as Unix seconds if it is a finite number from 1970 to ``latest``;
    :class:`RegistrationError` naming ``field`` otherwise."""
    if isinstance(value, _Number):
        seconds = float(value.text) if len(value.text) <= _MAX_NUMBER_CHARS else math.inf
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise RegistrationError(f"{field} must be a number of Unix seconds", field)
    if not math.isfinite(seconds) or seconds < 0:
        raise RegistrationError(f"{field} must be Unix seconds from 1970 on", field)
    if seconds > latest:
        raise RegistrationError(
            f"{field} is later than now (more than {CLOCK_ALLOWANCE:g}s ahead): "
            "give Unix seconds, not milliseconds",
            field,
        )
    return seconds


def _registration(
    item: Any,
    where: str,
    valid_id: IdCheck,
    id_rule: str,
    latest: float,
    redact: Callable[[str], str],
) -> Registration:
    if not isinstance(item, dict):
        raise RegistrationError("each import must be a JSON object", where.rstrip(".") or None)
    unknown = [key for key in item if key not in KEYS]
    if unknown:
        field = where + _shown(unknown[0])
        raise RegistrationError(
            f"unknown key {_shown(unknown[0])}: give id, type, labels, accepted_at", field
        )
    if "id" not in item:
        raise RegistrationError("id is missing", where + "id")
    import_id = item["id"]
    if not isinstance(import_id, str) or not valid_id(import_id):
        raise RegistrationError(f"id must be a string of {id_rule}", where + "id")
    try:
        kind = checked_text(item.get("type", ""), MAX_TYPE_CHARS, where + "type")
        labels = checked_labels(item.get("labels", {}), where + "labels")
    except FieldError as exc:
        raise RegistrationError(exc.message, exc.field) from None
    if redact(import_id) != import_id:
        raise RegistrationError("id must not hold the exporter's Elevate key", where + "id")
    # Cut again: the redaction mark may be longer than what it replaced.
    kind = redact(kind)[:MAX_TYPE_CHARS]
    labels = tuple((name, redact(text)[:MAX_LABEL_VALUE_CHARS]) for name, text in labels)
    accepted = item.get("accepted_at")
    if accepted is not None or "accepted_at" in item:
        accepted = accepted_time(accepted, latest, where + "accepted_at")
    return Registration(import_id, kind, labels, accepted)


def _shown(text: str) -> str:
    """A client's key, fit to name in a one-line error."""
    return shown_text(text)
