"""Polling: where tracked ids come from (``sources``, ``idsfile``), the poll rounds shared
by scrapes (``poller``), and the ``status`` command's own polling until imports end."""

from elevate_import_exporter.polling.idsfile import IdsFile, IdsFileError
from elevate_import_exporter.polling.poller import Poller
from elevate_import_exporter.polling.sources import IdSource, MutableIdSource, TrackedIds

__all__ = ["IdSource", "IdsFile", "IdsFileError", "MutableIdSource", "Poller", "TrackedIds"]
