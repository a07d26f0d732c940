"""The exporter's HTTP side: routes requests to the application, nothing more."""

from __future__ import annotations

import logging
import socket
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry

from elevate_import_exporter import __version__
from elevate_import_exporter.exposition import render
from elevate_import_exporter.landing import landing_page
from elevate_import_exporter.poller import Snapshot

log = logging.getLogger(__name__)

# The poll budget without a scrape timeout to go by (and for the first round).
DEFAULT_BUDGET = 10.0
MIN_BUDGET = 0.1
# Prometheus sends its scrape timeout; the poll must end this much earlier so that
# rendering and sending the answer still fit.
BUDGET_MARGIN = 0.5


class ListenError(Exception):
    """The HTTP server could not bind its address."""


class Site(Protocol):
    """What the HTTP side serves: the application, seen from here."""

    registry: CollectorRegistry

    @property
    def telemetry_path(self) -> str: ...

    def poll(self, budget: float) -> None: ...

    def snapshot(self) -> Snapshot: ...

    def is_ready(self) -> bool: ...


def scrape_budget(header: str | None) -> float:
    """Seconds a poll round may take, from ``X-Prometheus-Scrape-Timeout-Seconds``."""
    if header:
        try:
            timeout = float(header)
        except ValueError:
            return DEFAULT_BUDGET
        if timeout > 0:
            return max(MIN_BUDGET, timeout - BUDGET_MARGIN)
    return DEFAULT_BUDGET


class HttpServer:
    """The endpoints of a :class:`Site` on ``host:port``; an empty host means every address."""

    def __init__(self, site: Site, host: str, port: int) -> None:
        self._server = _bind(host, port, site)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def serve_forever(self) -> None:
        # The interval bounds how long shutdown() waits for the loop to notice.
        self._server.serve_forever(poll_interval=0.05)

    def shutdown(self) -> None:
        self._server.shutdown()

    def close(self) -> None:
        self._server.server_close()


_TEXT = "text/plain; charset=utf-8"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"elevate-import-exporter/{__version__}"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in two writes; with Nagle on, a kept-alive
        # connection waits for the client's delayed ACK (~40 ms) between them.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        site = self.server.site
        url = urlsplit(self.path)
        path = url.path
        if path == site.telemetry_path:
            self._metrics(site, parse_qs(url.query).get("name[]", []))
        elif path == "/":
            self._send(
                HTTPStatus.OK,
                landing_page(site.snapshot(), site.telemetry_path),
                "text/html; charset=utf-8",
            )
        elif path == "/-/healthy":
            self._send(HTTPStatus.OK, b"Healthy.\n", _TEXT)
        elif path == "/-/ready":
            if site.is_ready():
                self._send(HTTPStatus.OK, b"Ready.\n", _TEXT)
            else:
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"Not ready.\n", _TEXT)
        else:
            self._send(HTTPStatus.NOT_FOUND, b"Not found.\n", _TEXT)

    def _metrics(self, site: Site, names: list[str]) -> None:
        budget = scrape_budget(self.headers.get("X-Prometheus-Scrape-Timeout-Seconds"))
        try:
            site.poll(budget)
            answer = render(
                site.registry,
                self.headers.get("Accept", ""),
                self.headers.get("Accept-Encoding", ""),
                names,
            )
        except Exception:
            # A bug, not a bad answer from Elevate (those are metrics): say so to
            # Prometheus, whose up then shows it, and keep serving.
            log.exception("scrape failed")
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, b"Scrape failed.\n", _TEXT)
            return
        self._send(HTTPStatus.OK, answer.body, answer.content_type, answer.content_encoding)

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        content_encoding: str | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if content_encoding:
            self.send_header("Content-Encoding", content_encoding)
        self.send_header("Vary", "Accept, Accept-Encoding")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily, site: Site):
        self.address_family = family
        self.site = site
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            # An empty host means every address, IPv4 included.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def _bind(host: str, port: int, site: Site) -> _Server:
    candidates: list[tuple[str, socket.AddressFamily]]
    if host:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        candidates = [(str(info[4][0]), info[0]) for info in infos]
    else:
        candidates = [("::", socket.AF_INET6), ("0.0.0.0", socket.AF_INET)]
    error: OSError | None = None
    for address, family in candidates:
        try:
            return _Server((address, port), family, site)
        except OSError as exc:
            error = exc
    reason = error.strerror if error is not None and error.strerror else str(error)
    raise ListenError(f"cannot listen on {host}:{port}: {reason}")
