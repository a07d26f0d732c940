"""HTTP to Elevate: the only module that imports requests.

One ``requests.Session`` with a pool as large as the concurrency, so the status
requests of a round reuse kept-alive connections. The transport knows no API
flavour and no metrics: it sends a GET, bounds it by the round's deadline, retries
what may be retried, caps and redacts the body, hands the body to the flavour's
parser and reports every request it sent to an ``on_request`` callback: with the
HTTP status of an answer that arrived whole, or ``timeout`` / ``connection_error``
for one that did not, whether it broke off in its headers or in its body (a status
line alone is not an answer).
"""

from __future__ import annotations

import contextlib
import email.utils
import os
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC
from typing import Any, TypeVar

import requests
from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, ProxyManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ReadTimeoutError

from elevate_import_exporter.deadline import Guard, Reaper, WholeHead, current
from elevate_import_exporter.logs import secret_pattern
from elevate_import_exporter.model import (
    ApiError,
    NotSent,
    RequestRecord,
    reason_for_status,
    safe_text,
    snippet,
)
from elevate_import_exporter.secret import Secret

T = TypeVar("T")

MAX_BODY_BYTES = 1024 * 1024
REDACTED = "<redacted>"
# The longest Retry-After honoured; a longer one, or a date further ahead, counts as
# this. An hour outlasts any rate limit worth waiting for, and one answer cannot make
# the exporter leave an id alone for days.
MAX_RETRY_AFTER = 3600.0

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
        self._key = secret_pattern(api_key.reveal())
        self._key_in_bytes = re.compile(self._key.pattern.encode(), re.IGNORECASE)
        self._timeout = timeout
        self._retries = retries
        self._on_request = on_request
        self._reaper = Reaper()
        self._session = _session_for(self.base_url)
        adapter = _Adapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self._headers = {"Api-Key": api_key.reveal(), "User-Agent": user_agent}

    def close(self) -> None:
        self._session.close()
        self._reaper.close()

    def redact(self, text: str) -> str:
        """``text`` without the key, plain or escaped: a proxy or an error page may echo it."""
        return self._key.sub(REDACTED, text)

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
        with self._reaper.guard(deadline) as guard:
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
                with contextlib.closing(response):
                    body = _read_body(response)
            except _TooLarge as exc:
                code = str(response.status_code)
                raise self._failed("invalid_response", code, started, str(exc)) from None
            except Exception as exc:
                reason, detail = _lost(exc, guard.expired)
                raise self._failed(reason, reason, started, detail) from None
        # Before anything reads the body, so that no message made from it (the parser's,
        # a snippet cut to length) can hold the key or a part of it.
        body = self._key_in_bytes.sub(REDACTED.encode(), body)
        status, code = response.status_code, str(response.status_code)
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
            reason_for_status(status), code, started, f"HTTP {status}: {snippet(body)}", retry_after
        )

    def _failed(
        self, reason: str, code: str, started: float, detail: str, retry_after: float | None = None
    ) -> ApiError:
        self._on_request(RequestRecord(code, time.perf_counter() - started, reason))
        detail = safe_text(self.redact(detail))
        return ApiError(reason, detail, code=code, retry_after=retry_after)


def _session_for(url: str) -> requests.Session:
    """A session that reads the proxy and CA bundle settings of the environment once.

    With ``trust_env`` on, requests reads them (and ~/.netrc, moot with an Api-Key)
    again for every request: a fifth of a status request's CPU.
    """
    session = requests.Session()
    session.trust_env = False
    session.proxies.update(requests.utils.get_environ_proxies(url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    return session


class _TooLarge(Exception):
    pass


def _read_body(response: requests.Response) -> bytes:
    """The body, refusing more than :data:`MAX_BODY_BYTES` (read to its end, the
    connection goes back to the pool; a huge body closes it instead)."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(64 * 1024):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _TooLarge(f"body larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _lost(error: Exception, expired: bool) -> tuple[str, str]:
    """Why an answer did not arrive whole (``timeout``, ``connection_error``), and a detail.

    Once the guard has shut the connection down at the deadline, whatever the client
    library makes of that (an end of file, a broken chunk, an SSL error) is a timeout.
    """
    if expired:
        return "timeout", "no complete answer by the deadline"
    if not isinstance(error, requests.RequestException):
        raise error
    # requests reports a read timeout inside the body as a ConnectionError.
    if isinstance(error, requests.Timeout) or any(
        isinstance(arg, ReadTimeoutError) for arg in error.args
    ):
        return "timeout", "no answer in time"
    return "connection_error", f"connection lost: {type(error).__name__}"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, at most :data:`MAX_RETRY_AFTER`.

    ASCII digits or an HTTP date; anything else (``³``, ``1e9``, ``-5``) is None, as if
    there were no header.
    """
    value = (value or "").strip()
    if value.isascii() and value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:  # "-0000": an HTTP date is in GMT all the same
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - time.time()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


def _backoff(attempt: int) -> float:
    # Half fixed, half random: spreads retries of a burst without ever retrying at once.
    ceiling = min(_BACKOFF_CAP, _BACKOFF_BASE * 2.0**attempt)
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class _Connection(HTTPConnection):
    """A connection that puts itself under its thread's guard once a request is sent."""

    response_class = WholeHead
    guard: Guard | None = None

    def request(self, *args: Any, **kwargs: Any) -> None:
        super().request(*args, **kwargs)
        # From here on only the answer can hold the worker, and the socket exists.
        guard: Guard | None = getattr(current, "guard", None)
        if guard is not None:
            guard.attach(self)


class _TLSConnection(_Connection, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


_POOLS: dict[str, type[HTTPConnectionPool]] = {"http": _Pool, "https": _TLSPool}


class _Adapter(HTTPAdapter):
    """requests' adapter, with pools of guarded connections, direct or through a proxy."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        # A SOCKS proxy brings connection classes of its own: socket timeouts only.
        if isinstance(manager, ProxyManager):
            manager.pool_classes_by_scheme = _POOLS
        return manager
