"""The import proxy's side towards Elevate: one ``http.client`` connection per request.

The standard library's client, not the transport's ``requests``: the proxy streams bodies
of any size both ways with explicit chunk sizes, and needs the raw connection for that.
TLS is verified against the system's CAs or a given bundle. A fresh connection per request
costs one handshake to Elevate per import; in return no request is ever sent on a
connection that Elevate has closed in the meantime, which a body of hundreds of MB could
not be sent again over.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import time
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


class UpstreamError(Exception):
    """Elevate could not be reached or did not answer: answered ``status`` (502 or 504);
    ``reason`` is one of the status client's (``connection_error``, ``timeout``,
    ``invalid_response``). The message says why in a few words, with nothing of the
    request in it."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = 504 if reason == "timeout" else 502


class Upstream:
    """Where requests go: the scheme, host and port of ``base_url``; its path, if any, is
    put before every request's path. ``timeout`` bounds each connect, read and write."""

    def __init__(self, base_url: str, *, timeout: float, ca_bundle: str | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError("the upstream must be an http:// or https:// URL with a host")
        self.host = parts.hostname
        self.port = parts.port or _DEFAULT_PORTS[parts.scheme]
        self.prefix = parts.path.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = (
            host if parts.port in (None, _DEFAULT_PORTS[parts.scheme]) else (f"{host}:{parts.port}")
        )
        self.timeout = timeout
        self._context = (
            ssl.create_default_context(cafile=ca_bundle) if parts.scheme == "https" else None
        )

    def connect(self) -> http.client.HTTPConnection:
        """A connection to Elevate, open; :class:`UpstreamError` if none can be had."""
        conn: http.client.HTTPConnection
        if self._context is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        else:
            conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=self._context
            )
        try:
            conn.connect()
        except Exception as exc:
            conn.close()
            raise failure(exc) from None
        # Bodies go in large pieces; Nagle would hold back the last small one.
        if conn.sock is not None:
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn


def failure(exc: BaseException) -> UpstreamError:
    """What ``exc``, raised while talking to Elevate, means for the client."""
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, TimeoutError):
        return UpstreamError("timeout", "Elevate did not answer in time.")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return UpstreamError("connection_error", "Elevate's TLS certificate was not verified.")
    if isinstance(exc, ssl.SSLError):
        return UpstreamError("connection_error", "The TLS handshake with Elevate failed.")
    if isinstance(exc, http.client.RemoteDisconnected):
        return UpstreamError("connection_error", "Elevate closed the connection unanswered.")
    if isinstance(exc, http.client.HTTPException):
        return UpstreamError("invalid_response", "Elevate's answer was not valid HTTP.")
    if isinstance(exc, socket.gaierror):
        return UpstreamError("connection_error", "Elevate's host name could not be resolved.")
    if isinstance(exc, ConnectionRefusedError):
        return UpstreamError("connection_error", "Elevate refused the connection.")
    if isinstance(exc, OSError):
        return UpstreamError("connection_error", "The connection to Elevate failed.")
    raise exc


def wait_for_answer(upstream: socket.socket, client: socket.socket, timeout: float) -> bool:
    """Wait until Elevate has begun to answer: True then; False if the client closed its
    connection first. :class:`UpstreamError` (timeout) after ``timeout`` seconds.

    Elevate may hold a request for minutes before it answers; a feed job that gave up in
    the meantime must not leave the import's request open upstream.
    """
    deadline = time.monotonic() + timeout
    watched = [upstream, client]
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise UpstreamError("timeout", "Elevate did not answer in time.")
        readable, _, _ = select.select(watched, [], [], left)
        if upstream in readable:
            return True
        if client in readable:
            if _closed(client):
                return False
            watched = [upstream]  # the next request, pipelined: not a goodbye


def _closed(sock: socket.socket) -> bool:
    try:
        # The plain socket's recv, also under TLS: a peek at the bytes on the wire.
        return socket.socket.recv(sock, 1, socket.MSG_PEEK) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True
