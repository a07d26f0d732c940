"""An import's life beyond one round: registered (validated by ``registration``), kept in
the SQLite ``store``, joined to the poller and retired by the ``catalog``; and ``track``,
the client side of registration used by the ``track`` command."""

from elevate_import_exporter.lifecycle.catalog import Catalog
from elevate_import_exporter.lifecycle.store import Store, StoreError

__all__ = ["Catalog", "Store", "StoreError"]
