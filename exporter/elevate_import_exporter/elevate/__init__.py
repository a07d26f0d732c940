"""Elevate's import-status API, as a client: the flavours of its API (Web API v2, Admin API
v4 and v3), the HTTP transport under them (``requests``, retries, caps, a deadline for a
whole request) and the ``Retry-After`` holds kept across rounds."""

from elevate_import_exporter.elevate.api import Flavour, StatusApi, status_api
from elevate_import_exporter.elevate.holds import Holds
from elevate_import_exporter.elevate.transport import Transport

__all__ = ["Flavour", "Holds", "StatusApi", "Transport", "status_api"]
