"""The registration API under ``/api/v1``: imports registered, listed, shown and forgotten.

Every answer is JSON, errors as ``{"error": "<one line>", "field": "<name>"}`` (``field``
where one part of the request is to blame). The contract is ``openapi.json`` beside this
module, served as it is at ``/api/v1/openapi.json``; tests fuzz the server against it.
No input gets a 500: a bug does, as ``{"error": "internal error"}``, its traceback logged.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from http import HTTPStatus
from importlib import resources
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote

from elevate_import_exporter.core.logs import MIN_SECRET_CHARS, redacting
from elevate_import_exporter.core.model import id_rule, one_line
from elevate_import_exporter.core.records import (
    SOURCES,
    CatalogError,
    ImportRecord,
    Query,
    Registration,
)
from elevate_import_exporter.lifecycle.registration import (
    RegistrationError,
    content_type_error,
    parse,
)

log = logging.getLogger(__name__)

PREFIX = "/api/v1/"
IMPORTS = "/api/v1/imports"
OPENAPI = "/api/v1/openapi.json"
JSON_TYPE = "application/json"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_OFFSET = 1_000_000_000  # far beyond any store, and within SQLite's integers
MAX_FILTER_CHARS = 64
MAX_UNIX_SECONDS = 1e11  # year 5138: a larger number is a mistake (milliseconds?)
DISABLED = "registration is disabled; start the exporter with --web.enable-registration"
UNAUTHORIZED = b'{"error": "unauthorized"}'
_ALLOW = {IMPORTS: "GET, HEAD, POST", OPENAPI: "GET, HEAD", "import": "GET, HEAD, DELETE"}
_BOOLEANS = {"true": True, "false": False}
_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)
_PARAMETERS = ("status", "type", "source", "since", "finished", "retired", "limit", "offset")
# What a registration may say of itself: the standalone proxy hands its ids over as "proxy".
_POST_PARAMETERS = ("source",)
_POST_SOURCES = ("proxy",)

IdCheck = Callable[[str], bool]


class Catalog(Protocol):
    """What the API needs of the imports the exporter knows (``catalog.Catalog``)."""

    # Replaced at every registration, count or retirement: part of a cached answer's key.
    version: object

    def register(self, registrations: Sequence[Registration], source: str) -> list[bool]: ...

    def count(self, result: str) -> None: ...

    def get(self, import_id: str) -> ImportRecord | None: ...

    def query(self, query: Query) -> tuple[list[ImportRecord], int]: ...

    def delete(self, import_id: str) -> str: ...


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # as sent, not percent-decoded
    query: str
    content_type: str | None = None
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Answer:
    status: HTTPStatus
    body: bytes = b""
    allow: str | None = None  # the Allow header of a 405


class RequestError(ValueError):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def error(status: HTTPStatus, message: str, field: str | None = None) -> Answer:
    """An error answer; ``message`` is one line."""
    document = {"error": message} if field is None else {"error": message, "field": field}
    return Answer(status, _json(document))


@cache
def openapi_document() -> bytes:
    """The API's OpenAPI document, as kept in the package."""
    return resources.files("elevate_import_exporter.site").joinpath("openapi.json").read_bytes()


class RestApi:
    """The endpoints under :data:`PREFIX` over ``catalog``.

    ``enabled``: whether POST and DELETE may change anything (``--web.enable-registration``).
    ``flavour``: the Elevate API (``--elevate.api``), whose id rule ids must follow.
    ``secrets``: the exporter's own (its Elevate key), never stored or shown from a body.
    A :class:`~elevate_import_exporter.core.records.CatalogError` (the store cannot take or give
    anything now) is a 503.
    """

    def __init__(
        self,
        catalog: Catalog,
        enabled: bool,
        flavour: str,
        secrets: Sequence[str] = (),
    ) -> None:
        self._catalog = catalog
        self._enabled = enabled
        self._secrets = secrets
        self._valid_id, self._id_rule = id_rule(flavour)

    def answer(self, request: Request) -> Answer:
        try:
            return self._route(request)
        except CatalogError as exc:
            log.warning("api %s %s: %s", request.method, request.path, exc)
            if request.method == "POST":
                self._catalog.count("failed")
            return error(HTTPStatus.SERVICE_UNAVAILABLE, one_line(str(exc)) or "unavailable")
        except Exception:
            log.exception("api %s %s failed", request.method, request.path)
            return error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")

    def refused(self, request: Request, status: int, reason: str) -> Answer:
        """The answer to a request whose framing (its size, its encoding) is refused: a
        registration refused so counts as an invalid one."""
        if request.method == "POST" and request.path == IMPORTS:
            self._catalog.count("invalid")
        return error(HTTPStatus(status), reason)

    def _route(self, request: Request) -> Answer:
        path, method = request.path, request.method
        import_id: str | None = None
        if path in (IMPORTS, OPENAPI):
            allow = _ALLOW[path]
        elif path.startswith(IMPORTS + "/"):
            import_id = self._path_id(path.removeprefix(IMPORTS + "/"))
            if import_id is None:
                return error(HTTPStatus.NOT_FOUND, f"no such import: ids are {self._id_rule}", "id")
            allow = _ALLOW["import"]
        else:
            return error(HTTPStatus.NOT_FOUND, f"no such endpoint; see {OPENAPI}")
        if method not in allow.split(", "):
            answer = error(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not allowed here")
            return Answer(answer.status, answer.body, allow)
        if path == OPENAPI:
            return Answer(HTTPStatus.OK, openapi_document())
        if import_id is not None:
            return self._delete(import_id) if method == "DELETE" else self._show(import_id)
        return self._register(request) if method == "POST" else self._list(request.query)

    def _path_id(self, segment: str) -> str | None:
        """The id a path segment names once percent-decoded; None if none can exist."""
        if "/" in segment:
            return None
        try:
            import_id = unquote(segment, errors="strict")
        except UnicodeDecodeError:
            return None
        return import_id if self._valid_id(import_id) else None

    # -- the endpoints ---------------------------------------------------------------------

    def _register(self, request: Request) -> Answer:
        if not self._enabled:
            self._catalog.count("disabled")
            return error(HTTPStatus.FORBIDDEN, DISABLED)
        try:
            source = _post_source(request.query)
        except RequestError as exc:
            self._catalog.count("invalid")
            return error(HTTPStatus.BAD_REQUEST, exc.message, exc.field)
        problem = content_type_error(request.content_type)
        if problem is not None:
            self._catalog.count("invalid")
            return error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, problem, "Content-Type")
        try:
            redact = redacting(s for s in self._secrets if len(s) >= MIN_SECRET_CHARS)
            registrations = parse(request.body, self._valid_id, self._id_rule, redact=redact)
        except RegistrationError as exc:
            self._catalog.count("invalid")
            return error(HTTPStatus.BAD_REQUEST, exc.message, exc.field)
        # An id twice in one request is registered once; its later mentions are not new.
        unique: dict[str, Registration] = {}
        for registration in registrations:
            unique.setdefault(registration.id, registration)
        made = self._catalog.register(list(unique.values()), source)
        created = dict(zip(unique, made, strict=True))
        results = [{"id": r.id, "created": created.pop(r.id, False)} for r in registrations]
        new = any(result["created"] for result in results)
        return Answer(HTTPStatus.CREATED if new else HTTPStatus.OK, _json({"imports": results}))

    def _list(self, query: str) -> Answer:
        try:
            asked = _query(query)
        except RequestError as exc:
            return error(HTTPStatus.BAD_REQUEST, exc.message, exc.field)
        records, total = self._catalog.query(asked)
        document = {
            "imports": [record_json(record) for record in records],
            "total": total,
            "limit": asked.limit,
            "offset": asked.offset,
        }
        return Answer(HTTPStatus.OK, _json(document))

    def _show(self, import_id: str) -> Answer:
        record = self._catalog.get(import_id)
        if record is None:
            return error(HTTPStatus.NOT_FOUND, f"no import {import_id} is known", "id")
        return Answer(HTTPStatus.OK, _json(record_json(record)))

    def _delete(self, import_id: str) -> Answer:
        if not self._enabled:
            return error(HTTPStatus.FORBIDDEN, DISABLED)
        outcome = self._catalog.delete(import_id)
        if outcome == "deleted":
            return Answer(HTTPStatus.NO_CONTENT)
        if outcome == "not_registered":
            return error(
                HTTPStatus.CONFLICT,
                f"import {import_id} comes from a flag or the ids file, not from a "
                "registration: remove it there",
                "id",
            )
        return error(HTTPStatus.NOT_FOUND, f"no import {import_id} is known", "id")


def record_json(record: ImportRecord) -> dict[str, Any]:
    """An import as the API shows it; times as RFC 3339 in UTC."""
    return {
        "id": record.id,
        "source": record.source,
        "type": record.type,
        "labels": dict(record.labels),
        "status": record.status,
        "message": record.message,
        "first_seen": rfc3339(record.first_seen),
        "started_at": rfc3339(record.started_at),
        "status_since": rfc3339(record.status_since),
        "last_answer": rfc3339(record.last_answer),
        "final_at": rfc3339(record.final_at),
        "retired_at": rfc3339(record.retired_at),
        "duration_seconds": record.duration,
        "retired": record.retired,
    }


def rfc3339(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    try:
        moment = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, ValueError, OSError):
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> float:
    """RFC 3339 or Unix seconds, as Prometheus' API takes them; ValueError if neither."""
    if _NUMBER.fullmatch(text):
        value = float(text)
        if 0 <= value <= MAX_UNIX_SECONDS:
            return value
        raise ValueError("out of range")
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError("not a time")
    year, month, day, hour, minute, second = (int(match.group(n)) for n in range(1, 7))
    offset = 0 if match.group(8) else int(match.group(10)) * 60 + int(match.group(11))
    if match.group(9) == "-":
        offset = -offset
    zone = timezone(timedelta(minutes=offset))
    # A leap second (:60) is the last moment of its minute here.
    moment = datetime(year, month, day, hour, minute, min(second, 59), tzinfo=zone)
    return moment.timestamp() + float(match.group(7) or 0)


def _post_source(query: str) -> str:
    """The source a registration records: ``api``, or what ``?source=`` names."""
    given = _parameters(query, _POST_PARAMETERS)
    if "source" not in given:
        return "api"
    if given["source"] not in _POST_SOURCES:
        # "api" is what no parameter means; flag and file belong to the exporter's own flags.
        raise RequestError(f"source must be {' or '.join(_POST_SOURCES)}, or not given", "source")
    return given["source"]


def _parameters(query: str, known: Sequence[str]) -> dict[str, str]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, errors="strict", max_num_fields=32)
    except UnicodeDecodeError:
        raise RequestError("the query is not UTF-8") from None
    except ValueError:
        raise RequestError("too many query parameters") from None
    given: dict[str, str] = {}
    for name, value in pairs:
        if name not in known:
            shown = one_line(name[:64])
            raise RequestError(f"unknown parameter {shown!r}: give {', '.join(known)}", shown)
        if name in given:
            raise RequestError(f"{name} is given more than once", name)
        if not value:
            raise RequestError(f"{name} is empty", name)
        given[name] = value
    return given


def _query(query: str) -> Query:
    given = _parameters(query, _PARAMETERS)
    filters: dict[str, Any] = {}
    for name in ("status", "type"):
        if name in given:
            if len(given[name]) > MAX_FILTER_CHARS:
                raise RequestError(f"{name} must be at most {MAX_FILTER_CHARS} characters", name)
            filters[name] = given[name]
    if "source" in given:
        if given["source"] not in SOURCES:
            raise RequestError(f"source must be one of {', '.join(SOURCES)}", "source")
        filters["source"] = given["source"]
    if "since" in given:
        try:
            filters["since"] = parse_time(given["since"])
        except ValueError:
            raise RequestError("since must be an RFC 3339 time or Unix seconds", "since") from None
    for name in ("finished", "retired"):
        if name in given:
            if given[name] not in _BOOLEANS:
                raise RequestError(f"{name} must be true or false", name)
            filters[name] = _BOOLEANS[given[name]]
    limit = _integer(given, "limit", DEFAULT_LIMIT, MAX_LIMIT)
    return Query(**filters, limit=limit, offset=_integer(given, "offset", 0, MAX_OFFSET))


def _integer(given: dict[str, str], name: str, default: int, high: int) -> int:
    text = given.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 10 and int(text) <= high):
        raise RequestError(f"{name} must be an integer from 0 to {high}", name)
    return int(text)


def _json(document: object) -> bytes:
    return json.dumps(document, allow_nan=False).encode("ascii")
