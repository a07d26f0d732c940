"""The exporter's routes on the generic server: metrics, health and readiness, the landing
page, and the REST API under ``/api/v1/``; the application seen through :class:`Site`.

Requests reach :class:`SiteRoutes` whole, authorized and not refused
(:mod:`~elevate_import_exporter.httpd.server` sees to that); errors before them are worded
here: JSON under the API, a line of text elsewhere.

A scrape polls for at most what Prometheus' scrape timeout leaves once the time spent
and the rendering are taken off, so that the answer is written within it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Protocol, Unpack
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry

from elevate_import_exporter.core.records import CatalogError, ImportRecord, Query
from elevate_import_exporter.core.state import RoundResult, Snapshot
from elevate_import_exporter.httpd.listeners import ListenError as ListenError
from elevate_import_exporter.httpd.messages import Answer, Request
from elevate_import_exporter.httpd.server import DRAIN_SECONDS as DRAIN_SECONDS
from elevate_import_exporter.httpd.server import HEADER_TIMEOUT as HEADER_TIMEOUT
from elevate_import_exporter.httpd.server import MAX_CONNECTIONS as MAX_CONNECTIONS
from elevate_import_exporter.httpd.server import MAX_THREADS as MAX_THREADS
from elevate_import_exporter.httpd.server import Server, ServerOptions
from elevate_import_exporter.lifecycle.summary import WeekSummary, week_summary
from elevate_import_exporter.metrics.exposition import Exposition, Renderer
from elevate_import_exporter.settings.config import Settings
from elevate_import_exporter.site import restapi
from elevate_import_exporter.site.landing import HISTORY_PAGE_SIZE as ROWS
from elevate_import_exporter.site.landing import landing_page

log = logging.getLogger(__name__)

# Poll budget of the first round, which has no scrape to go by.
DEFAULT_BUDGET = 10.0
# The scrape timeout assumed without a usable X-Prometheus-Scrape-Timeout-Seconds
# (Prometheus' default), and the most a client may ask for.
DEFAULT_SCRAPE_TIMEOUT = 10.0
MAX_SCRAPE_TIMEOUT = 300.0
MIN_BUDGET = 0.1
# The answer must be written within the scrape timeout: the poll ends this much earlier
# than the time left after rendering (estimated at RENDER_FACTOR times the last render).
BUDGET_MARGIN = 0.5
RENDER_FACTOR = 1.5

_TEXT = "text/plain; charset=utf-8"
_HTML = "text/html; charset=utf-8"
_VARY = ("Vary", "Accept, Accept-Encoding")
_PAGE = re.compile(r"[1-9][0-9]{0,5}")  # /?page=N of the history; anything else is page 1
# The landing page's summary of the last days is read again after something changed (a
# poll round, a registration), but not sooner than this; and at least this often, as the
# days move on. Open tabs reload every few seconds, and a summary may read 20,000 rows
# (half a second): a week's figures need not follow every round.
SUMMARY_MIN_AGE = 30.0
SUMMARY_MAX_AGE = 300.0


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


class SiteRoutes:
    """The exporter's answers (a :class:`~elevate_import_exporter.httpd.server.Routes`).

    At most ``scrapes`` scrapes at once: one may wait a whole poll round, and the other
    threads stay free for the rest."""

    def __init__(self, site: Site, scrapes: int) -> None:
        self.site = site
        self.renderer = Renderer(site.registry, site.fresh_registry)
        self.scrape_slots = threading.BoundedSemaphore(max(1, scrapes))
        self.page_data = PageData()

    def answer(self, request: Request) -> Answer:
        site, path, method = self.site, request.path, request.method
        if path.startswith(restapi.PREFIX):
            return self._api(request)
        if path not in (site.telemetry_path, "/", "/-/healthy", "/-/ready"):
            return _text(HTTPStatus.NOT_FOUND, b"Not found.\n")
        if method not in ("GET", "HEAD"):  # every other method: 405 (or 404), never 501
            return _text(HTTPStatus.METHOD_NOT_ALLOWED, b"GET only.\n", ("Allow", "GET, HEAD"))
        if path == site.telemetry_path:
            return self._metrics(request)
        if path == "/":
            return self._landing(request.query)
        if path == "/-/healthy":
            return _text(HTTPStatus.OK, b"Healthy.\n")
        if site.is_ready():
            return _text(HTTPStatus.OK, b"Ready.\n")
        return _text(HTTPStatus.SERVICE_UNAVAILABLE, b"Not ready.\n")

    def error(self, request: Request, status: int, reason: str) -> Answer:
        if request.path.startswith(restapi.PREFIX):
            if request.refusal is not None and request.trusted:
                answer = self._rest_api().refused(_rest_request(request), status, reason)
            else:
                answer = restapi.error(HTTPStatus(status), reason)
            return Answer(status, (("Content-Type", restapi.JSON_TYPE), _VARY), answer.body)
        return _text(status, f"{reason[:1].upper()}{reason[1:]}.\n".encode())

    def _rest_api(self) -> restapi.RestApi:
        site = self.site
        settings = site.settings
        return restapi.RestApi(
            site.catalog,
            site.registration_enabled,
            settings.api,
            (settings.api_key.reveal(),),
        )

    def _api(self, request: Request) -> Answer:
        answer = self._rest_api().answer(_rest_request(request))
        headers = [_VARY]
        if answer.status != HTTPStatus.NO_CONTENT:
            headers.append(("Content-Type", restapi.JSON_TYPE))
        if answer.allow:
            headers.append(("Allow", answer.allow))
        return Answer(answer.status, tuple(headers), answer.body)

    def _landing(self, query: str) -> Answer:
        site = self.site
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
        snapshot = site.snapshot()
        records, summary = self.page_data.read(site.catalog, snapshot)
        body = landing_page(
            snapshot,
            site.telemetry_path,
            history,
            page,
            count,
            records=records,
            metric_labels=site.settings.imports_metric_labels,
            summary=summary,
        )
        return Answer(HTTPStatus.OK, (("Content-Type", _HTML), _VARY), body)

    def _metrics(self, request: Request) -> Answer:
        if not self.scrape_slots.acquire(blocking=False):
            # Scrapes may wait a whole round: a flood of them must not take every thread.
            return _text(HTTPStatus.SERVICE_UNAVAILABLE, b"Too many scrapes at once.\n")
        try:
            exposition = self._scrape(request)
        except Exception:
            # A bug, not a bad answer from Elevate (those are metrics): say so to
            # Prometheus, whose up then shows it, and keep serving.
            log.exception("scrape failed")
            return _text(HTTPStatus.INTERNAL_SERVER_ERROR, b"Scrape failed.\n")
        finally:
            self.scrape_slots.release()
        headers = [("Content-Type", exposition.content_type), _VARY]
        if exposition.content_encoding:
            headers.append(("Content-Encoding", exposition.content_encoding))
        return Answer(HTTPStatus.OK, tuple(headers), exposition.body)

    def _scrape(self, request: Request) -> Exposition:
        site = self.site
        accept = request.header("Accept") or ""
        encoding = request.header("Accept-Encoding") or ""
        names = parse_qs(request.query).get("name[]", [])
        timeout = scrape_timeout(request.header("X-Prometheus-Scrape-Timeout-Seconds"))
        render_seconds = self.renderer.estimate(accept, encoding)
        site.poll(poll_budget(timeout, time.monotonic() - request.received, render_seconds))
        snapshot = site.snapshot()
        # Scrapes answered from the same round share one rendered answer.
        state = (snapshot.imports, snapshot.last_round, site.catalog.version)
        return self.renderer.render(accept, encoding, names, state)


class PageData:
    """What the landing page reads from the store besides the history: the records of the
    live imports (their source and labels) and the summary of the last days.

    Kept until a poll round or the catalog changes (the records), and for
    :data:`SUMMARY_MIN_AGE` to :data:`SUMMARY_MAX_AGE` seconds (the summary), so that
    pages reloading every few seconds in many tabs cost one read. Thread-safe; a failed
    read leaves the page without that part, and is tried again at the next page.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._records_key: tuple[object, RoundResult | None] | None = None
        self._records: Mapping[str, ImportRecord] = {}
        self._summary_key: tuple[object, RoundResult | None] | None = None
        self._summary: WeekSummary | None = None
        self._summary_at = 0.0

    def read(
        self, catalog: restapi.Catalog, snapshot: Snapshot
    ) -> tuple[Mapping[str, ImportRecord], WeekSummary | None]:
        key = (catalog.version, snapshot.last_round)
        with self._lock:
            if not _same(key, self._records_key):
                self._records = self._live_records(catalog, len(snapshot.imports))
                self._records_key = key if self._records or not snapshot.imports else None
            now = self._clock()
            age = now - self._summary_at
            stale = self._summary is None or age >= SUMMARY_MAX_AGE or age < 0
            if stale or (not _same(key, self._summary_key) and age >= SUMMARY_MIN_AGE):
                self._summary = self._read_summary(catalog, now)
                self._summary_key, self._summary_at = key, now
            return self._records, self._summary

    @staticmethod
    def _live_records(catalog: restapi.Catalog, live: int) -> Mapping[str, ImportRecord]:
        # The store holds a record of every tracked import once a round has seen it; a
        # few more rows than live ids leave room for ids that left the sources just now.
        try:
            records, _ = catalog.query(Query(retired=False, limit=2 * live + ROWS))
        except CatalogError as exc:
            log.warning("landing page without sources and labels: %s", exc)
            return {}
        return {record.id: record for record in records}

    @staticmethod
    def _read_summary(catalog: restapi.Catalog, now: float) -> WeekSummary | None:
        try:
            return week_summary(catalog, now)
        except CatalogError as exc:
            log.warning("landing page without the summary of the last days: %s", exc)
            return None


def _same(key: tuple[object, ...], other: tuple[object, ...] | None) -> bool:
    """Whether two keys hold the very same objects (versions compare by identity)."""
    return other is not None and all(a is b for a, b in zip(key, other, strict=True))


class HttpServer(Server):
    """The endpoints of a :class:`Site` on the generic
    :class:`~elevate_import_exporter.httpd.server.Server` (which takes the same options)."""

    def __init__(
        self,
        site: Site,
        host: str,
        port: int,
        *,
        max_threads: int = MAX_THREADS,
        **options: Unpack[ServerOptions],
    ) -> None:
        self.site = site
        routes = SiteRoutes(site, max_threads // 2)
        self.renderer = routes.renderer
        self.scrape_slots = routes.scrape_slots
        super().__init__(routes, host, port, max_threads=max_threads, **options)


def scrape_timeout(header: str | None) -> float:
    """The client's ``X-Prometheus-Scrape-Timeout-Seconds``: a finite positive number of
    seconds, at most :data:`MAX_SCRAPE_TIMEOUT`; anything else means the default."""
    try:
        seconds = float(header or "")
    except ValueError:
        return DEFAULT_SCRAPE_TIMEOUT
    if not 0 < seconds < float("inf"):  # also false for nan
        return DEFAULT_SCRAPE_TIMEOUT
    return min(seconds, MAX_SCRAPE_TIMEOUT)


def poll_budget(timeout: float, spent: float, render_seconds: float) -> float:
    """Seconds the poll may take so that the answer is written ``timeout`` seconds after
    the request, ``spent`` of them gone already, rendering taking about ``render_seconds``."""
    return max(MIN_BUDGET, timeout - spent - BUDGET_MARGIN - RENDER_FACTOR * render_seconds)


def _text(status: int, body: bytes, *headers: tuple[str, str]) -> Answer:
    return Answer(status, (*headers, ("Content-Type", _TEXT), _VARY), body)


def _rest_request(request: Request) -> restapi.Request:
    return restapi.Request(
        request.method, request.path, request.query, request.header("Content-Type"), request.body
    )
