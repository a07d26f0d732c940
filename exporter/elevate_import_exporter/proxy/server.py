"""The import proxy: feed jobs send their imports here, they go on to Elevate unchanged, and
every import id in a ``202 Accepted`` answer is registered for tracking.

Basic auth of the web config, if it has users, guards the proxy as it guards the exporter;
the credentials stay here. The client's ``Api-Key`` goes to Elevate as sent and nowhere
else: no log line, label or metric holds a header's value, except the label header's.
Tracking happens after the client has its whole answer, and never changes it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from elevate_import_exporter.core.logs import MIN_SECRET_CHARS, redacting
from elevate_import_exporter.core.model import id_rule
from elevate_import_exporter.core.records import Registration
from elevate_import_exporter.httpd.auth import CHALLENGE, RETRY_AFTER, Verdict
from elevate_import_exporter.httpd.connections import Connections
from elevate_import_exporter.httpd.exchange import Exchange as HttpExchange
from elevate_import_exporter.httpd.handshake import ServerTls
from elevate_import_exporter.httpd.http1 import Head
from elevate_import_exporter.httpd.listeners import listen_all
from elevate_import_exporter.httpd.webconfig import WebAccess, WebConfig
from elevate_import_exporter.proxy.exchange import Client, Exchange, Outcome, send_error
from elevate_import_exporter.proxy.http1 import BadRequest, ClientGone, check_head
from elevate_import_exporter.proxy.policy import SlowBodies
from elevate_import_exporter.proxy.stats import ProxyStats
from elevate_import_exporter.proxy.tracking import (
    accepted_import,
    answer_document,
    label_key,
    labels,
    metric_type,
    outcome,
)
from elevate_import_exporter.proxy.upstream import Upstream

log = logging.getLogger(__name__)

# Seconds from accepting a connection until its request head must be complete.
HEADER_TIMEOUT = 10.0
# Seconds a kept-alive connection may wait for its next request.
IDLE_TIMEOUT = 30.0
# Connections (and threads serving them) at once; beyond it new ones wait in the listen
# backlog, or take the place of a head that is slow to come or of the slowest body.
MAX_CONNECTIONS = 64
# Seconds between two looks at the bodies' rates, at most.
TURN_SECONDS = 0.25
# Headers whose values are secrets: never a label, whatever --proxy.label-header says.
SECRET_HEADERS = frozenset({"api-key", "authorization", "proxy-authorization", "cookie"})

Register = Callable[[Sequence[Registration], str], list[bool]]


class ImportProxy:
    """Forwards every request on ``addresses`` to ``upstream`` (Elevate's base URL) and
    hands the import ids of its 202 answers to ``register(registrations, "proxy")``.

    ``timeout`` bounds connecting to Elevate, waiting for its answer, and each read and
    write of a body either way (a client's body: also :data:`~.http1.BODY_IDLE_SECONDS`
    and a minimum rate). ``api``: the Elevate API flavour (``--elevate.api``), whose rule
    an id must follow to be tracked. ``label_header``: the request header whose value labels
    the imports tracked (empty: none). ``web_config``: gives the current web config
    (basic auth users, extra answer headers), asked once a request.
    """

    def __init__(
        self,
        addresses: Sequence[tuple[str, int]],
        upstream: str,
        *,
        register: Register,
        timeout: float,
        label_header: str,
        web_config: Callable[[], WebConfig] | None = None,
        tls: ServerTls | None = None,
        ca_bundle: str | None = None,
        header_timeout: float = HEADER_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        api: str = "web-v2",
    ) -> None:
        self.stats = ProxyStats()
        # Ids enter here as they enter everywhere else: by the configured API's rule.
        self._valid_id, self._id_rule = id_rule(api)
        self._api = api
        self._upstream = Upstream(upstream, timeout=timeout, ca_bundle=ca_bundle)
        self._register = register
        if label_header.lower() in SECRET_HEADERS:
            log.warning("proxy: %s is not used as a label: its value is a secret", label_header)
            label_header = ""
        self._label_header = label_header
        self._label_key = label_key(label_header) if label_header else ""
        self._access = WebAccess(web_config)
        self._slow = SlowBodies()
        listeners = listen_all(addresses)
        self._connections = Connections(
            listeners,
            stream=self._serve,
            header_timeout=header_timeout,
            idle_timeout=idle_timeout,
            max_threads=max_connections,
            max_connections=max_connections,
            write_timeout=timeout,
            tls=tls,
            on_turn=self._slow.turn,
            turn_every=TURN_SECONDS,
            name="proxy",
        )
        connections = self._connections
        self._slow.full = lambda: connections.open >= connections.max_connections
        self._slow.listeners = listeners.socks
        self.ports = connections.ports

    @property
    def draining(self) -> bool:
        return self._connections.draining

    @property
    def open_connections(self) -> int:
        """Client connections open now, waiting or served."""
        return self._connections.open

    def serve_forever(self) -> None:
        """Accept connections until :meth:`shutdown`, or until a drain has ended."""
        self._connections.serve_forever()

    def drain(self, seconds: float) -> None:
        """Take no new request; ``serve_forever`` returns once those being forwarded are
        over, or after ``seconds``. Safe from another thread and from a signal handler."""
        self._connections.drain(seconds)

    def shutdown(self) -> None:
        """Stop ``serve_forever`` (from another thread) and wait until it has returned."""
        self._connections.shutdown()

    def close(self) -> None:
        """Close the listeners and cut every connection, those being forwarded too."""
        for exchange in self._connections.busy():
            exchange.abort()
        self._connections.close()

    # -- worker threads ---------------------------------------------------------------

    def _serve(self, exchange: HttpExchange) -> None:
        """One request, handed over by the loop with its head read; the loop takes the
        connection back for the next one if the answer leaves it reusable."""
        clock = self._slow.clock(exchange)
        try:
            client = Client(
                exchange.sock, exchange.peer, self._upstream.timeout, clock, exchange.http1
            )
            if exchange.refusal is not None:  # refused by the parser: answered, then closed
                refusal = exchange.refusal
                self.stats.started()
                send_error(client, refusal.status, refusal.reason, self._extra_headers())
                method = exchange.head.method if exchange.head else "other"
                self.stats.answered(method, refusal.status, time.monotonic() - exchange.received)
            elif exchange.head is not None:
                self._request(client, exchange.head)
        except ClientGone as exc:
            log.debug("proxy %s: connection ended: %s", exchange.peer, exc)
        finally:
            self._slow.forget(exchange)

    def _request(self, client: Client, head: Head) -> None:
        """Answer one request, then track what its answer names. It counts as answered
        once tracked, so that a registration is never behind the count that reports it;
        its duration ends with the answer."""
        started = time.monotonic()
        self.stats.started()
        code, took = 500, None
        try:
            check_head(head)
            result = self._forward(client, head)
            code, took = result.code, time.monotonic() - started
            log.debug(
                "proxy %s %s %s -> %d in %.3f s", client.peer, head.method, head.path, code, took
            )
            self._track(head, result)
        except BadRequest as exc:
            send_error(client, exc.status, exc.message, self._extra_headers())
            code = exc.status
        finally:
            self.stats.answered(head.method, code, took or time.monotonic() - started)

    def _forward(self, client: Client, head: Head) -> Outcome:
        config, auth = self._access.current()
        extra = tuple(config.http.headers.items())
        drop: frozenset[str] = frozenset()
        if auth is not None:
            verdict = auth.verify(head.get("authorization"))
            if verdict is Verdict.BUSY:
                # Too many password checks at once (a flood of wrong ones): shed this one
                # rather than let it wait behind them.
                more = [("Retry-After", str(RETRY_AFTER))]
                send_error(client, 429, "Too many password checks at once.", extra, more)
                return Outcome(429)
            if verdict is not Verdict.GRANTED:
                more = [("WWW-Authenticate", CHALLENGE)]
                send_error(client, 401, "Unauthorized.", extra, more)
                return Outcome(401)
            drop = frozenset({"authorization"})  # the proxy's credentials, not Elevate's
        exchange = Exchange(self._upstream, self.stats, client, head, extra=extra, drop=drop)
        return exchange.run(closing=lambda: self.draining)

    def _track(self, head: Head, result: Outcome) -> None:
        """Count an import request's outcome and register the id of a 202 answer."""
        document = None
        if result.body is not None:
            document = answer_document(result.body, result.content_encoding)
        if result.kind is not None:
            self.stats.import_answered(metric_type(result.kind), outcome(result.code, document))
        if result.code != 202:
            return
        redact = _redactor(head)
        found = None
        if document is not None:
            found = accepted_import(document, self._valid_id, redact)
        if found is None:
            if document is not None and document.get("id") is not None:
                log.warning(
                    "proxy: the id in a 202 answer to %s %s is not tracked: ids of "
                    "--elevate.api %s are %s",
                    head.method,
                    head.path,
                    self._api,
                    self._id_rule,
                )
            else:
                log.info("proxy: a 202 answer to %s %s holds no import id", head.method, head.path)
            return
        import_id, answer_type = found
        if redact(import_id) != import_id:
            log.warning("proxy: the id in a 202 answer to %s holds the request's key", head.path)
            return
        kind = answer_type or result.kind or ""
        value = head.get(self._label_header) if self._label_header else None
        registration = Registration(
            import_id, kind, labels(head.path, head.query, self._label_key, value, redact)
        )
        try:
            self._register([registration], "proxy")
        except Exception as exc:
            self.stats.registration_failed()
            log.error("proxy: import %s could not be registered: %s", import_id, exc)
            return
        self.stats.tracked(metric_type(kind))
        log.info("proxy: tracking import %s (%s) from %s", import_id, kind or "no type", head.path)

    def _extra_headers(self) -> tuple[tuple[str, str], ...]:
        return tuple(self._access.current()[0].http.headers.items())


def _redactor(head: Head) -> Callable[[str], str]:
    """What takes the request's own secrets (its key, its credentials) out of text learnt
    from its answer: Elevate may echo them, and what the proxy learns is logged, stored
    and shown, which the client's key never is. The project's redaction, so that escaped
    forms go too."""
    secrets: set[str] = set()
    for name in SECRET_HEADERS:
        for value in head.values(name):
            secrets.add(value)
            scheme, _, credentials = value.partition(" ")
            credentials = credentials.strip()
            secrets.add(credentials)
            if scheme.lower() == "basic":
                with contextlib.suppress(binascii.Error, UnicodeDecodeError):
                    decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
                    secrets |= {decoded, decoded.partition(":")[2]}
    return redacting(s for s in secrets if len(s) >= MIN_SECRET_CHARS)
