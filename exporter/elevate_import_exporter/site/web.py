"""The exporter's HTTP side: requests, routed to the application and to ``/api/v1/``.

:mod:`~elevate_import_exporter.httpd.connections` reads each request (head and body) without a
thread; here a handler thread answers it, building the whole answer in memory.

With a web config (exporter-toolkit web-config.yml) every request must carry the basic-auth
credentials of one of its users, except on the ``auth_exempt_paths`` (by default none),
and every answer carries its extra headers.
"""

from __future__ import annotations

import io
import logging
import re
import resource
import threading
import time
from collections.abc import Callable, Collection, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol
from urllib.parse import SplitResult, parse_qs, urlsplit

from prometheus_client import CollectorRegistry

from elevate_import_exporter import __version__
from elevate_import_exporter.core.records import CatalogError, Query
from elevate_import_exporter.httpd import framing
from elevate_import_exporter.httpd.auth import CHALLENGE, RETRY_AFTER, BasicAuth, Verdict
from elevate_import_exporter.httpd.connections import Connections
from elevate_import_exporter.httpd.handshake import ServerTls
from elevate_import_exporter.httpd.listeners import ListenError as ListenError
from elevate_import_exporter.httpd.listeners import listen_all
from elevate_import_exporter.httpd.webconfig import WebConfig
from elevate_import_exporter.metrics.exposition import Exposition, Renderer
from elevate_import_exporter.polling.poller import Snapshot
from elevate_import_exporter.settings.config import Settings
from elevate_import_exporter.site import restapi
from elevate_import_exporter.site.landing import HISTORY_PAGE_SIZE as ROWS
from elevate_import_exporter.site.landing import landing_page
from elevate_import_exporter.site.scrapetime import DEFAULT_SCRAPE_TIMEOUT as DEFAULT_SCRAPE_TIMEOUT
from elevate_import_exporter.site.scrapetime import MAX_SCRAPE_TIMEOUT as MAX_SCRAPE_TIMEOUT
from elevate_import_exporter.site.scrapetime import poll_budget
from elevate_import_exporter.site.scrapetime import scrape_timeout as scrape_timeout

log = logging.getLogger(__name__)

# Seconds from accepting a connection (or from the first byte of a later request on it)
# until its request headers must be complete; trickling bytes do not extend it.
HEADER_TIMEOUT = 10.0
# Seconds a kept-alive connection may wait for its next request: longer than the usual
# scrape interval (1 min), so that Prometheus keeps its connection.
IDLE_TIMEOUT = 120.0
# Handler threads; requests with complete headers beyond them queue for the next free one.
MAX_THREADS = 32
# Open connections; beyond it the one waiting longest for its headers is closed. Never
# more than half the open-file limit, so the poller keeps descriptors for Elevate.
MAX_CONNECTIONS = 512
# Seconds to write one answer to a client that does not read it.
WRITE_TIMEOUT = 30.0
# Seconds a stop (SIGTERM) waits for the answers of requests in flight before it cuts
# them: well within docker stop's and Kubernetes' grace periods (10 s, 30 s).
DRAIN_SECONDS = 5.0
# Poll budget of the first round, which has no scrape to go by.
DEFAULT_BUDGET = 10.0

_TEXT = "text/plain; charset=utf-8"
_PAGE = re.compile(r"[1-9][0-9]{0,5}")  # /?page=N of the history; anything else is page 1
_VERSION = re.compile(rb"HTTP/([0-9])\.[0-9]")
_BUSY = "too many authentication checks at once; try again shortly"
_NO_WEB_CONFIG = WebConfig()


class Site(Protocol):
    """What the HTTP side serves: the application, seen from here."""

    registry: CollectorRegistry  # what the poll rounds' state makes: shared by a round's scrapes
    fresh_registry: CollectorRegistry | None  # cheap, moving figures: rendered every scrape

    @property
    def telemetry_path(self) -> str: ...

    settings: Settings  # its API flavour (--elevate.api) decides what an id looks like
    registration_enabled: bool

    @property
    def catalog(self) -> restapi.Catalog: ...

    def poll(self, budget: float) -> None: ...

    def snapshot(self) -> Snapshot: ...

    def is_ready(self) -> bool: ...


class HttpServer:
    """The endpoints of a :class:`Site` on ``host:port`` and each of ``extra_addresses``
    (``(host, port)``); an empty host means every address.

    The timeouts and bounds default to the module's constants; tests pass small ones.
    ``web_config`` is a web config, or a function giving the current one (such as
    ``WebConfigWatcher.current``), asked once a request.
    """

    def __init__(
        self,
        site: Site,
        host: str,
        port: int,
        *,
        header_timeout: float = HEADER_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        max_threads: int = MAX_THREADS,
        max_connections: int | None = None,
        write_timeout: float = WRITE_TIMEOUT,
        web_config: WebConfig | Callable[[], WebConfig] | None = None,
        auth_exempt_paths: Collection[str] = (),
        tls: ServerTls | None = None,
        extra_addresses: Sequence[tuple[str, int]] = (),
    ) -> None:
        self.site = site
        self.auth_exempt_paths = frozenset(auth_exempt_paths)
        self._web_lock = threading.Lock()
        self._web: tuple[WebConfig, BasicAuth | None] = (_NO_WEB_CONFIG, None)
        self._web_source: Callable[[], WebConfig] = lambda: _NO_WEB_CONFIG
        self.reload_web_config(web_config)
        self.renderer = Renderer(site.registry, site.fresh_registry)
        # A scrape may wait a whole poll round; half the threads stay free for the rest.
        self.scrape_slots = threading.BoundedSemaphore(max(1, max_threads // 2))
        self._connections = Connections(
            listen_all([(host, port), *extra_addresses]),
            self._respond,
            header_timeout=header_timeout,
            idle_timeout=idle_timeout,
            max_threads=max_threads,
            max_connections=max_connections or _connection_limit(),
            write_timeout=write_timeout,
            tls=tls,
        )

    def reload_web_config(self, config: WebConfig | Callable[[], WebConfig] | None) -> None:
        """Serve with ``config`` from the next request on (SIGHUP)."""
        fixed = config or _NO_WEB_CONFIG
        source = fixed if callable(fixed) else lambda: fixed
        with self._web_lock:
            self._web_source = source
        self.web()

    def web(self) -> tuple[WebConfig, BasicAuth | None]:
        """The web config for a request, and the basic auth it asks for (None: none)."""
        with self._web_lock:
            config = self._web_source()
            if config is not self._web[0]:
                users = config.basic_auth_users
                # A new BasicAuth also forgets the checks remembered under the old users.
                self._web = (config, BasicAuth(users) if users else None)
            return self._web

    @property
    def port(self) -> int:
        """The port of the first address."""
        return self._connections.port

    @property
    def ports(self) -> list[int]:
        """The port of each address, in their order."""
        return self._connections.ports

    @property
    def draining(self) -> bool:
        return self._connections.draining

    def drain(self, seconds: float = DRAIN_SECONDS) -> None:
        """Make ``serve_forever`` return once the requests in flight are answered, within
        ``seconds``; safe from a signal handler."""
        self._connections.drain(seconds)

    def serve_forever(self) -> None:
        self._connections.serve_forever()

    def shutdown(self) -> None:
        self._connections.shutdown()

    def close(self) -> None:
        self._connections.close()

    def _respond(self, peer: str, head: bytes, received: float) -> tuple[bytes, bool]:
        handler = _Handler(self, peer, head, received)
        return handler.answer(), not handler.close_connection


class _Handler(BaseHTTPRequestHandler):
    """One request, read from its complete head, answered into a buffer (never the socket)."""

    protocol_version = "HTTP/1.1"
    server_version = f"elevate-import-exporter/{__version__}"
    raw_requestline: bytes  # set by handle_one_request before parse_request

    def __init__(self, http: HttpServer, peer: str, head: bytes, received: float) -> None:
        # Not BaseRequestHandler.__init__: that wants a socketserver and does the I/O.
        self.http = http
        self.received = received
        self.client_address = (peer, 0)
        end = framing.HEAD_END.search(head)
        self.raw_head = head[: end.end()] if end else head  # what the loop framed the request by
        self.rfile = io.BytesIO(head)
        self.body = b""
        self.refused = False  # its framing: the connection closes after the answer
        self._out = self.wfile = io.BytesIO()
        self.close_connection = True
        self.web_config, self.auth = http.web()

    def answer(self) -> bytes:
        self.handle_one_request()
        return self._out.getvalue()

    def parse_request(self) -> bool:
        # Here rather than in do_GET, so that every method of every path is covered.
        if not self._request_line_ok() or not super().parse_request():
            return False
        url = urlsplit(self.path)
        api = url.path.startswith(restapi.PREFIX)
        # The loop framed the request by the same function, from the same bytes.
        frame = framing.of_head(self.raw_head)
        if frame.refusal is not None:
            self.refused = True  # its body cannot be told from the next request
        if frame.unreadable:
            # No header of it can be trusted, Authorization among them: refused before the
            # auth check, and counted nowhere, since what it asks for cannot be known.
            self._refuse(api, frame.refusal or HTTPStatus.BAD_REQUEST, frame.reason)
            return False
        # Auth first: an unauthenticated client learns nothing more and moves no counter.
        if not self._authorized(url.path, api):
            return False
        if frame.refusal is not None:
            if api:
                self._api(url, frame)
            else:
                self._send(frame.refusal, f"{frame.reason}.\n".encode(), _TEXT)
            return False
        self.body = self.rfile.read(frame.length)
        if self.command not in ("GET", "HEAD"):  # every other method: 405 or 404, never 501
            self.do_GET()
            return False
        return True

    def _request_line_ok(self) -> bool:
        """False, answered, for a request line that is not ``METHOD target HTTP/1.x``.

        The stdlib answers some of these as if to an HTTP/0.9 client: a bare HTML body
        without a status line, which no client of today can read.
        """
        words = self.raw_requestline.split()
        version = _VERSION.fullmatch(words[-1]) if len(words) == 3 else None
        if version is not None and version.group(1) == b"1":
            return True
        self.requestline = self.raw_requestline.decode("latin-1").rstrip("\r\n")
        self.command, self.request_version = "", self.protocol_version
        self.refused = True
        if version is not None:
            self._send(
                HTTPStatus.HTTP_VERSION_NOT_SUPPORTED,
                f"{words[-1].decode('latin-1')} is not supported; use HTTP/1.1.\n".encode(),
                _TEXT,
            )
        else:
            self._send(
                HTTPStatus.BAD_REQUEST,
                b"The request line is not 'METHOD target HTTP/1.1'.\n",
                _TEXT,
            )
        return False

    def _authorized(self, path: str, api: bool) -> bool:
        """True if the request may go on; else answered (401, or 429 when too busy)."""
        if self.auth is None or path in self.http.auth_exempt_paths:
            return True
        verdict = self.auth.verify(self.headers.get("Authorization"))
        if verdict is Verdict.GRANTED:
            return True
        if verdict is Verdict.BUSY:
            # Shed before it takes a bcrypt turn: the handler thread is free at once.
            self._refuse(api, HTTPStatus.TOO_MANY_REQUESTS, _BUSY, retry_after=RETRY_AFTER)
            return False
        body, kind = (
            (restapi.UNAUTHORIZED, restapi.JSON_TYPE) if api else (b"Unauthorized.\n", _TEXT)
        )
        self._send(HTTPStatus.UNAUTHORIZED, body, kind, challenge=True)
        return False

    def _refuse(
        self, api: bool, status: HTTPStatus, reason: str, *, retry_after: int | None = None
    ) -> None:
        """An error answer that reaches nothing behind it: JSON under the API, else text."""
        if api:
            body, kind = restapi.error(status, reason).body, restapi.JSON_TYPE
        else:
            body, kind = f"{reason[:1].upper()}{reason[1:]}.\n".encode(), _TEXT
        self._send(status, body, kind, retry_after=retry_after)

    def handle_expect_100(self) -> bool:
        return True  # the loop sent "100 Continue" if the client waited: the body is here

    def end_headers(self) -> None:
        # Every answer, errors from BaseHTTPRequestHandler included, gets the extra headers.
        for name, value in self.web_config.http.headers.items():
            self.send_header(name, value)
        if self.refused or (self.http.draining and not self.close_connection):
            self.send_header("Connection", "close")  # refused, or the server is stopping
        super().end_headers()

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        site = self.http.site
        url = urlsplit(self.path)
        path = url.path
        if path.startswith(restapi.PREFIX):
            self._api(url)
        elif path not in (site.telemetry_path, "/", "/-/healthy", "/-/ready"):
            self._send(HTTPStatus.NOT_FOUND, b"Not found.\n", _TEXT)
        elif self.command not in ("GET", "HEAD"):
            self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"GET only.\n", _TEXT, allow="GET, HEAD")
        elif path == site.telemetry_path:
            self._metrics(site, parse_qs(url.query).get("name[]", []))
        elif path == "/":
            self._landing(site, url.query)
        elif path == "/-/healthy":
            self._send(HTTPStatus.OK, b"Healthy.\n", _TEXT)
        elif site.is_ready():
            self._send(HTTPStatus.OK, b"Ready.\n", _TEXT)
        else:
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"Not ready.\n", _TEXT)

    def _api(self, url: SplitResult, refused: framing.Framing | None = None) -> None:
        site = self.http.site
        api = restapi.RestApi(site.catalog, site.registration_enabled, site.settings.api)
        content_type = self.headers.get("Content-Type")
        request = restapi.Request(self.command, url.path, url.query, content_type, self.body)
        answer = api.refused(request, refused) if refused else api.answer(request)
        self._send(answer.status, answer.body, restapi.JSON_TYPE, allow=answer.allow)

    def _landing(self, site: Site, query: str) -> None:
        pages = parse_qs(query).get("page", [])
        page = int(pages[0]) if len(pages) == 1 and _PAGE.fullmatch(pages[0]) else 1
        try:
            history, total = site.catalog.query(
                Query(finished=True, limit=ROWS, offset=ROWS * (page - 1))
            )
        except CatalogError as exc:  # the live imports are worth a page without the history
            log.warning("landing page without history: %s", exc)
            history, total = [], 0
        count = max(1, -(-total // ROWS))
        body = landing_page(site.snapshot(), site.telemetry_path, history, page, count)
        self._send(HTTPStatus.OK, body, "text/html; charset=utf-8")

    def _metrics(self, site: Site, names: list[str]) -> None:
        if not self.http.scrape_slots.acquire(blocking=False):
            # Scrapes may wait a whole round: a flood of them must not take every thread.
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"Too many scrapes at once.\n", _TEXT)
            return
        try:
            answer = self._scrape(site, names)
        except Exception:
            # A bug, not a bad answer from Elevate (those are metrics): say so to
            # Prometheus, whose up then shows it, and keep serving.
            log.exception("scrape failed")
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, b"Scrape failed.\n", _TEXT)
            return
        finally:
            self.http.scrape_slots.release()
        self._send(HTTPStatus.OK, answer.body, answer.content_type, answer.content_encoding)

    def _scrape(self, site: Site, names: list[str]) -> Exposition:
        accept = self.headers.get("Accept", "")
        encoding = self.headers.get("Accept-Encoding", "")
        renderer = self.http.renderer
        timeout = scrape_timeout(self.headers.get("X-Prometheus-Scrape-Timeout-Seconds"))
        render_seconds = renderer.estimate(accept, encoding)
        site.poll(poll_budget(timeout, time.monotonic() - self.received, render_seconds))
        snapshot = site.snapshot()
        # Scrapes answered from the same round share one rendered answer.
        state = (snapshot.imports, snapshot.last_round, site.catalog.version)
        return renderer.render(accept, encoding, names, state)

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        content_encoding: str | None = None,
        *,
        challenge: bool = False,
        allow: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        self.send_response(status)
        if challenge:
            self.send_header("WWW-Authenticate", CHALLENGE)
        if retry_after is not None:
            self.send_header("Retry-After", str(retry_after))
        if allow:
            self.send_header("Allow", allow)
        if status != HTTPStatus.NO_CONTENT:  # which has neither
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
        if content_encoding:
            self.send_header("Content-Encoding", content_encoding)
        self.send_header("Vary", "Accept, Accept-Encoding")
        self.end_headers()
        if self.command != "HEAD" and status != HTTPStatus.NO_CONTENT:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s %s", self.address_string(), format % args)


def _connection_limit() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(8, min(MAX_CONNECTIONS, soft // 2))
