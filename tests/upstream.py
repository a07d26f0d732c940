"""A misbehaving HTTP server on loopback, scripted byte by byte, for hostile-upstream tests.

Well-behaved server libraries cannot close a connection inside the headers, promise a
``Content-Length`` they never send, or trickle an answer one byte a second. This one
can: each request to a path runs the next *script* queued for that path (the last one
repeats), and a script is a list of steps on the raw socket.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Send:
    """Send these exact bytes."""

    data: bytes


@dataclass(frozen=True)
class Trickle:
    """Send these bytes one at a time, ``interval`` seconds apart."""

    data: bytes
    interval: float = 1.0


@dataclass(frozen=True)
class Hang:
    """Send nothing more until the client leaves or the server closes."""


@dataclass(frozen=True)
class Close:
    """Close the connection now."""


Step = Send | Trickle | Hang | Close
Script = Sequence[Step]

_REASONS = {200: "OK", 404: "Not Found", 429: "Too Many Requests", 503: "Service Unavailable"}


def answer(
    body: bytes | str = b"",
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    content_type: str = "application/json",
) -> bytes:
    """A complete HTTP/1.1 answer with a correct ``Content-Length``."""
    data = body.encode("utf-8") if isinstance(body, str) else body
    head = head_of(status, {"Content-Type": content_type, **(headers or {})}, len(data))
    return head + data


def json_answer(doc: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> bytes:
    return answer(json.dumps(doc), status, headers)


def head_of(status: int, headers: Mapping[str, str], content_length: int | None) -> bytes:
    """The status line and headers of an answer, up to and including the empty line."""
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Whatever')}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass(frozen=True)
class Seen:
    """One request as the server received it; ``at`` is wall-clock time."""

    method: str
    path: str
    headers: Mapping[str, str]
    at: float


class Upstream:
    """The server: ``on(path, *scripts)``, then point the exporter at ``url``."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._scripts: dict[str, deque[Script]] = {}
        self._seen: list[Seen] = []
        self._open: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()
        self._peer_left = 0
        self._accepter = threading.Thread(target=self._accept, name="upstream", daemon=True)
        self._accepter.start()

    def on(self, path: str, *scripts: Script) -> None:
        """Answer requests to ``path`` with ``scripts`` in turn; the last one repeats."""
        with self._lock:
            self._scripts[path] = deque(scripts)

    @property
    def seen(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    def seen_for(self, path: str) -> list[Seen]:
        return [request for request in self.seen if request.path == path]

    @property
    def peer_left(self) -> int:
        """Connections the client closed while a step was still sending or hanging."""
        with self._lock:
            return self._peer_left

    def close(self) -> None:
        self._closing.set()
        self._accepter.join(timeout=10)
        self._listener.close()
        with self._lock:
            connections = list(self._open)
            threads = list(self._threads)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(timeout=10)

    def __enter__(self) -> Upstream:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- serving ----------------------------------------------------------------------

    def _accept(self) -> None:
        # Closing a listening socket does not wake a thread blocked in accept().
        self._listener.settimeout(0.05)
        while not self._closing.is_set():
            try:
                connection, _address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection.settimeout(None)
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            with self._lock:
                self._open.add(connection)
                self._threads.append(thread)
            thread.start()

    def _serve(self, connection: socket.socket) -> None:
        pending = b""
        try:
            while not self._closing.is_set():
                request, pending = _read_request(connection, pending)
                if request is None:
                    return
                with self._lock:
                    self._seen.append(request)
                if not self._run(connection, self._next_script(request.path)):
                    return
        except OSError:
            return
        finally:
            with self._lock:
                self._open.discard(connection)
            connection.close()

    def _next_script(self, path: str) -> Script:
        with self._lock:
            scripts = self._scripts.get(path)
            if not scripts:
                return [Send(answer(b"no script for this path", 404, content_type="text/plain"))]
            return scripts.popleft() if len(scripts) > 1 else scripts[0]

    def _run(self, connection: socket.socket, script: Iterable[Step]) -> bool:
        """Run ``script``; False once the connection is done with."""
        for step in script:
            if isinstance(step, Close):
                return False
            if isinstance(step, Send):
                if not self._send(connection, step.data):
                    return False
            elif isinstance(step, Trickle):
                for index in range(len(step.data)):
                    if not self._send(connection, step.data[index : index + 1]):
                        return False
                    if self._client_left(connection, step.interval):
                        return False
            elif self._client_left(connection, None):
                return False
        return True

    def _send(self, connection: socket.socket, data: bytes) -> bool:
        try:
            connection.sendall(data)
        except OSError:
            self._count_peer_left()
            return False
        return True

    def _client_left(self, connection: socket.socket, wait: float | None) -> bool:
        """Whether the client closed its side within ``wait`` seconds (None: ever)."""
        readable, _, _ = select.select([connection], [], [], wait)
        if not readable:
            return False
        try:
            gone = connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            gone = True
        if gone and not self._closing.is_set():
            self._count_peer_left()
        # Data from the client (a pipelined request) is not what these scripts expect.
        return True

    def _count_peer_left(self) -> None:
        with self._lock:
            self._peer_left += 1


def _read_request(connection: socket.socket, pending: bytes) -> tuple[Seen | None, bytes]:
    """The next request's head (status requests have no body), and what followed it."""
    while b"\r\n\r\n" not in pending:
        chunk = connection.recv(65536)
        if not chunk:
            return None, b""
        pending += chunk
    head, _, rest = pending.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Seen(method, target, headers, time.time()), rest
