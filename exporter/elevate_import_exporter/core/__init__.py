"""The domain at the bottom: imports and their statuses, kept records, live state, the key
that hides itself, outside files read safely, log formats. Imports nothing of the package.
"""

from elevate_import_exporter.core.model import ApiError, ImportInfo, RequestRecord, one_line
from elevate_import_exporter.core.records import ImportRecord, Query, Registration
from elevate_import_exporter.core.secret import Secret
from elevate_import_exporter.core.state import ImportState, RoundResult, Snapshot

__all__ = [
    "ApiError",
    "ImportInfo",
    "ImportRecord",
    "ImportState",
    "Query",
    "Registration",
    "RequestRecord",
    "RoundResult",
    "Secret",
    "Snapshot",
    "one_line",
]
