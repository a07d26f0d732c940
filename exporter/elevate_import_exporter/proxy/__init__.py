"""The import proxy: feed jobs' requests streamed to Elevate and back, and the import id of
every ``202 Accepted`` registered for tracking; its counters and their collector."""

from elevate_import_exporter.proxy.metrics import ProxyCollector
from elevate_import_exporter.proxy.server import ImportProxy

__all__ = ["ImportProxy", "ProxyCollector"]
