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
import io
import select
import socket
import ssl
import time
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Interim answers (1xx) read before the final one at most; each is bounded by http.client's
# own limits on a head's lines.
MAX_INTERIM_ANSWERS = 16


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
        conn.response_class = FinalResponse
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


class FinalResponse(http.client.HTTPResponse):
    """Elevate's final answer to a request, read past any interim ones.

    Interim answers other than ``100 Continue`` (``102 Processing``, ``103 Early Hints``)
    are read and dropped, not relayed: the feed job waits for the final answer, and many
    HTTP clients (Python's http.client, and so requests) would take any 1xx but 100 for
    it. A ``101`` answers an upgrade that is never asked for: not valid here.

    A head in which a bare CR or LF splits a line is refused (``HTTPException``, a 502):
    http.client reads either as a line's end, so ``X-Evil: a\rSet-Cookie: x=1`` would
    reach the client as a header of its own. Elevate writes CRLF; a head that does not
    comes from something that should not be trusted to say where a field ends, so no
    reading of it is relayed, nor an id taken from its body.
    """

    def begin(self) -> None:
        if self.headers is not None:
            return
        real = self.fp
        recorder = _LineRecorder(real)
        self.fp = cast("io.BufferedReader", recorder)
        try:
            super().begin()
        finally:
            self.fp = real
        if recorder.broken:
            raise http.client.HTTPException("a line of the answer's head is broken by a CR or LF")

    def _read_status(self) -> tuple[str, int, str]:
        read = cast(
            "Callable[[], tuple[str, int, str]]",
            getattr(super(), "_read_status"),  # noqa: B009
        )
        for _ in range(MAX_INTERIM_ANSWERS):
            version, status, reason = read()
            if status == 101:
                raise http.client.HTTPException("an upgrade that was not asked for")
            if not 100 < status < 200:
                return version, status, reason
            http.client.parse_headers(self.fp)  # hints for a browser: dropped
        raise http.client.HTTPException("too many interim answers")


class _LineRecorder:
    """The answer's reader while its head is read: notes a line that a bare CR or LF
    would split (http.client reads heads with readline alone)."""

    def __init__(self, real: io.BufferedReader) -> None:
        self._real = real
        self.broken = False

    def readline(self, limit: int = -1) -> bytes:
        line = self._real.readline(limit)
        text = line[:-2] if line.endswith(b"\r\n") else line
        if b"\r" in text or (line.endswith(b"\n") and not line.endswith(b"\r\n")):
            self.broken = True
        return line


def wait_for_answer(
    upstream: socket.socket, client: socket.socket, timeout: float, *, stay: bool = False
) -> bool:
    """Wait until Elevate has begun to answer: True then; False if the client closed its
    connection first, unless ``stay``. :class:`UpstreamError` (timeout) after ``timeout``
    seconds.

    Elevate may hold a request for minutes before it answers; a feed job that gave up in
    the meantime must not leave the import's request open upstream. With ``stay`` (the
    request, sent whole, may have started an import) the end of the client's sending may
    be a half-close of a client still reading: the answer is awaited all the same, and
    if the client has gone, read for the import's id.
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
            if _closed(client) and not stay:
                return False
            watched = [upstream]  # the next request pipelined, or a half-close


def _closed(sock: socket.socket) -> bool:
    try:
        # The plain socket's recv, also under TLS: a peek at the bytes on the wire.
        return socket.socket.recv(sock, 1, socket.MSG_PEEK) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True
