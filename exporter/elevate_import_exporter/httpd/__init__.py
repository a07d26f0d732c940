"""A generic HTTP/1.1 server, knowing nothing of imports: listening sockets, one selector
loop that reads request heads with bounded time and threads (h11 underneath, our
refusals on top: :mod:`~elevate_import_exporter.httpd.http1`), TLS driven in that loop and
its certificates re-read, the exporter-toolkit web config, basic auth. Requests are
answered whole (:class:`Server` with its :class:`Routes`) or streamed (:class:`Connections`
with ``stream=``, handing each an :class:`Exchange`). Imports only ``core``."""

from elevate_import_exporter.httpd.auth import BasicAuth, Verdict
from elevate_import_exporter.httpd.connections import Connections
from elevate_import_exporter.httpd.exchange import Exchange
from elevate_import_exporter.httpd.http1 import END, Head, Http1, PeerClosed, Refusal
from elevate_import_exporter.httpd.listeners import ListenError, listen_all
from elevate_import_exporter.httpd.messages import Answer, Request
from elevate_import_exporter.httpd.server import Routes, Server
from elevate_import_exporter.httpd.tls import TlsProvider
from elevate_import_exporter.httpd.webconfig import (
    WebAccess,
    WebConfig,
    WebConfigError,
    WebConfigWatcher,
)

__all__ = [
    "END",
    "Answer",
    "BasicAuth",
    "Connections",
    "Exchange",
    "Head",
    "Http1",
    "ListenError",
    "PeerClosed",
    "Refusal",
    "Request",
    "Routes",
    "Server",
    "TlsProvider",
    "Verdict",
    "WebAccess",
    "WebConfig",
    "WebConfigError",
    "WebConfigWatcher",
    "listen_all",
]
