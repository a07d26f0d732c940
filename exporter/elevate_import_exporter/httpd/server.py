"""A generic HTTP server: listeners, the serving loop, the web config and basic auth per
request, and what every answer carries; what a request gets is its :class:`Routes`' call.

Every request is read whole by :mod:`~elevate_import_exporter.httpd.connections` and
answered from a handler thread. Before the routes see it:

- a request whose head cannot be read or trusted (a line that is not ``name: value``, a
  folded line) is refused at once: none of its headers, ``Authorization`` among them, is
  believed;
- with basic-auth users in the web config, a request without the credentials of one of
  them gets ``401`` (or ``429`` when too many checks run at once), except on
  ``auth_exempt_paths``: an unauthenticated client learns nothing more;
- a request refused for its framing (its length, its encoding) is answered so.

The routes word those errors (:meth:`Routes.error`), so that an API can answer them in its
own format. Every answer carries ``Server``, ``Date`` and the web config's extra headers,
and ``Connection: close`` while the server drains.
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from email.utils import formatdate
from http import HTTPStatus
from typing import Protocol, TypedDict

from elevate_import_exporter import __version__
from elevate_import_exporter.httpd.auth import CHALLENGE, RETRY_AFTER, BasicAuth, Verdict
from elevate_import_exporter.httpd.connections import Connections
from elevate_import_exporter.httpd.handshake import ServerTls
from elevate_import_exporter.httpd.listeners import listen_all
from elevate_import_exporter.httpd.messages import Answer, Request
from elevate_import_exporter.httpd.webconfig import WebAccess, WebConfig

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

SERVER = f"elevate-import-exporter/{__version__}"
BUSY = "too many authentication checks at once; try again shortly"


class Routes(Protocol):
    """What a site gives the server: its answers, and its wording of errors."""

    def answer(self, request: Request) -> Answer:
        """The answer to an authorized request that is not refused."""

    def error(self, request: Request, status: int, reason: str) -> Answer:
        """An error answer that reaches nothing behind it (a refusal, ``401``, ``429``),
        worded as the path's clients read errors; ``reason`` is one lower-case line."""


class ServerOptions(TypedDict, total=False):
    """The options of :class:`Server` beyond its routes, address and threads."""

    header_timeout: float
    idle_timeout: float
    max_connections: int | None
    write_timeout: float
    web_config: WebConfig | Callable[[], WebConfig] | None
    auth_exempt_paths: Collection[str]
    tls: ServerTls | None
    extra_addresses: Sequence[tuple[str, int]]


class Server:
    """``routes`` served on ``host:port`` and each of ``extra_addresses`` (``(host,
    port)``); an empty host means every address.

    The timeouts and bounds default to the module's constants; tests pass small ones.
    ``web_config`` is a web config, or a function giving the current one (such as
    ``WebConfigWatcher.current``), asked once a request.
    """

    def __init__(
        self,
        routes: Routes,
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
        self.routes = routes
        self.auth_exempt_paths = frozenset(auth_exempt_paths)
        self._access = WebAccess(web_config)
        self._connections = Connections(
            listen_all([(host, port), *extra_addresses]),
            self._respond,
            header_timeout=header_timeout,
            idle_timeout=idle_timeout,
            max_threads=max_threads,
            max_connections=max_connections or connection_limit(),
            write_timeout=write_timeout,
            tls=tls,
        )

    def reload_web_config(self, config: WebConfig | Callable[[], WebConfig] | None) -> None:
        """Serve with ``config`` from the next request on (SIGHUP)."""
        self._access.reload(config)

    def web(self) -> tuple[WebConfig, BasicAuth | None]:
        """The web config for a request, and the basic auth it asks for (None: none)."""
        return self._access.current()

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

    # -- handler threads ------------------------------------------------------------------

    def _respond(self, request: Request) -> Answer:
        config, auth = self.web()
        answer = self._answer(request, auth)
        headers = [
            *answer.headers,
            ("Server", SERVER),
            ("Date", formatdate(usegmt=True)),
            *config.http.headers.items(),  # every answer, errors too
        ]
        log.debug(
            "http %s %s %s %d", request.peer, request.method, request.path[:200], answer.status
        )
        return Answer(answer.status, tuple(headers), answer.body, answer.close)

    def _answer(self, request: Request, auth: BasicAuth | None) -> Answer:
        refusal = request.refusal
        if not request.trusted:
            # What it asks for cannot be known: refused before the auth check, and by the
            # routes' wording only as far as its path goes.
            assert refusal is not None
            return self.routes.error(request, refusal.status, refusal.reason)
        if auth is not None and request.path not in self.auth_exempt_paths:
            verdict = auth.verify(request.header("Authorization"))
            # An unauthenticated client learns nothing more, its refusal included, and
            # moves no counter: the routes word the error as for a request without one.
            unrefused = replace(request, refusal=None)
            if verdict is Verdict.BUSY:
                # Shed before it takes a bcrypt turn: the handler thread is free at once.
                busy = self.routes.error(unrefused, HTTPStatus.TOO_MANY_REQUESTS, BUSY)
                return _with(busy, ("Retry-After", str(RETRY_AFTER)))
            if verdict is not Verdict.GRANTED:
                denied = self.routes.error(unrefused, HTTPStatus.UNAUTHORIZED, "unauthorized")
                return _with(denied, ("WWW-Authenticate", CHALLENGE))
        if refusal is not None:
            return self.routes.error(request, refusal.status, refusal.reason)
        return self.routes.answer(request)


def _with(answer: Answer, header: tuple[str, str]) -> Answer:
    return Answer(answer.status, (header, *answer.headers), answer.body, answer.close)


def connection_limit() -> int:
    """:data:`MAX_CONNECTIONS`, or half the open-file limit if that is lower."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(8, min(MAX_CONNECTIONS, soft // 2))
