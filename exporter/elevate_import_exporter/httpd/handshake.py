"""TLS on a non-blocking server socket: wrapping it, driving its handshake, reading from it.

:mod:`~elevate_import_exporter.httpd.connections` calls these from its one serving thread, so
none of them may block: a handshake goes on step by step as the selector says the peer
has sent or can take more.

A client that speaks plain HTTP to the TLS port gets what Go's net/http answers it, a
``400`` saying so, rather than a reset it cannot make sense of.
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
from typing import Protocol

log = logging.getLogger(__name__)

# step(): the peer sent plain HTTP and was answered so; linger, then close.
PLAIN_HTTP = -1
PLAIN_HTTP_BODY = b"Client sent an HTTP request to an HTTPS server.\n"
_PLAIN_HTTP_ANSWER = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(PLAIN_HTTP_BODY), PLAIN_HTTP_BODY)
)
# What the first bytes of a plain HTTP request look like (Go's list, and a few methods
# more); a TLS client's first byte is 0x16, never a letter.
_HTTP_STARTS = (b"GET /", b"HEAD ", b"POST ", b"PUT /", b"OPTIO", b"DELET", b"PATCH", b"CONNE")
# OpenSSL's own recognition of the same, for bytes it read before a peek could see them.
_HTTP_REASONS = ("HTTP_REQUEST", "HTTPS_PROXY_REQUEST")
_DROP_AT_ONCE = 64 * 1024  # bytes of the plain request read and dropped before the answer


class ServerTls(Protocol):
    """What the loop needs of TLS (``tls.TlsProvider`` is one)."""

    def context(self) -> ssl.SSLContext:
        """The context to wrap a connection accepted now with."""

    def refusal(self, sock: ssl.SSLSocket) -> str | None:
        """Why the peer of a finished handshake is turned away, or None to serve it."""


def wrap(tls: ServerTls, sock: socket.socket, peer: str) -> ssl.SSLSocket | None:
    """``sock`` wrapped for a handshake not begun yet; None (logged) if TLS cannot start."""
    try:
        return tls.context().wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    except (OSError, ValueError) as exc:
        log.warning("http %s: cannot start TLS: %s", peer, exc)
        return None


def step(tls: ServerTls, sock: socket.socket, peer: str) -> int | None:
    """Drive the handshake as far as it goes now.

    Returns the selector event to wait for before the next step, 0 once the handshake is
    done and the peer accepted, None when the connection is to be dropped, or
    :data:`PLAIN_HTTP` when the peer sent plain HTTP and has been answered ``400``: the
    caller then reads and drops what still comes for a moment before it closes, so that
    the close does not reset the answer away.
    """
    assert isinstance(sock, ssl.SSLSocket), "wrap it first"
    if _peek(sock).startswith(_HTTP_STARTS):
        return _answer_plain_http(sock, peer)
    try:
        sock.do_handshake()
    except ssl.SSLWantReadError:
        return selectors.EVENT_READ
    except ssl.SSLWantWriteError:
        return selectors.EVENT_WRITE
    except ssl.SSLError as exc:
        if exc.reason in _HTTP_REASONS:
            return _answer_plain_http(sock, peer)
        log.debug("http %s TLS handshake failed: %s", peer, exc)
        return None
    except (OSError, ValueError) as exc:
        log.debug("http %s TLS handshake failed: %s", peer, exc)
        return None
    refusal = tls.refusal(sock)
    if refusal is not None:
        log.info("http %s refused: %s", peer, refusal)
        return None
    return 0


def _peek(sock: ssl.SSLSocket) -> bytes:
    """The first bytes waiting on the plain socket under ``sock``, left there for TLS."""
    try:
        # Blocking or not as the socket is: the proxy's threads wait here for the first
        # bytes as they would in the handshake; the serving loop steps only when readable.
        return socket.socket.recv(sock, 5, socket.MSG_PEEK)
    except OSError:  # nothing yet (the handshake step will wait for it), or gone
        return b""


def _answer_plain_http(sock: ssl.SSLSocket, peer: str) -> int | None:
    log.debug("http %s sent plain HTTP to the TLS port; answered 400", peer)
    try:
        # What has come of the request is read first: a close with unread bytes would
        # send a reset, which can destroy the answer before the client reads it.
        dropped = 0
        while dropped < _DROP_AT_ONCE:
            chunk = socket.socket.recv(sock, 65536, socket.MSG_DONTWAIT)
            if not chunk:
                break
            dropped += len(chunk)
    except OSError:
        pass
    try:
        # Plain bytes on the plain socket, beside the TLS object that never got going.
        socket.socket.send(sock, _PLAIN_HTTP_ANSWER, socket.MSG_DONTWAIT)
        socket.socket.shutdown(sock, socket.SHUT_WR)
    except OSError:
        return None
    return PLAIN_HTTP


def receive(sock: socket.socket) -> bytes:
    """What has arrived; with TLS also the bytes the TLS layer holds decrypted already,
    for which the selector would not fire."""
    data = sock.recv(65536)
    if isinstance(sock, ssl.SSLSocket):
        while data and sock.pending():
            data += sock.recv(sock.pending())
    return data
