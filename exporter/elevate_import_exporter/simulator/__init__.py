"""A simulated Voyado Elevate import-status endpoint: Web API v2, or Admin API v4 or v3.

It serves scripted imports whose status moves on with elapsed time or with the
number of queries answered, and it can misbehave on demand (5xx answers, hangs,
non-JSON bodies, random 503s, a missing cluster), so the exporter can be tried,
tested and benchmarked without a real Elevate cluster. Standard library only:
the ``simulate`` and ``demo`` commands wrap it.

``scripts`` holds what the imports do and reads scenario files, ``server`` the
``Simulator`` itself, ``httpd`` the HTTP server that speaks for it.
"""

from __future__ import annotations

from elevate_import_exporter.model import FINAL_STATUSES
from elevate_import_exporter.simulator.httpd import ADMIN_STATUS_PATHS, SIMULATED_APIS, STATUS_PATH
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
    "DEMO_UNKNOWN_ID",
    "FINAL_STATUSES",
    "SCENARIO_FORMAT",
    "SIMULATED_APIS",
    "STATUS_PATH",
    "ScenarioError",
    "ScriptedImport",
    "Simulator",
    "Step",
    "demo_imports",
    "generated_imports",
    "load_scenario",
]
