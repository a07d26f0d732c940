"""The exporter's own routes on the generic server: the metrics, the health and readiness
checks, the landing page, and the REST API under ``/api/v1/`` with its OpenAPI document;
the application seen through :class:`Site`, which this package owns."""

from elevate_import_exporter.site.web import HttpServer, Site, SiteRoutes

__all__ = ["HttpServer", "Site", "SiteRoutes"]
