"""HTTP to Elevate: the only module that imports requests.

One ``requests.Session`` with a pool as large as the concurrency, so the status
requests of a round reuse kept-alive connections. The transport knows no API
flavour and no metrics: it sends a GET, bounds it by the round's deadline, retries
what may be retried, caps and redacts the body, hands the body to the flavour's
parser and reports every request it sent to an ``on_request`` callback.
"""

from __future__ import annotations

import email.utils
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ReadTimeoutError

from elevate_import_exporter.model import ApiError, NotSent, RequestRecord
from elevate_import_exporter.secret import Secret

T = TypeVar("T")

MAX_BODY_BYTES = 1024 * 1024
REDACTED = "<redacted>"

_BACKOFF_BASE = 0.1
_BACKOFF_CAP = 2.0


class Transport:
    """GET requests to one Elevate base URL with the Api-Key, bounded by a deadline."""

    def __init__(
        self,
        base_url: str,
        api_key: Secret,
        *,
        user_agent: str,
        pool_size: int = 8,
        timeout: float = 5.0,
        retries: int = 1,
        on_request: Callable[[RequestRecord], None] = lambda _record: None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = api_key.reveal()
        self._timeout = timeout
        self._retries = retries
        self._on_request = on_request
        self._session = _session_for(self.base_url)
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self._headers = {"Api-Key": self._key, "User-Agent": user_agent}

    def close(self) -> None:
        self._session.close()

    def redact(self, text: str) -> str:
        """``text`` without the key: a proxy or an error page may echo request headers."""
        return text.replace(self._key, REDACTED)

    def get(
        self,
        url: str,
        headers: Mapping[str, str],
        parse: Callable[[bytes], T],
        deadline: float,
        stop: threading.Event,
    ) -> T:
        """GET ``url`` and ``parse`` a 2xx body, retrying as configured until ``deadline``.

        ``parse`` raises ``ValueError`` for a body that is not what was asked for.
        Raises :class:`ApiError` for the last failed request, :class:`NotSent` if
        nothing could be sent before the deadline (monotonic) or after ``stop`` was set.
        """
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if stop.is_set() or remaining <= 0:
                raise NotSent(url)
            try:
                return self._request(url, headers, parse, min(self._timeout, remaining), deadline)
            except ApiError as error:
                if not error.retryable or attempt >= self._retries:
                    raise
                pause = error.retry_after if error.retry_after is not None else _backoff(attempt)
                # A retry that cannot finish before the deadline only adds load.
                if time.monotonic() + pause >= deadline or stop.wait(pause):
                    raise
                attempt += 1

    def _request(
        self,
        url: str,
        headers: Mapping[str, str],
        parse: Callable[[bytes], T],
        timeout: float,
        deadline: float,
    ) -> T:
        started = time.perf_counter()
        try:
            # Redirects are not followed: requests keeps custom headers such as
            # Api-Key on a redirect to another host.
            response = self._session.get(
                url,
                headers={**headers, **self._headers},
                timeout=timeout,
                stream=True,
                allow_redirects=False,
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
                result = parse(body)
            except ValueError as exc:
                raise self._failed("invalid_response", code, started, str(exc)) from None
            self._on_request(RequestRecord(code, time.perf_counter() - started, None))
            return result
        retry_after = None
        if status in (429, 503):
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
        raise self._failed(
            _reason_for(status), code, started, f"HTTP {status}: {snippet(body)}", retry_after
        )

    def _failed(
        self,
        reason: str,
        code: str,
        started: float,
        detail: str,
        retry_after: float | None = None,
    ) -> ApiError:
        self._on_request(RequestRecord(code, time.perf_counter() - started, reason))
        return ApiError(reason, self.redact(detail), code=code, retry_after=retry_after)


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


def snippet(body: bytes, limit: int = 120) -> str:
    """The start of a body, on one line, for an error message."""
    text = body[: limit * 4].decode("utf-8", "replace")
    text = " ".join(text.split())
    if not text:
        return "(empty body)"
    return text[:limit] + ("..." if len(text) > limit else "")
