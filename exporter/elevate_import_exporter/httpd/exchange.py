"""One request served by streaming: what a ``stream`` worker of
:class:`~elevate_import_exporter.httpd.connections.Connections` is handed.

The serving loop has read the request's head (and the TLS handshake before it) without a
thread, under the header timeout; then a worker thread calls ``serve(exchange)`` with:

- ``peer``, ``received`` (monotonic time of the request's first byte), ``head``
  (:class:`~elevate_import_exporter.httpd.http1.Head`; None when ``refusal`` is set and the
  head could not be read), ``refusal``
  (:class:`~elevate_import_exporter.httpd.http1.Refusal` or None), ``http1`` (the
  connection's :class:`~elevate_import_exporter.httpd.http1.Http1`), ``sock`` (blocking,
  with the loop's ``write_timeout`` for each read and write);
- :meth:`Exchange.body_pieces`: the body, piece by piece, decoded from chunks if it came
  chunked; ``100 Continue`` is sent first when the client waits for it. Raises
  :class:`~elevate_import_exporter.httpd.http1.PeerClosed`,
  :class:`~elevate_import_exporter.httpd.http1.Refusal` (a broken chunk) or
  :class:`TimeoutError`;
- :meth:`Exchange.send` and :meth:`Exchange.send_pieces`: bytes made by ``http1``'s
  answer methods, written whole;
- :meth:`Exchange.abort`: shut the socket down from another thread (the loop's, for a
  policy such as a minimum body rate): the worker's next read or write fails.

A refused request (``refusal`` set) must be answered by ``serve`` with
``exchange.send(exchange.http1.refuse(refusal, headers, body))``; the loop then lingers
and closes. When ``serve`` returns (or raises: logged), the loop takes the connection back
for its next request if ``http1.reusable`` and the server is not draining; else it closes
it, after reading and dropping for a moment what the client still sends when the request
was not read to its end (a close with unread bytes would reset the answer away).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Iterator, Sequence

from elevate_import_exporter.httpd.http1 import Head, Http1, Refusal, _End

READ_BUFFER = 512 * 1024


class Exchange:
    """One request on one connection, served by a worker thread (see the module)."""

    def __init__(
        self,
        sock: socket.socket,
        peer: str,
        http1: Http1,
        received: float,
        refusal: Refusal | None = None,
    ) -> None:
        self.sock = sock
        self.peer = peer
        self.http1 = http1
        self.received = received
        self.refusal = refusal
        self.head: Head | None = http1.head
        self.started = time.monotonic()  # when the worker took it
        self.body_read = 0  # body bytes so far (decoded), for rate policies
        self._buffer: bytearray | None = None

    def body_pieces(self) -> Iterator[bytes | memoryview]:
        """The body's bytes as they come, read into one reused buffer of
        :data:`READ_BUFFER` bytes: a piece is valid until the next one is asked for."""
        http1 = self.http1
        continued = False
        while True:
            piece = http1.next_body()
            if isinstance(piece, _End):
                return
            if piece is not None:
                self.body_read += len(piece)
                yield piece
                continue
            if not continued and http1.expects_continue:
                continued = True
                self.send(http1.continue_())
            if self._buffer is None:
                self._buffer = bytearray(READ_BUFFER)
            view = memoryview(self._buffer)
            count = self.sock.recv_into(view)
            # Http1 reads from the view until it asks for more: then the buffer is free.
            http1.receive(view[:count] if count else b"")

    def send(self, data: bytes) -> None:
        if data:
            self.sock.sendall(data)

    def send_pieces(self, pieces: Sequence[bytes | memoryview]) -> None:
        """Write ``pieces`` in order, in one system call where the socket allows it."""
        send_pieces(self.sock, pieces)

    def abort(self) -> None:
        """End the connection under the worker (safe from any thread)."""
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)


def send_pieces(
    sock: socket.socket,
    pieces: Sequence[bytes | memoryview],
    scratch: bytearray | None = None,
) -> None:
    """Write ``pieces`` in order on a blocking ``sock`` in as few system calls as it can:
    gathered by one ``sendmsg`` on a plain socket, so that a large piece is not copied
    behind a small one. TLS cannot gather: there the pieces are copied into ``scratch``
    (grown as needed, and kept by the caller for the next call) and written at once, or,
    without one, written one by one."""
    pieces = [piece for piece in pieces if len(piece)]
    if len(pieces) < 2 or (isinstance(sock, ssl.SSLSocket) and scratch is None):
        for piece in pieces:
            sock.sendall(piece)
        return
    if isinstance(sock, ssl.SSLSocket):
        assert scratch is not None
        size = sum(len(piece) for piece in pieces)
        if len(scratch) < size:
            scratch.extend(bytes(size - len(scratch)))
        view, at = memoryview(scratch), 0
        for piece in pieces:
            view[at : at + len(piece)] = piece
            at += len(piece)
        sock.sendall(view[:size])
        return
    views = [memoryview(piece) for piece in pieces]
    while views:
        sent = sock.sendmsg(views)
        while views and sent >= len(views[0]):
            sent -= len(views[0])
            views.pop(0)
        if views and sent:
            views[0] = views[0][sent:]
