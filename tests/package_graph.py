"""The package's import graph, read from the code: for the architecture test and its picture.

``python -m tests.package_graph`` prints the Mermaid diagram that docs/architecture.md shows.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import elevate_import_exporter

PACKAGE = "elevate_import_exporter"
ROOT = Path(elevate_import_exporter.__file__).resolve().parent


def modules() -> dict[str, Path]:
    """Module name (relative to the package, ``api.web_v2``) -> source file."""
    found: dict[str, Path] = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] in ("__init__", "__main__") and len(parts) == 1:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imported_names(path: Path) -> Iterator[str]:
    """Every absolute module name ``path`` imports, top-level or inside functions."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def edges() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (the package root itself counts as none)."""
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for target in imported_names(path):
            if not target.startswith(PACKAGE + "."):
                continue
            inner = target.removeprefix(PACKAGE + ".")
            # `from pkg.api import StatusApi` names the module api, not api.StatusApi.
            while inner and inner not in known:
                inner = inner.rpartition(".")[0]
            if inner and inner != name and not _within(name, inner):
                graph[name].add(inner)
    return graph


def _within(name: str, other: str) -> bool:
    # A package's modules import their package's __init__ and each other freely.
    return name.split(".")[0] == other.split(".")[0] and "." in name + other


def mermaid() -> str:
    graph = edges()
    lines = ["flowchart TD"]
    lines.extend(f'    {_id(name)}["{name}"]' for name in sorted(graph))
    for source, targets in sorted(graph.items()):
        lines.extend(f"    {_id(source)} --> {_id(target)}" for target in sorted(targets))
    return "\n".join(lines) + "\n"


def _id(name: str) -> str:
    return name.replace(".", "_")


if __name__ == "__main__":
    print(mermaid(), end="")
