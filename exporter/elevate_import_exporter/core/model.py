"""The exporter's vocabulary: imports, their statuses, and why a status query fails.

Every other module speaks these words; this one imports nothing of the package.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

DOCUMENTED_STATUSES = (
    "NOT_FOUND",
    "WAITING",
    "BLOCKED",
    "IN_PROGRESS",
    "SUCCESS",
    "FAILURE",
    "ABORTED",
)
FINAL_STATUSES = frozenset({"SUCCESS", "FAILURE", "ABORTED"})

# Every reason a status request can fail for; the exporter publishes each from start-up.
ERROR_REASONS = (
    "forbidden",
    "cluster_not_found",
    "server_error",
    "rate_limited",
    "client_error",
    "unexpected_status",
    "timeout",
    "connection_error",
    "invalid_response",
)
RETRYABLE_REASONS = frozenset({"server_error", "rate_limited", "timeout", "connection_error"})
# A 403 or 404 is about the key or the cluster, so no other id can do better.
WHOLE_KEY_REASONS = frozenset({"forbidden", "cluster_not_found"})
# What to check when an answer concerns every id: said by `run`'s log and `status` alike.
WHOLE_KEY_HINTS = {
    "forbidden": "Elevate refuses the Api-Key: check the key in --elevate.api-key-file or "
    "ELEVATE_API_KEY, and that it belongs to this cluster",
    "cluster_not_found": "Elevate does not know the cluster: check --elevate.cluster-id, "
    "or that --elevate.base-url is the API's scheme://host[:port]",
}
_CLIENT_ERROR_REASONS = {403: "forbidden", 404: "cluster_not_found", 429: "rate_limited"}


def reason_for_status(status: int) -> str:
    """Why an answer of Elevate other than a 2xx is a failure: one of :data:`ERROR_REASONS`."""
    if status >= 500:
        return "server_error"
    if status >= 400:
        return _CLIENT_ERROR_REASONS.get(status, "client_error")
    return "unexpected_status"


MAX_MESSAGE_CHARS = 200
MAX_STATUS_CHARS = 64

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
ID_RULE = "1 to 64 characters of A-Z a-z 0-9 _ -"

# Lone UTF-16 surrogates cannot be encoded, and control characters have no business in a
# label value or a page; either would make a later stage fail or mislead. Bidirectional
# controls (embeddings, overrides, isolates, marks) mislead too: they reorder what follows
# on the screen, so that "SUCCESS" may read where the bytes say otherwise.
_UNSAFE = re.compile(
    r"[\ud800-\udfff\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


# The flavours of Elevate's import-status API (``--elevate.api``): Elevate 3's Web API v2,
# Elevate 4's Admin API v4 and its deprecated v3.
API_FLAVOURS = ("web-v2", "admin-v4", "admin-v3")
_NUMERIC_ID = re.compile(r"[0-9]{1,64}")
NUMERIC_ID_RULE = "1 to 64 decimal digits (the Admin API's ids are numbers)"


def is_valid_import_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


def id_rule(flavour: str) -> tuple[Callable[[str], bool], str]:
    """How ids of ``flavour`` look: a test and its wording for messages."""
    if flavour.startswith("admin-"):
        return (lambda value: _NUMERIC_ID.fullmatch(value) is not None), NUMERIC_ID_RULE
    return is_valid_import_id, ID_RULE


def safe_text(text: str, limit: int | None = None) -> str:
    """``text`` from outside made safe to encode, export and show, cut to ``limit`` characters.

    Called once where text enters the exporter, so no later stage can fail on it.
    """
    if limit is not None:
        text = text[:limit]
    return _UNSAFE.sub("\ufffd", text)


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` fit for one line of a log, an error or a terminal: every character that is
    not printable (controls, line and paragraph separators, bidi and other format
    characters) as a space, runs of white space as one, cut to ``limit`` with "..." after."""
    if limit is not None:
        text = text[: limit * 2]  # a run of white space folds away: some to spare
    joined = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    if limit is None or len(joined) <= limit:
        return joined
    return joined[:limit] + "..."


def snippet(body: bytes, limit: int = 120) -> str:
    """The start of a body from outside, on one line, for an error message."""
    text = body[: limit * 4].decode("utf-8", "replace")
    text = " ".join(text.split())
    if not text:
        return "(empty body)"
    return text[:limit] + ("..." if len(text) > limit else "")


@dataclass(frozen=True, slots=True)
class ImportInfo:
    """A valid answer about one import; ``id`` is always the id that was asked for."""

    id: str
    status: str
    type: str
    message: str

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One status request as sent: what came back (``code``), how long it took, why it failed."""

    code: str
    seconds: float
    error: str | None


class QueryError(Exception):
    """A status query that produced no import information."""


class ApiError(QueryError):
    """The last request for an id failed; ``reason`` is one of :data:`ERROR_REASONS`."""

    def __init__(
        self, reason: str, detail: str, *, code: str, retry_after: float | None = None
    ) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.code = code
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.reason in RETRYABLE_REASONS

    @property
    def concerns_whole_key(self) -> bool:
        return self.reason in WHOLE_KEY_REASONS


class NotSent(QueryError):
    """The query was given up before a request could go: deadline reached or round stopped."""


def causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and every exception behind it: requests and urllib3 wrap the one that
    says what happened in arguments, causes and ``reason`` attributes."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        cause = pending.pop(0)
        if id(cause) not in seen:
            seen.add(id(cause))
            yield cause
            behind = [*cause.args, cause.__cause__, cause.__context__, getattr(cause, "reason", 0)]
            pending += [e for e in behind if isinstance(e, BaseException)]
