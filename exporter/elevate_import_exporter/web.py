"""The exporter's HTTP side: wiring of the parts, the endpoints, the landing page."""

from __future__ import annotations

import gzip
import html
import logging
import socket
import threading
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from elevate_import_exporter import __version__
from elevate_import_exporter.client import ElevateClient
from elevate_import_exporter.collector import ImportCollector
from elevate_import_exporter.config import Settings
from elevate_import_exporter.ids import TrackedIds
from elevate_import_exporter.poller import ImportState, Poller, RequestStats

log = logging.getLogger(__name__)

DEFAULT_BUDGET = 10.0
MIN_BUDGET = 0.1
# Prometheus sends its scrape timeout; the poll must end this much earlier so that
# rendering and sending the answer still fit.
BUDGET_MARGIN = 0.5


class ListenError(Exception):
    """The HTTP server could not bind its address."""


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


class Exporter:
    """Everything ``run`` needs, built from :class:`Settings`; start it, then stop it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        stats = RequestStats()
        client = ElevateClient(
            settings.base_url,
            settings.api_key,
            pool_size=settings.concurrency,
            timeout=settings.timeout,
            retries=settings.retries,
            on_request=stats.record,
        )
        ids = TrackedIds(settings.import_ids, settings.ids_file)
        self.poller = Poller(client, ids, stats, concurrency=settings.concurrency)
        self.registry = CollectorRegistry()
        self.registry.register(ImportCollector(self.poller))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        try:
            self._server = _bind(settings.listen_host, settings.listen_port, self)
        except ListenError:
            self.poller.close()
            raise
        self._thread: threading.Thread | None = None
        self.ready = threading.Event()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = self.settings.listen_host or "localhost"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def serve_forever(self) -> None:
        self.ready.set()
        # The interval bounds how long stop() waits for the loop to notice.
        self._server.serve_forever(poll_interval=0.05)

    def start(self) -> None:
        """Serve from a background thread (tests, the demo)."""
        self._thread = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()
        self.poller.close()

    def metrics(self, accept: str, accept_encoding: str, budget: float) -> tuple[bytes, str, bool]:
        self.poller.poll(budget)
        encoder, content_type = choose_encoder(accept)
        body = encoder(self.registry)
        if "gzip" in accept_encoding:
            return gzip.compress(body, compresslevel=6), content_type, True
        return body, content_type, False

    def landing_page(self) -> bytes:
        snapshot = self.poller.snapshot()
        rows = "\n".join(_row(state) for state in snapshot.imports.values())
        path = html.escape(self.settings.telemetry_path)
        page = _PAGE.format(
            version=html.escape(__version__),
            path=path,
            count=len(snapshot.imports),
            rows=rows or '<tr><td colspan="6">No import ids are tracked.</td></tr>',
        )
        return page.encode("utf-8")


def _row(state: ImportState) -> str:
    info = state.info
    since = (
        datetime.fromtimestamp(state.status_since, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        if state.status_since is not None
        else ""
    )
    cells = (
        state.id,
        info.type if info else "",
        info.status if info else "unknown yet",
        since,
        info.message if info else "",
        "yes" if state.poll_success else "no",
    )
    return "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>"


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Elevate import exporter</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }}
</style>
</head>
<body>
<h1>Elevate import exporter</h1>
<p>Version {version}. <a href="{path}">Metrics</a> &middot;
<a href="/-/healthy">Health</a> &middot; <a href="/-/ready">Readiness</a></p>
<h2>Tracked imports ({count})</h2>
<p>As of the latest scrape; this page does not query Elevate.</p>
<table>
<thead><tr><th>Id</th><th>Type</th><th>Status</th><th>Since</th><th>Message</th>
<th>Last poll ok</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
</body>
</html>
"""


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

    def do_GET(self) -> None:
        exporter = self.server.exporter
        path = urlsplit(self.path).path
        if path == exporter.settings.telemetry_path:
            budget = scrape_budget(self.headers.get("X-Prometheus-Scrape-Timeout-Seconds"))
            try:
                body, content_type, gzipped = exporter.metrics(
                    self.headers.get("Accept", ""), self.headers.get("Accept-Encoding", ""), budget
                )
            except Exception:
                # A bug, not a bad answer from Elevate (those are metrics): say so to
                # Prometheus, whose up then shows it, and keep serving.
                log.exception("scrape failed")
                self._send(HTTPStatus.INTERNAL_SERVER_ERROR, b"Scrape failed.\n", _TEXT)
                return
            self._send(HTTPStatus.OK, body, content_type, gzipped=gzipped)
        elif path == "/":
            self._send(HTTPStatus.OK, exporter.landing_page(), "text/html; charset=utf-8")
        elif path == "/-/healthy":
            self._send(HTTPStatus.OK, b"Healthy.\n", _TEXT)
        elif path == "/-/ready":
            if exporter.ready.is_set():
                self._send(HTTPStatus.OK, b"Ready.\n", _TEXT)
            else:
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"Not ready.\n", _TEXT)
        else:
            self._send(HTTPStatus.NOT_FOUND, b"Not found.\n", _TEXT)

    def _send(
        self, status: HTTPStatus, body: bytes, content_type: str, *, gzipped: bool = False
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily, exporter: Exporter):
        self.address_family = family
        self.exporter = exporter
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            # An empty host means every address, IPv4 included.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def _bind(host: str, port: int, exporter: Exporter) -> _Server:
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
            return _Server((address, port), family, exporter)
        except OSError as exc:
            error = exc
    reason = error.strerror if error is not None and error.strerror else str(error)
    raise ListenError(f"cannot listen on {host}:{port}: {reason}")
