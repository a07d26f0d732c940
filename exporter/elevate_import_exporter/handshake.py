"""TLS on a non-blocking server socket: wrapping it, driving its handshake, reading from it.

:mod:`~elevate_import_exporter.connections` calls these from its one serving thread, so
none of them may block: a handshake goes on step by step as the selector says the peer
has sent or can take more.
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
from typing import Protocol

log = logging.getLogger(__name__)


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
    done and the peer accepted, or None when the connection is to be dropped.
    """
    assert isinstance(sock, ssl.SSLSocket), "wrap it first"
    try:
        sock.do_handshake()
    except ssl.SSLWantReadError:
        return selectors.EVENT_READ
    except ssl.SSLWantWriteError:
        return selectors.EVENT_WRITE
    except (OSError, ValueError) as exc:
        log.debug("http %s TLS handshake failed: %s", peer, exc)
        return None
    refusal = tls.refusal(sock)
    if refusal is not None:
        log.info("http %s refused: %s", peer, refusal)
        return None
    return 0


def receive(sock: socket.socket) -> bytes:
    """What has arrived; with TLS also the bytes the TLS layer holds decrypted already,
    for which the selector would not fire."""
    data = sock.recv(65536)
    if isinstance(sock, ssl.SSLSocket):
        while data and sock.pending():
            data += sock.recv(sock.pending())
    return data
