"""What the exporter remembers of an import, and what a client hands over to register one.

Plain values, shared by the store that keeps them, the catalog that keeps them current,
the HTTP API that shows them and the proxy that registers imports it saw.
"""

from __future__ import annotations

import functools
import json
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from elevate_import_exporter.core.model import (
    FINAL_STATUSES,
    ID_RULE,
    MAX_STATUS_CHARS,
    is_valid_import_id,
    one_line,
    safe_text,
)

# Where a tracked id came from; the order is the order of precedence when several hold it.
SOURCES = ("flag", "file", "api", "proxy")
# Sources whose ids the exporter itself adds and removes (registration, proxy).
REGISTERED_SOURCES = ("api", "proxy")

Labels = tuple[tuple[str, str], ...]  # sorted (key, value) pairs: hashable, comparable

IdRule = tuple[Callable[[str], bool], str]  # a test of an id, and its wording (model.id_rule)
ANY_ID: IdRule = (is_valid_import_id, ID_RULE)  # what every flavour's ids are a part of

# The latest time a record may hold, in Unix seconds (year 5138): a larger one is a mistake
# (milliseconds?), and pages could not show it as a date.
LATEST_TIME = 1e11
MAX_LABELS = 8
MAX_LABEL_VALUE_CHARS = 128
LABEL_NAME = re.compile(r"[a-z_][a-z0-9_]{0,63}")
LABEL_NAME_RULE = "1 to 64 characters of a-z 0-9 _, not starting with a digit"
# Control characters, and what safe_text would rewrite (lone surrogates): refused.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# No type or message the exporter keeps comes near it; a longer one was put there by hand.
_MAX_TEXT_CHARS = 4096
# What no version of the exporter let into kept text: control characters but tab and new
# line, and lone surrogates. A row holding them was damaged after it was written. What else
# safe_text rewrites today (bidi controls) is rewritten as a row is read, as it would be
# when it came in now.
_BROKEN = re.compile(r"[\ud800-\udfff\x00-\x08\x0b-\x1f\x7f-\x9f]")
_TIMES = (
    "first_seen",
    "status_since",
    "last_answer",
    "final_at",
    "retired_at",
    "started_at",
    "left_queue_at",
)


class CatalogError(Exception):
    """The store could not take a change or give an answer (disk full, I/O error, too many
    ids); nothing was changed. The message is one line, fit for a client."""


@dataclass(frozen=True, slots=True)
class Registration:
    """One import a client hands over: its id, and optionally its type, labels and when
    Elevate accepted it (``accepted_at``, Unix seconds: the 202's time, if the client knows)."""

    id: str
    type: str = ""
    labels: Labels = ()
    accepted_at: float | None = None


@dataclass(frozen=True, slots=True)
class Query:
    """Which kept imports a listing asks for, and which page of them: newest first (by
    ``coalesce(final_at, first_seen)``, which ``since`` compares), ``finished`` meaning final
    or retired (False: neither)."""

    status: str | None = None
    type: str | None = None
    source: str | None = None
    since: float | None = None
    finished: bool | None = None
    retired: bool | None = None
    limit: int = 100
    offset: int = 0


@dataclass(frozen=True, slots=True)
class ImportRecord:
    """Everything kept of one import, live or retired; times are Unix seconds.

    ``type`` is the type given at registration until Elevate answers, then the answer's.
    ``status``/``message`` are those of the last answer (None: never answered).
    ``final_at``: when it reached a final status. ``retired_at``: when it left the metrics.
    ``started_at``: when Elevate accepted it (the proxy's 202, a registration's
    ``accepted_at``), if known. ``left_queue_at``: the first poll that saw it neither
    WAITING, BLOCKED nor NOT_FOUND.
    """

    id: str
    source: str
    first_seen: float
    type: str = ""
    labels: Labels = ()
    status: str | None = None
    message: str = ""
    status_since: float | None = None
    last_answer: float | None = None
    final_at: float | None = None
    retired_at: float | None = None
    started_at: float | None = None
    left_queue_at: float | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def retired(self) -> bool:
        return self.retired_at is not None

    @property
    def start(self) -> float:
        """When the import began, as well as the exporter knows: started_at, else first seen."""
        return self.first_seen if self.started_at is None else self.started_at

    @property
    def duration(self) -> float | None:
        """Seconds from the start (started_at when known, else first seen) to final; None
        while not final."""
        return None if self.final_at is None else max(0.0, self.final_at - self.start)


# -- the rules a kept value follows, wherever it comes from -------------------------------


class FieldError(ValueError):
    """A value that breaks a rule; ``field`` names it (``labels.feed``, ``first_seen``)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def checked_labels(value: Any, field: str = "labels") -> Labels:
    """Labels from a decoded JSON value: an object of at most 8 names and text values.

    One rule for a registration and a stored row. Raises :class:`FieldError`.
    """
    if not isinstance(value, dict):
        raise FieldError("labels must be an object of strings", field)
    if len(value) > MAX_LABELS:
        raise FieldError(f"at most {MAX_LABELS} labels, got {len(value)}", field)
    for name in value:
        if LABEL_NAME.fullmatch(name) is None:
            shown = shown_text(name)
            raise FieldError(f"label name {shown} must be {LABEL_NAME_RULE}", f"{field}.{shown}")
    return tuple(
        sorted(
            (name, checked_text(text, MAX_LABEL_VALUE_CHARS, f"{field}.{name}"))
            for name, text in value.items()
        )
    )


def checked_text(value: Any, limit: int, field: str) -> str:
    """``value`` if it is a string of at most ``limit`` characters without control
    characters; :class:`FieldError` otherwise."""
    if not isinstance(value, str):
        raise FieldError(f"{field} must be a string", field)
    if len(value) > limit:
        raise FieldError(f"{field} must be at most {limit} characters", field)
    if CONTROL.search(value) or safe_text(value) != value:
        raise FieldError(f"{field} must not contain control characters", field)
    return value


def shown_text(text: str) -> str:
    """Text from outside, fit to name in a one-line error."""
    return one_line(safe_text(text, 64)) or '""'


def record_of_row(values: dict[str, Any], id_rule: IdRule) -> ImportRecord:
    """The record a stored row holds, checked column by column: an id that ``id_rule``
    takes, a known source, times that are finite Unix seconds from 1970 to
    :data:`LATEST_TIME`, labels by :func:`checked_labels` (as JSON text), safe text.

    Raises :class:`FieldError` naming the first column no record can hold; its message
    tells the value's kind, never the value (a hand-edited row may hold a secret).
    ``values`` (the row by column name) is used up.
    """
    valid_id, rule = id_rule
    if not isinstance(values["id"], str) or not valid_id(values["id"]):
        raise FieldError(f"holds {kind_of(values['id'])}, not an import id ({rule})", "id")
    if values["source"] not in SOURCES:
        problem = f"holds {kind_of(values['source'])}, not one of {', '.join(SOURCES)}"
        raise FieldError(problem, "source")
    for name in _TIMES:
        values[name] = _time(name, values[name], required=name == "first_seen")
    if values["status"] is not None:
        values["status"] = _text("status", values["status"], MAX_STATUS_CHARS, empty=False)
    values["type"] = _text("type", values["type"], _MAX_TEXT_CHARS)
    values["message"] = _text("message", values["message"], _MAX_TEXT_CHARS)
    if not isinstance(values["labels"], str):
        raise FieldError(f"holds {kind_of(values['labels'])}, not JSON text", "labels")
    values["labels"] = stored_labels(values["labels"])
    for name in ("source", "type", "status"):  # few values in many rows: one string each
        values[name] = values[name] and sys.intern(values[name])
    return ImportRecord(**values)


def damage_text(import_id: object, problem: FieldError) -> str:
    """What is wrong with a stored row, for a log line: its id quoted, escaped and cut (a
    BLOB in SQL's x'..' form), the column and why."""
    if isinstance(import_id, bytes):
        shown = f"x'{import_id[:32].hex()}'" + ("..." if len(import_id) > 32 else "")
    else:
        shown = ascii(str(import_id)[:64]) + ("..." if len(str(import_id)) > 64 else "")
    return f"id {shown}: column {problem.field} {problem.message}"


@functools.lru_cache(maxsize=1024)  # most rows share a few sets of labels
def stored_labels(text: str) -> Labels:
    """The labels of a row's JSON text; :class:`FieldError` if they break the rule."""
    try:
        document = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_constant)
    except (ValueError, RecursionError):
        raise FieldError("is not JSON", "labels") from None
    if isinstance(document, dict):  # see _BROKEN
        document = {k: _safe(v) if isinstance(v, str) else v for k, v in document.items()}
    try:
        return checked_labels(document)
    except FieldError as exc:
        raise FieldError(f"breaks the rule of labels: {exc.message}", "labels") from None


def kind_of(value: object) -> str:
    """A stored value's SQLite type, in words: never the text, which may hold a secret."""
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return "a BLOB"
    if isinstance(value, int | float):
        return f"the number {value:g}"
    if isinstance(value, str):
        return f"TEXT of {len(value)} characters"
    return type(value).__name__


def _time(name: str, value: object, *, required: bool) -> float | None:
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldError(f"holds {kind_of(value)}, not a time in Unix seconds", name)
    if not (math.isfinite(value) and 0 <= value <= LATEST_TIME):
        raise FieldError(f"holds {value:g}, not a time from 1970 to {LATEST_TIME:g}", name)
    return float(value)


def _text(name: str, value: object, limit: int, *, empty: bool = True) -> str:
    if not isinstance(value, str) or not (empty or value):
        raise FieldError(f"holds {kind_of(value)}, not text", name)
    if len(value) > limit:
        raise FieldError(f"holds {len(value)} characters, more than {limit}", name)
    if _BROKEN.search(value):
        raise FieldError("holds control characters or broken UTF-16", name)
    return safe_text(value)


def _safe(text: str) -> str:
    return text if _BROKEN.search(text) else safe_text(text)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise ValueError("a key is given twice")
    return found


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
