"""How the simulator speaks HTTP/1.1: a threading server that can end its keep-alive
connections, and a lean request handler that routes each request to the ``Simulator``.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import socket
import socketserver
import threading
import time
from email.utils import formatdate
from http.client import HTTPMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

from elevate_import_exporter.simulator.imports import import_kind

if TYPE_CHECKING:
    from elevate_import_exporter.simulator.server import Simulator

# The package's logger, not this module's: log records keep the name they had before the
# simulator was split into modules.
log = logging.getLogger("elevate_import_exporter.simulator")

# The path of one import's status (Web API v2: the id follows it; Admin API: ``?id=``).
STATUS_PATH = "/api/v2/import/status/"
ADMIN_STATUS_PATHS = {
    "admin-v4": "/api/admin/v4/import/status",
    "admin-v3": "/api/admin/v3/import/status",
}
# The API flavours the simulator speaks, by their ``--elevate.api`` names.
SIMULATED_APIS = ("web-v2", *ADMIN_STATUS_PATHS)

# (HTTP status, content type, body) of an answer.
Answer = tuple[int, bytes, bytes]

_REASONS = {
    200: b"OK",
    202: b"Accepted",
    204: b"No Content",
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}


class Server(ThreadingHTTPServer):
    """Serves one ``Simulator``, keeping its connections so that stop() can end them."""

    daemon_threads = True
    block_on_close = False
    # Benchmarks open dozens of connections at once; the default backlog of 5 drops some.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], sim: Simulator, family: int) -> None:
        self.address_family = family
        self.sim = sim
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind also resolves the host name (socket.getfqdn), a DNS
        # lookup that can stall start-up for seconds; nothing here needs that name.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients vanishing mid-answer is normal (timeouts, stop()); no traceback on stderr.
        log.debug("connection from %s ended with an error", client_address, exc_info=True)

    def track(self, conn: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(conn)
        if self.sim._stopping.is_set():
            self._close(conn)

    def untrack(self, conn: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(conn)

    def close_connections(self) -> None:
        """End keep-alive connections, so that a stopped simulator answers nothing more."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            self._close(conn)

    @staticmethod
    def _close(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):  # already closed by the client
            conn.shutdown(socket.SHUT_RDWR)


_date_cache: tuple[int, bytes] = (0, b"")


def _http_date() -> bytes:
    # Formatting the date costs more than the rest of an answer; it changes once a second.
    global _date_cache
    now = int(time.time())
    cached = _date_cache
    if cached[0] != now:
        cached = (now, formatdate(now, usegmt=True).encode("ascii"))
        _date_cache = cached
    return cached[1]


_MAX_HEADERS = 100
_MAX_LINE = 65536
# parse_request fills _Handler.fields instead of the email.message.Message in .headers;
# this empty one stands in so that code expecting .headers finds no fields, not an error.
_NO_MESSAGE = HTTPMessage()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "elevate-simulator"
    # An idle keep-alive connection of a vanished client must not hold a thread forever.
    timeout = 300
    server: Server
    fields: dict[str, str]  # the request's header fields by lower-case name
    raw_requestline: bytes  # set by handle_one_request before parse_request

    def setup(self) -> None:
        super().setup()
        # Without this an answer can wait ~40 ms for the client's delayed ACK (Nagle).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def parse_request(self) -> bool:
        # The standard parse_request hands every header block to the email package, which
        # cost two thirds of this server's CPU per request. Requests here are small and
        # plain, so a dictionary of lower-cased field names does. HTTP/1.0 and 1.1 only.
        self.close_connection = True
        self.request_version = "HTTP/1.0"  # how to word an error before the version is known
        self.requestline = line = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = line.split()
        if not words:
            return False
        if len(words) != 3:
            self.send_error(400, "Bad request syntax")
            return False
        command, path, version = words
        if version not in {"HTTP/1.1", "HTTP/1.0"}:
            self.send_error(505 if version.startswith("HTTP/") else 400, "Unsupported version")
            return False
        self.command, self.path, self.request_version = command, path, version
        fields: dict[str, str] = {}
        for _ in range(_MAX_HEADERS + 1):
            raw = self.rfile.readline(_MAX_LINE + 1)
            if len(raw) > _MAX_LINE:
                self.send_error(431, "Header line too long")
                return False
            if raw in {b"\r\n", b"\n", b""}:
                break
            name, colon, value = raw.decode("iso-8859-1").partition(":")
            if not colon:
                self.send_error(400, "Bad header line")
                return False
            fields[name.strip().lower()] = value.strip()
        else:
            self.send_error(431, "Too many header fields")
            return False
        self.fields = fields
        self.headers = _NO_MESSAGE
        tokens = {t.strip() for t in fields.get("connection", "").lower().split(",")}
        if version == "HTTP/1.1":
            self.close_connection = "close" in tokens
            if fields.get("expect", "").lower() == "100-continue":
                return self.handle_expect_100()
        else:
            self.close_connection = "keep-alive" not in tokens
        if command not in {"GET", "POST", "PUT"}:
            # Answered here: any other method, even one http.server has never heard of.
            self._not_allowed()
            return False
        return True

    def do_GET(self) -> None:
        sim = self.server.sim
        path, _, query = self.path.partition("?")
        import_id = status_query(sim.api, path, query)
        if import_id is None:
            self._send(sim._answer_get(path))
            return
        answer = sim._answer_status(import_id, self.fields.get("api-key"))
        if answer is None:
            self.close_connection = True
        else:
            self._send(answer)

    def do_POST(self) -> None:
        path = self.path.partition("?")[0]
        sim = self.server.sim
        if import_kind(sim.api, path) is not None:
            answer = sim.import_desk.receive(self.command, path, self.fields, self.rfile)
            if answer is None:
                self.close_connection = True
            else:
                self._send(answer)
        elif self.command == "POST":
            self._drain_body()
            self._send(sim._answer_post(path))
        else:
            self._not_allowed()

    do_PUT = do_POST

    def _not_allowed(self) -> None:
        self._drain_body()
        self._send(self.server.sim._answer_other_method())

    def _drain_body(self) -> None:
        # Read any request body, or the next request on this connection would start mid-body.
        if self.fields.get("transfer-encoding"):
            self.close_connection = True
            return
        try:
            length = int(self.fields.get("content-length") or 0)
        except ValueError:
            length = -1
        if 0 <= length <= 1 << 20:
            if length:
                self.rfile.read(length)
        else:
            self.close_connection = True

    def _send(self, answer: Answer) -> None:
        code, content_type, body = answer
        extra = b""
        if code == 405:
            extra += b"Allow: GET\r\n"
        if self.server.sim.api in ADMIN_STATUS_PATHS:
            # The Admin API compresses on request; Web API v2 answers as it always has.
            extra += b"Vary: Accept-Encoding\r\n"
            if accepts_gzip(self.fields.get("accept-encoding", "")):
                body = gzip.compress(body, mtime=0)
                extra += b"Content-Encoding: gzip\r\n"
        if self.close_connection:
            extra += b"Connection: close\r\n"
        elif self.request_version == "HTTP/1.0":
            extra += b"Connection: keep-alive\r\n"
        framing = b"Content-Type: %s\r\nContent-Length: %d\r\n" % (content_type, len(body))
        # One write for headers and body: one TCP segment for a small answer.
        self.wfile.write(
            b"HTTP/1.1 %d %s\r\nServer: elevate-simulator\r\nDate: %s\r\n%s%s\r\n%s"
            % (
                code,
                _REASONS[code],
                _http_date(),
                b"" if code == 204 else framing,
                extra,
                b"" if self.command == "HEAD" else body,
            )
        )
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s -> %d", self.command, self.path, code)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


def status_query(api: str, path: str, query: str) -> str | None:
    """The id a status query of ``api`` asks for (``""``: none usable), None for another path."""
    if api in ADMIN_STATUS_PATHS:
        if path != ADMIN_STATUS_PATHS[api]:
            return None
        ids = [value for name, value in parse_qsl(query, keep_blank_values=True) if name == "id"]
        return ids[0] if len(ids) == 1 else ""
    if path.startswith(STATUS_PATH):
        raw_id = path[len(STATUS_PATH) :]
        if raw_id and "/" not in raw_id:
            return unquote(raw_id)
    return None


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` value allows gzip (``gzip;q=0`` does not)."""
    weights: dict[str, float] = {}
    for item in accept_encoding.lower().split(","):
        coding, _, params = item.partition(";")
        weight = 1.0
        name, _, value = params.strip().partition("=")
        if name.strip() == "q":
            try:
                weight = float(value)
            except ValueError:
                weight = 0.0
        weights[coding.strip()] = weight
    named = weights.get("gzip", weights.get("x-gzip"))
    return (named if named is not None else weights.get("*", 0.0)) > 0
