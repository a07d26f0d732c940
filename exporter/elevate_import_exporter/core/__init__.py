"""The domain at the bottom: imports and their statuses, kept records, live state, the key
that hides itself, outside files read safely, log formats, the aggregates of finished
imports. Imports nothing of the package.
"""

from elevate_import_exporter.core.model import ApiError, ImportInfo, RequestRecord, one_line
from elevate_import_exporter.core.outcomes import Outcomes
from elevate_import_exporter.core.records import ImportRecord, Query, Registration
from elevate_import_exporter.core.secret import Secret
from elevate_import_exporter.core.state import ImportState, RoundResult, Snapshot

__all__ = [
    "ApiError",
    "ImportInfo",
    "ImportRecord",
    "ImportState",
    "Outcomes",
    "Query",
    "Registration",
    "RequestRecord",
    "RoundResult",
    "Secret",
    "Snapshot",
    "one_line",
]
