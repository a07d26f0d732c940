"""What a scrape shows: fresh families from the poller's state (``collector``), the
rendered lines of final imports (``lines``), request counters (``stats``), and the
exposition in the format and compression the scraper asks for (``exposition``)."""

from elevate_import_exporter.metrics.collector import ImportCollector
from elevate_import_exporter.metrics.exposition import Exposition, Renderer
from elevate_import_exporter.metrics.stats import RequestStats

__all__ = ["Exposition", "ImportCollector", "Renderer", "RequestStats"]
