"""A simulated Voyado Elevate import-status endpoint: Web API v2, or Admin API v4 or v3.

It serves scripted imports whose status moves on with elapsed time or with the
number of queries answered, and it can misbehave on demand (5xx answers, hangs,
non-JSON bodies, random 503s, a missing cluster), so the exporter can be tried,
tested and benchmarked without a real Elevate cluster. Standard library only:
the ``simulate`` and ``demo`` commands wrap it.

``scripts`` holds what the imports do and reads scenario files, ``server`` the
``Simulator`` itself, ``httpd`` the HTTP server that speaks for it, ``imports`` the import
endpoints (bodies read and hashed, 202 with fresh ids), ``feeds`` a made-up feed job that
pushes feeds to them (the demo's, through the import proxy).
"""

from __future__ import annotations

from elevate_import_exporter.core.model import FINAL_STATUSES
from elevate_import_exporter.simulator.feeds import Feed, FeedJob, demo_feeds
from elevate_import_exporter.simulator.httpd import ADMIN_STATUS_PATHS, SIMULATED_APIS, STATUS_PATH
from elevate_import_exporter.simulator.imports import (
    DEFAULT_STEPS,
    IMPORT_ENDPOINTS,
    V2_IMPORT_TYPES,
    ImportDesk,
    Upload,
    import_kind,
)
from elevate_import_exporter.simulator.scripts import (
    DEMO_UNKNOWN_ID,
    SCENARIO_FORMAT,
    ScenarioError,
    ScriptedImport,
    Step,
    demo_imports,
    generated_imports,
    load_scenario,
)
from elevate_import_exporter.simulator.server import Simulator

__all__ = [
    "ADMIN_STATUS_PATHS",
    "DEFAULT_STEPS",
    "DEMO_UNKNOWN_ID",
    "FINAL_STATUSES",
    "IMPORT_ENDPOINTS",
    "SCENARIO_FORMAT",
    "SIMULATED_APIS",
    "STATUS_PATH",
    "V2_IMPORT_TYPES",
    "Feed",
    "FeedJob",
    "ImportDesk",
    "ScenarioError",
    "ScriptedImport",
    "Simulator",
    "Step",
    "Upload",
    "demo_feeds",
    "demo_imports",
    "generated_imports",
    "import_kind",
    "load_scenario",
]
