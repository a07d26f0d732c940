"""The application: every part of ``run`` built from :class:`Settings`, and its life cycle.

The CLI hands it settings; it wires the transport, the API flavour, the id
sources, the poller, the metric state and the HTTP server together, starts the
first poll round at once, and stops everything again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from prometheus_client import CollectorRegistry
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from elevate_import_exporter.core.model import id_rule
from elevate_import_exporter.core.outcomes import Outcomes
from elevate_import_exporter.core.records import Registration
from elevate_import_exporter.elevate.api import status_api
from elevate_import_exporter.httpd.tls import TlsProvider
from elevate_import_exporter.httpd.webconfig import WebConfigWatcher
from elevate_import_exporter.lifecycle.catalog import Catalog, live_states, registered_sources
from elevate_import_exporter.lifecycle.store import Store
from elevate_import_exporter.metrics.collector import ImportCollector
from elevate_import_exporter.metrics.stats import RequestStats
from elevate_import_exporter.polling.idsfile import IdsFile
from elevate_import_exporter.polling.poller import PROBE_ID, Poller, Snapshot
from elevate_import_exporter.polling.sources import FixedIds, IdSource, TrackedIds
from elevate_import_exporter.proxy.metrics import ProxyCollector
from elevate_import_exporter.proxy.server import ImportProxy
from elevate_import_exporter.settings.config import Settings
from elevate_import_exporter.site.web import DEFAULT_BUDGET, DRAIN_SECONDS, HttpServer

log = logging.getLogger(__name__)

HEALTH_PATHS = ("/-/healthy", "/-/ready")


class Application:
    """A running exporter: ``poll``, ``snapshot``, ``serve_forever`` or ``start``, ``stop``.

    Raises :class:`~elevate_import_exporter.polling.idsfile.IdsFileError` or
    :class:`~elevate_import_exporter.httpd.listeners.ListenError` when it cannot start.
    """

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.registration_enabled = settings.enable_registration
        self.stats = RequestStats()
        self.store = Store.open(settings.storage_path)
        try:
            # Read once, for the id sources, the poller and the catalog alike.
            records = self.store.load(id_rule(settings.api))
            registered = registered_sources(records)
            sources: list[IdSource] = [FixedIds(settings.import_ids)]
            if settings.ids_file is not None:
                sources.append(IdsFile(settings.ids_file, *id_rule(settings.api)))
            sources += registered.values()
        except Exception:
            self.store.close()
            raise
        self.ids = TrackedIds(sources, max_tracked=settings.max_tracked)
        self.poller = Poller(
            status_api(settings.client, self.stats.record),
            self.ids,
            concurrency=settings.concurrency,
            min_interval=settings.min_poll_interval,
            clock=clock,
            probe_id=PROBE_ID,
            restored=live_states(records),
        )
        # The aggregates that outlive retention, fed by the catalog, read by the collector.
        self.outcomes = Outcomes(
            settings.imports_metric_labels,
            settings.imports_metric_labels_max_values,
            settings.imports_duration_buckets,
            settings.imports_queue_buckets,
        )
        self.catalog = Catalog(
            self.store,
            records,
            retention=settings.retention,
            history=settings.history,
            max_registered=settings.max_tracked,
            clock=clock,
            sources=registered,
            ids=self.ids,
            live=self.poller,
            outcomes=self.outcomes,
        )
        # What the poll rounds' state makes, rendered once a round and shared by its scrapes;
        # and what moves between rounds (process, proxy), rendered for every scrape.
        self.registry = CollectorRegistry()
        self.registry.register(
            ImportCollector(self.poller, self.stats, self.ids, self.catalog, self.outcomes)
        )
        self.fresh_registry: CollectorRegistry | None = CollectorRegistry()
        ProcessCollector(registry=self.fresh_registry)
        PlatformCollector(registry=self.fresh_registry)
        GCCollector(registry=self.fresh_registry)
        self._first_round_done = threading.Event()
        try:
            self.web_config = _web_config(settings)
            tls = _tls(self.web_config)
            self._tls_served = tls is not None
            self._server = HttpServer(
                self,
                settings.listen_host,
                settings.listen_port,
                extra_addresses=settings.listen_addresses[1:],
                web_config=self.web_config.current if self.web_config else None,
                auth_exempt_paths=HEALTH_PATHS if settings.auth_exempt_health else (),
                tls=tls,
            )
            try:
                self.proxy = _proxy(settings, self.catalog, self.web_config, tls, clock)
            except Exception:
                self._server.close()
                raise
        except Exception:
            self.poller.close()
            self.store.close()
            raise
        if self.proxy is not None:
            self.fresh_registry.register(ProxyCollector(self.proxy.stats))
        self._thread: threading.Thread | None = None
        self._proxy_thread: threading.Thread | None = None
        threading.Thread(target=self._first_round, name="first-round", daemon=True).start()

    # -- what the HTTP side asks of it -----------------------------------------------

    @property
    def telemetry_path(self) -> str:
        return self.settings.telemetry_path

    def poll(self, budget: float) -> None:
        """Run a poll round that ends within ``budget`` seconds (or share the one running),
        then keep what it changed and retire what is due."""
        self.poller.poll(budget)
        self.catalog.after_poll()

    def snapshot(self) -> Snapshot:
        return self.poller.snapshot()

    def is_ready(self) -> bool:
        """True once the first poll round has ended, whatever its outcome."""
        return self._first_round_done.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._first_round_done.wait(timeout)

    def _first_round(self) -> None:
        try:
            self.poll(DEFAULT_BUDGET)
        except Exception:
            log.exception("the first poll round failed")
        finally:
            self._first_round_done.set()

    def scrape_every(self, seconds: float) -> Callable[[], None]:
        """Poll every ``seconds`` as a Prometheus would scrape (the demo); returns a stop."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(seconds):
                try:
                    self.poll(DEFAULT_BUDGET)
                except Exception:
                    log.exception("a poll round failed")

        threading.Thread(target=loop, name="self-scrape", daemon=True).start()
        return stop.set

    # -- life cycle -------------------------------------------------------------------

    @property
    def renders(self) -> int:
        """Answers to /metrics built so far (scrapes of one round share one per format)."""
        return self._server.renderer.renders

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        """The URL of the first address."""
        return self.urls[0]

    @property
    def urls(self) -> list[str]:
        """The URL of each address served, in the order given."""
        scheme = "https" if self._tls_served else "http"
        hosts = [host for host, _port in self.settings.listen_addresses] or [
            self.settings.listen_host
        ]
        ports = self._server.ports
        return [f"{scheme}://{_url_host(h)}:{p}" for h, p in zip(hosts, ports, strict=True)]

    @property
    def proxy_urls(self) -> list[str]:
        """The URL of each address the import proxy serves on; empty without a proxy."""
        if self.proxy is None:
            return []
        scheme = "https" if self._tls_served else "http"
        hosts = [host for host, _port in self.settings.proxy_addresses]
        return [
            f"{scheme}://{_url_host(h)}:{p}" for h, p in zip(hosts, self.proxy.ports, strict=True)
        ]

    def reload(self) -> None:
        """Read every id source and the web configuration again (SIGHUP)."""
        if self.web_config is not None:
            self.web_config.reload()
            if self.web_config.unapplied is None:  # else a warning has said why not
                log.info("reloaded the web configuration %s", self.web_config.path)
        self.ids.reload()
        log.info("reloaded the id sources: %d ids tracked", len(self.ids.current()))

    def serve_forever(self) -> None:
        """Serve (and run the import proxy) until :meth:`drain` has ended, or :meth:`stop`."""
        if self.proxy is not None and self._proxy_thread is None:
            self._proxy_thread = threading.Thread(
                target=self.proxy.serve_forever, name="proxy", daemon=True
            )
            self._proxy_thread.start()
        self._server.serve_forever()
        if self._proxy_thread is not None and self._server.draining:
            # The proxy drains beside the server; its transfers in flight get the same time.
            self._proxy_thread.join(DRAIN_SECONDS + 1.0)

    def drain(self) -> None:
        """Stop taking requests; ``serve_forever`` returns once those in flight are answered,
        within ``web.DRAIN_SECONDS``. Safe from a signal handler."""
        self._server.drain()
        if self.proxy is not None:
            self.proxy.drain(DRAIN_SECONDS)

    def start(self) -> None:
        """Serve from a background thread (tests, the demo)."""
        self._thread = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        if self.proxy is not None:
            if self._proxy_thread is not None:
                self.proxy.shutdown()
                self._proxy_thread.join()
            self.proxy.close()
        self._server.close()
        self.poller.close()
        self.store.close()


def _url_host(host: str) -> str:
    host = host or "localhost"
    return f"[{host}]" if ":" in host else host


def _web_config(settings: Settings) -> WebConfigWatcher | None:
    """The watched web configuration; :class:`WebConfigError` names file and key if bad."""
    if settings.web_config_file is None:
        return None
    return WebConfigWatcher(settings.web_config_file)


def _proxy(
    settings: Settings,
    catalog: Catalog,
    web_config: WebConfigWatcher | None,
    tls: TlsProvider | None,
    clock: Callable[[], float] = time.time,
) -> ImportProxy | None:
    """The import proxy, served with the exporter's web configuration; None if not asked for."""
    if not settings.proxy_addresses:
        return None

    def register(registrations: Sequence[Registration], source: str) -> list[bool]:
        # The proxy registers as its 202 comes: then is when Elevate accepted the import.
        now = clock()
        return catalog.register(
            [
                r if r.accepted_at is not None else replace(r, accepted_at=now)
                for r in registrations
            ],
            source,
        )

    return ImportProxy(
        settings.proxy_addresses,
        settings.base_url,
        register=register,
        timeout=settings.proxy_timeout,
        label_header=settings.proxy_label_header,
        api=settings.api,
        web_config=web_config.current if web_config else None,
        tls=tls,
        # The CA bundle the status requests trust (requests reads the same variable).
        ca_bundle=os.environ.get("REQUESTS_CA_BUNDLE") or None,
    )


def _tls(web_config: WebConfigWatcher | None) -> TlsProvider | None:
    # Whether TLS is served is decided at start, as in the toolkit; the certificates
    # themselves are re-read when their files change.
    if web_config is None or web_config.current().tls is None:
        return None
    return TlsProvider(lambda: web_config.current().tls)
