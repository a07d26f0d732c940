"""The import proxy alone (``elevate-import-exporter proxy``): feed jobs' uploads go on to
Elevate, the ids of the accepted ones go to an exporter's registration API through a
queue (:class:`~.delivery.Delivery`) that never holds the feed's answer back, and a small
server of its own tells Prometheus and the load balancer how it fares.

A stop (SIGTERM) answers ``/-/ready`` with 503 at once, so that a load balancer sends no
more feeds; the listeners close; the uploads in flight may finish for up to the drain
timeout; then what is still queued is delivered for a bounded time, and the process ends.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from http import HTTPStatus
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from elevate_import_exporter import __version__
from elevate_import_exporter.httpd.messages import Answer, Request
from elevate_import_exporter.httpd.server import Server
from elevate_import_exporter.httpd.tls import TlsProvider
from elevate_import_exporter.httpd.webconfig import WebConfigWatcher
from elevate_import_exporter.metrics.exposition import render
from elevate_import_exporter.proxy.delivery import Delivery, DeliveryCollector
from elevate_import_exporter.proxy.metrics import ProxyCollector
from elevate_import_exporter.proxy.server import ImportProxy

log = logging.getLogger(__name__)

# Seconds to deliver what is still queued once the uploads have drained: within the grace
# period a manifest gives beyond the drain timeout. What is left then stays in the spool
# (if there is one) for the next start.
CLOSE_SECONDS = 30.0
# What probes ask; --web.auth-exempt-health answers them without basic auth.
HEALTH_PATHS = ("/-/healthy", "/-/ready")
# Seconds the telemetry server's loop has to stop once the proxy is done.
TELEMETRY_STOP_SECONDS = 5.0

_TEXT = "text/plain; charset=utf-8"
_VARY = ("Vary", "Accept, Accept-Encoding")


class Telemetry:
    """The routes of the proxy's own port: ``/metrics``, ``/-/healthy``, ``/-/ready`` and a
    short page at ``/``; every other path is 404."""

    def __init__(self, registry: CollectorRegistry, about: str, proxy: StandaloneProxy) -> None:
        self._registry = registry
        self._about = about
        self._proxy = proxy

    def answer(self, request: Request) -> Answer:
        if request.method not in ("GET", "HEAD"):
            return _text(HTTPStatus.METHOD_NOT_ALLOWED, "Method not allowed.", ("Allow", "GET"))
        path = request.path
        if path == "/metrics":
            names = parse_qs(request.query).get("name[]", [])
            exposition = render(
                self._registry,
                request.header("Accept") or "",
                request.header("Accept-Encoding") or "",
                names,
            )
            headers = [("Content-Type", exposition.content_type), _VARY]
            if exposition.content_encoding:
                headers.append(("Content-Encoding", exposition.content_encoding))
            return Answer(HTTPStatus.OK, tuple(headers), exposition.body)
        if path == "/-/healthy":
            return _text(HTTPStatus.OK, "Healthy.")
        if path == "/-/ready":
            if self._proxy.stopping:
                return _text(HTTPStatus.SERVICE_UNAVAILABLE, "Not ready: stopping.")
            return _text(HTTPStatus.OK, "Ready.")
        if path == "/":
            return _text(HTTPStatus.OK, self._about)
        return _text(HTTPStatus.NOT_FOUND, "Not found.")

    def error(self, request: Request, status: int, reason: str) -> Answer:
        return _text(status, reason[:1].upper() + reason[1:] + ".")


def _text(status: int, text: str, *headers: tuple[str, str]) -> Answer:
    body = (text.rstrip("\n") + "\n").encode("utf-8")
    return Answer(status, (*headers, ("Content-Type", _TEXT), _VARY), body)


class StandaloneProxy:
    """An :class:`ImportProxy` on ``proxy_addresses`` forwarding to ``upstream``, handing
    ids to ``delivery``, with its telemetry on ``web_addresses``; ``web_config`` (TLS,
    basic auth, headers) guards both ports. Raises
    :class:`~elevate_import_exporter.httpd.listeners.ListenError` if it cannot listen.

    ``serve_forever`` serves until :meth:`drain` has run its course (or :meth:`close`);
    ``drain`` is safe from a signal handler.
    """

    def __init__(
        self,
        proxy_addresses: Sequence[tuple[str, int]],
        web_addresses: Sequence[tuple[str, int]],
        upstream: str,
        *,
        delivery: Delivery,
        registration: str,
        timeout: float,
        label_header: str,
        drain_timeout: float,
        api: str = "web-v2",
        web_config: WebConfigWatcher | None = None,
        auth_exempt_health: bool = False,
        ca_bundle: str | None = None,
        close_seconds: float = CLOSE_SECONDS,
    ) -> None:
        self.delivery = delivery
        self.drain_timeout = drain_timeout
        self.close_seconds = close_seconds
        self.stopping = False  # set by the first stop signal: not ready from then on
        self._closed = threading.Lock()
        self._delivery_closed = False
        current = web_config.current if web_config is not None else None
        tls = _tls(web_config)
        self.scheme = "https" if tls is not None else "http"
        self.proxy = ImportProxy(
            proxy_addresses,
            upstream,
            register=delivery.register,
            timeout=timeout,
            label_header=label_header,
            api=api,
            web_config=current,
            tls=tls,
            ca_bundle=ca_bundle,
        )
        # Its own registry: the global one of prometheus_client would mix in whatever else
        # the process' libraries register there.
        self.registry = CollectorRegistry()
        self.registry.register(ProxyCollector(self.proxy.stats))
        self.registry.register(DeliveryCollector(delivery))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        about = (
            f"elevate-import-exporter {__version__}: import proxy\n"
            f"Forwards feeds to Elevate at {upstream}; the ids of accepted imports are "
            f"registered at {registration}.\n"
            "Metrics at /metrics; health at /-/healthy and /-/ready.\n"
        )
        try:
            first, *more = web_addresses
            self.telemetry = Server(
                Telemetry(self.registry, about, self),
                *first,
                extra_addresses=more,
                web_config=current,
                auth_exempt_paths=HEALTH_PATHS if auth_exempt_health else (),
                tls=tls,
            )
        except Exception:
            self.proxy.close()
            raise
        self._telemetry_thread: threading.Thread | None = None

    @property
    def proxy_ports(self) -> list[int]:
        return self.proxy.ports

    @property
    def web_ports(self) -> list[int]:
        return self.telemetry.ports

    def serve_forever(self) -> None:
        """Serve until a drain has ended, then deliver what is queued (for up to
        ``close_seconds``)."""
        self.delivery.start()
        self._telemetry_thread = threading.Thread(
            target=self.telemetry.serve_forever, name="telemetry", daemon=True
        )
        self._telemetry_thread.start()
        self.proxy.serve_forever()
        if self.stopping:
            self._close_delivery(self.close_seconds)

    def drain(self) -> None:
        """Not ready from now on; take no new upload, and let ``serve_forever`` return once
        those in flight are over, or after the drain timeout. Safe from a signal handler."""
        self.stopping = True
        self.proxy.drain(self.drain_timeout)

    def close(self) -> None:
        """Stop everything now: uploads still in flight are cut, the queue stops (what is
        left of it stays in the spool, if there is one)."""
        self.stopping = True
        self.proxy.shutdown()
        self.proxy.close()
        self._close_delivery(0.0)
        if self._telemetry_thread is not None:
            self.telemetry.shutdown()
            self._telemetry_thread.join(TELEMETRY_STOP_SECONDS)
        self.telemetry.close()

    def _close_delivery(self, seconds: float) -> None:
        with self._closed:
            if self._delivery_closed:
                return
            self._delivery_closed = True
        self.delivery.close(seconds)


def _tls(web_config: WebConfigWatcher | None) -> TlsProvider | None:
    # As the exporter: whether TLS is served is decided at start; the certificates are
    # re-read when their files change.
    if web_config is None or web_config.current().tls is None:
        return None
    return TlsProvider(lambda: web_config.current().tls)
