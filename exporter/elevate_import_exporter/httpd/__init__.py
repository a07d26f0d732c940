"""A generic HTTP/1.1 server, knowing nothing of imports: listening sockets, one selector
loop that reads request heads with bounded time and threads, TLS driven in that loop and
its certificates re-read, the exporter-toolkit web config, basic auth. Imports only
``core``."""

from elevate_import_exporter.httpd.auth import BasicAuth, Verdict
from elevate_import_exporter.httpd.connections import Connections
from elevate_import_exporter.httpd.listeners import ListenError, listen_all
from elevate_import_exporter.httpd.tls import TlsProvider
from elevate_import_exporter.httpd.webconfig import WebConfig, WebConfigError, WebConfigWatcher

__all__ = [
    "BasicAuth",
    "Connections",
    "ListenError",
    "TlsProvider",
    "Verdict",
    "WebConfig",
    "WebConfigError",
    "WebConfigWatcher",
    "listen_all",
]
