"""The Elevate Web API v2 import-status client: the only module that speaks HTTP to Elevate.

One ``requests.Session`` with a pool as large as the concurrency, so the status
requests of a round reuse kept-alive connections. The client knows nothing of
metrics: it reports every request it sends to an ``on_request`` callback.
"""

from __future__ import annotations

import email.utils
import json
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ReadTimeoutError

from elevate_import_exporter import __version__
from elevate_import_exporter.secret import Secret

MAX_BODY_BYTES = 1024 * 1024
MAX_MESSAGE_CHARS = 200
MAX_STATUS_CHARS = 64
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

_BACKOFF_BASE = 0.1
_BACKOFF_CAP = 2.0


@dataclass(frozen=True, slots=True)
class ImportInfo:
    """A valid answer about one import; ``id`` is always the id that was asked for."""

    id: str
    status: str
    type: str
    message: str


@dataclass(frozen=True, slots=True)
class Request:
    """One status request as sent: what came back (``code``), how long it took, why it failed."""

    code: str
    seconds: float
    error: str | None


class ElevateError(Exception):
    """A status query that produced no import information."""


class ApiError(ElevateError):
    """The last request for an id failed; ``reason`` is one of :data:`ERROR_REASONS`."""

    def __init__(self, reason: str, detail: str, *, code: str, retry_after: float | None = None):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.code = code
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.reason in {"server_error", "rate_limited", "timeout", "connection_error"}

    @property
    def concerns_whole_key(self) -> bool:
        """A 403 or 404 is about the key or the cluster, so no other id can do better."""
        return self.reason in {"forbidden", "cluster_not_found"}


class NotSent(ElevateError):
    """The query was given up before a request could go: deadline reached or round stopped."""


class ElevateClient:
    def __init__(
        self,
        base_url: str,
        api_key: Secret,
        *,
        pool_size: int = 8,
        timeout: float = 5.0,
        retries: int = 1,
        on_request: Callable[[Request], None] = lambda _request: None,
    ) -> None:
        self._prefix = f"{base_url.rstrip('/')}/api/v2/import/status/"
        self._key = api_key.reveal()
        self._timeout = timeout
        self._retries = retries
        self._on_request = on_request
        self._session = _session_for(self._prefix)
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self._headers = {
            "Api-Key": api_key.reveal(),
            "Accept": "application/json",
            "User-Agent": f"elevate-import-exporter/{__version__}",
        }

    def close(self) -> None:
        self._session.close()

    def import_status(self, import_id: str, deadline: float, stop: threading.Event) -> ImportInfo:
        """Ask for one import's status, retrying as configured until ``deadline`` (monotonic).

        Raises :class:`ApiError` for the last failed request, :class:`NotSent` if
        nothing could be sent before the deadline or after ``stop`` was set.
        """
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if stop.is_set() or remaining <= 0:
                raise NotSent(import_id)
            try:
                return self._request(import_id, min(self._timeout, remaining), deadline)
            except ApiError as error:
                if not error.retryable or attempt >= self._retries:
                    raise
                pause = error.retry_after if error.retry_after is not None else _backoff(attempt)
                # A retry that cannot finish before the deadline only adds load.
                if time.monotonic() + pause >= deadline or stop.wait(pause):
                    raise
                attempt += 1

    def _request(self, import_id: str, timeout: float, deadline: float) -> ImportInfo:
        url = self._prefix + quote(import_id, safe="")
        started = time.perf_counter()
        try:
            # Redirects are not followed: requests keeps custom headers such as
            # Api-Key on a redirect to another host.
            response = self._session.get(
                url, headers=self._headers, timeout=timeout, stream=True, allow_redirects=False
            )
        except requests.Timeout:
            raise self._failed("timeout", "timeout", started, "no answer in time") from None
        except requests.RequestException as exc:
            raise self._failed(
                "connection_error", "connection_error", started, type(exc).__name__
            ) from None
        code = str(response.status_code)
        try:
            body = _read_body(response, deadline)
        except _BodyError as exc:
            response.close()
            raise self._failed(exc.reason, code, started, exc.detail) from None
        status = response.status_code
        if 200 <= status < 300:
            try:
                info = parse_import_info(body.replace(self._key.encode(), b"<redacted>"), import_id)
            except ValueError as exc:
                raise self._failed("invalid_response", code, started, str(exc)) from None
            self._on_request(Request(code, time.perf_counter() - started, None))
            return info
        reason = _reason_for(status)
        retry_after = None
        if status in (429, 503):
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
        raise self._failed(reason, code, started, f"HTTP {status}: {_snippet(body)}", retry_after)

    def _failed(
        self,
        reason: str,
        code: str,
        started: float,
        detail: str,
        retry_after: float | None = None,
    ) -> ApiError:
        self._on_request(Request(code, time.perf_counter() - started, reason))
        # A proxy or an error page may echo request headers back.
        detail = detail.replace(self._key, "<redacted>")
        return ApiError(reason, detail, code=code, retry_after=retry_after)


def _session_for(url: str) -> requests.Session:
    """A session that reads the proxy and CA bundle settings of the environment once.

    With ``trust_env`` on, requests reads the proxy variables, the CA bundle
    variables and ~/.netrc again for every request: a fifth of a status request's
    CPU. The environment of a running process does not change, so the exporter
    reads it at start-up; the Api-Key header makes .netrc credentials moot.
    """
    session = requests.Session()
    session.trust_env = False
    session.proxies.update(requests.utils.get_environ_proxies(url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    return session


class _BodyError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _read_body(response: requests.Response, deadline: float) -> bytes:
    """The body, refusing more than :data:`MAX_BODY_BYTES` and giving up at the deadline.

    Reading through ``iter_content`` to the end lets urllib3 put the connection back
    in the pool; a huge or slow body closes it instead.
    """
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_content(64 * 1024):
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise _BodyError("invalid_response", f"body larger than {MAX_BODY_BYTES} bytes")
            if time.monotonic() > deadline:
                raise _BodyError("timeout", "body still arriving at the deadline")
            chunks.append(chunk)
    except requests.ConnectionError as exc:
        # requests reports a read timeout inside the body as a ConnectionError.
        if exc.args and isinstance(exc.args[0], ReadTimeoutError):
            raise _BodyError("timeout", "body stopped arriving") from None
        raise _BodyError("connection_error", "connection lost while reading the body") from None
    except requests.RequestException as exc:
        raise _BodyError("invalid_response", f"body unreadable: {type(exc).__name__}") from None
    return b"".join(chunks)


def parse_import_info(body: bytes, import_id: str) -> ImportInfo:
    """Import information from a 2xx body, or ``ValueError`` saying why it is none."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise ValueError(f"body is not JSON: {_snippet(body)}") from None
    if not isinstance(data, dict):
        raise ValueError(f"body is JSON but not an object: {_snippet(body)}")
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
        message=message[:MAX_MESSAGE_CHARS] if isinstance(message, str) else "",
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _reason_for(status: int) -> str:
    if status == 403:
        return "forbidden"
    if status == 404:
        return "cluster_not_found"
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server_error"
    if status >= 400:
        return "client_error"
    return "unexpected_status"


def _backoff(attempt: int) -> float:
    # Half fixed, half random: spreads retries of a burst without ever retrying at once.
    ceiling = min(_BACKOFF_CAP, _BACKOFF_BASE * 2.0**attempt)
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _snippet(body: bytes, limit: int = 120) -> str:
    text = body[: limit * 4].decode("utf-8", "replace")
    text = " ".join(text.split())
    if not text:
        return "(empty body)"
    return text[:limit] + ("..." if len(text) > limit else "")
