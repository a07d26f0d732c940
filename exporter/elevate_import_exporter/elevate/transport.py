"""HTTP to Elevate: the only module that imports requests.

One ``requests.Session`` with a pool as large as the concurrency, so the status
requests of a round reuse kept-alive connections. The transport knows no API
flavour and no metrics: it sends a GET, bounds it by the round's deadline, retries
what may be retried, caps and redacts the body, hands the body to the flavour's
parser and reports every request it sent to an ``on_request`` callback: with the
HTTP status of an answer that arrived whole, or ``timeout`` / ``connection_error``
for one that did not, whether it broke off in its headers or in its body (a status
line alone is not an answer).

A peer that answers, but not in HTTP (SSH on the port, TLS asked in plain text, an
HTTP/0.9 body), is an ``invalid_response``, not retried, with the code
``connection_error``: the contract's code for a request without an HTTP status. Every
failure's detail names the URL asked or ``host:port``, and the cause.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, ProxyManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ReadTimeoutError

from elevate_import_exporter.core.logs import REDACTED, Redactor
from elevate_import_exporter.core.model import (
    ApiError,
    NotSent,
    RequestRecord,
    causes,
    reason_for_status,
    safe_text,
    snippet,
)
from elevate_import_exporter.core.secret import Secret
from elevate_import_exporter.elevate.deadline import MAX_RETRY_AFTER as MAX_RETRY_AFTER
from elevate_import_exporter.elevate.deadline import Guard, Reaper, WholeHead, backoff, current
from elevate_import_exporter.elevate.deadline import parse_retry_after as parse_retry_after

T = TypeVar("T")

MAX_BODY_BYTES = 1024 * 1024


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
        self._key = Redactor(api_key.reveal())
        self._timeout = timeout
        self._retries = retries
        self._on_request = on_request
        self._reaper = Reaper()
        self._session = _session_for(self.base_url)
        self._where = _where(self.base_url)
        self._plain = self.base_url.startswith("http://")
        self._adapter = GuardedAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("https://", self._adapter)
        self._session.mount("http://", self._adapter)
        # requests' defaults (Accept-Encoding, Connection, ...) under ours, in the order
        # Session.request would send them.
        self._headers = requests.structures.CaseInsensitiveDict(self._session.headers)
        self._headers.update({"Api-Key": api_key.reveal(), "User-Agent": user_agent})

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
                pause = error.retry_after if error.retry_after is not None else backoff(attempt)
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
                response = self._send(url, headers, timeout)
                with contextlib.closing(response):
                    body = _read_body(response)
            except _TooLarge as exc:
                code = str(response.status_code)
                raise self._failed("invalid_response", code, started, str(exc)) from None
            except Exception as exc:
                reason, code, detail = self._lost(exc, guard.expired)
                raise self._failed(reason, code, started, detail) from None
        # Before anything reads the body, so that no message made from it (the parser's,
        # a snippet cut to length) can hold the key or a part of it.
        body = self._key.sub(REDACTED.encode(), body)
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
        reason = reason_for_status(status)
        # The URL asked (it holds no key: that goes in a header), so that a wrong base URL
        # or cluster shows in the line itself.
        detail = f"HTTP {status} for {url}: {snippet(body)}"
        raise self._failed(reason, code, started, detail, retry_after)

    def _send(self, url: str, headers: Mapping[str, str], timeout: float) -> requests.Response:
        """A GET through the session's adapter, without ``Session.request`` around it.

        That layer merges settings, cookies, hooks and the environment anew for every
        request: about a quarter of the CPU of a status request, for nothing the
        transport uses. What it would decide is decided once in ``__init__``: the
        session's default headers under ours, its proxies and CA bundle. No cookie is
        kept or sent back, and redirects are not followed (requests would keep the
        Api-Key on a redirect to another host).
        """
        request = requests.PreparedRequest()
        request.prepare_method("GET")
        request.prepare_url(url, None)
        merged = self._headers.copy()
        for name, value in headers.items():
            if name.lower() not in _OURS:
                merged[name] = value
        request.prepare_headers(merged)
        request.prepare_body(None, None)
        request.prepare_hooks(None)
        session = self._session
        return self._adapter.send(
            request,
            stream=True,
            timeout=timeout,
            verify=True if session.verify is None else session.verify,
            cert=session.cert,
            proxies=session.proxies,
        )

    def _failed(
        self, reason: str, code: str, started: float, detail: str, retry_after: float | None = None
    ) -> ApiError:
        self._on_request(RequestRecord(code, time.perf_counter() - started, reason))
        detail = safe_text(self.redact(detail))
        return ApiError(reason, detail, code=code, retry_after=retry_after)

    def _lost(self, error: Exception, expired: bool) -> tuple[str, str, str]:
        """Why no whole HTTP answer arrived: reason, code and a detail naming the peer.

        Once the guard has shut the connection down at the deadline, whatever the client
        library makes of that (an end of file, a broken chunk, an SSL error) is a timeout.
        """
        where = self._where
        if expired:
            return "timeout", "timeout", f"no complete answer from {where} by the deadline"
        if not isinstance(error, requests.RequestException | OSError | http.client.HTTPException):
            raise error
        behind = list(causes(error))
        # requests reports a read timeout inside the body as a ConnectionError.
        if any(isinstance(c, requests.Timeout | ReadTimeoutError | TimeoutError) for c in behind):
            return "timeout", "timeout", f"no answer from {where} in time"
        for cause in behind:
            if isinstance(cause, http.client.RemoteDisconnected | http.client.IncompleteRead):
                break  # an answer that broke off, not one in another protocol
            if isinstance(cause, http.client.HTTPException):
                return "invalid_response", "connection_error", self._not_http(cause)
        return "connection_error", "connection_error", self._cause(behind)

    def _not_http(self, error: http.client.HTTPException) -> str:
        # Redacted before it is cut: no part of a key that a server echoes survives the cut.
        line = str(error.args[0]) if error.args else type(error).__name__
        shown = repr(self.redact(line).strip()[:_SHOWN_LINE_CHARS])
        # A TLS record starts with its type: 0x15 an alert, 0x16 a handshake.
        tls = "; that is TLS: use an https:// base URL" if line[:1] in ("\x15", "\x16") else ""
        return f"{self._where} answered, but not HTTP: {shown}{tls}"

    def _cause(self, behind: list[BaseException]) -> str:
        where = self._where
        tls_hint = "; if it is a TLS port, use an https:// base URL" if self._plain else ""
        for cause in behind:
            if isinstance(cause, ssl.SSLCertVerificationError):
                return (
                    f"TLS with {where} failed: certificate not trusted ({cause.verify_message}); "
                    "set REQUESTS_CA_BUNDLE to the CA bundle that vouches for it"
                )
            if isinstance(cause, ssl.SSLError):
                why = cause.reason or cause.strerror or type(cause).__name__
                hint = "; if it is a plain HTTP port, use an http:// base URL"
                return f"TLS with {where} failed: {why}{hint if why in _NOT_TLS else ''}"
            if isinstance(cause, socket.gaierror):
                return f"cannot resolve the host name of {where}: {cause.strerror or cause}"
            if isinstance(cause, ConnectionRefusedError):
                return f"{where} refused the connection: nothing listens there"
            if isinstance(cause, ConnectionResetError):
                return f"{where} reset the connection{tls_hint}"
            if isinstance(cause, http.client.RemoteDisconnected):
                return f"{where} closed the connection before a whole answer{tls_hint}"
            if isinstance(cause, http.client.IncompleteRead):
                return f"{where} closed the connection inside the answer's body"
        errno_text = next((c.strerror for c in behind if isinstance(c, OSError) and c.strerror), "")
        return f"connection to {where} failed: {errno_text or type(behind[0]).__name__}"


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


_SHOWN_LINE_CHARS = 60
# Headers the transport sets itself; a flavour's headers do not override them.
_OURS = frozenset({"api-key", "user-agent"})
# OpenSSL's reasons when the peer's first bytes are no TLS record: most likely plain HTTP.
_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"})


def _where(url: str) -> str:
    """``host:port`` of ``url``, the port written out even when it is the scheme's own."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{f'[{host}]' if ':' in host else host}:{parts.port or _PORTS.get(parts.scheme, 80)}"


_PORTS = {"http": 80, "https": 443}


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


class GuardedAdapter(HTTPAdapter):
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
