"""The package's import graph, read from the code, and the rules docs/architecture.md states.

``python -m tests.package_graph`` prints the package graph as Mermaid;
``python -m tests.package_graph --package proxy`` the module graph inside one package;
``python -m tests.package_graph --write`` redraws every picture in docs/architecture.md in
place (each picture is the fenced block after a ``<!-- drawn by ... -->`` line).

Every function takes the package's folder, so the architecture test can run the same checks
over a copy with a planted import and see them fail.
"""

from __future__ import annotations

import argparse
import ast
import functools
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

import elevate_import_exporter

PACKAGE = "elevate_import_exporter"
ROOT = Path(elevate_import_exporter.__file__).resolve().parent
DOC = Path(__file__).resolve().parent.parent / "docs" / "architecture.md"
REDRAW = "python -m tests.package_graph --write"

# package -> the packages it may import (itself always).
Table = Mapping[str, frozenset[str]]


class Arrow(NamedTuple):
    """An import from one package into another, with the module imports that make it."""

    source: str
    target: str
    via: tuple[str, ...]  # "core.model -> site.web", sorted


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Module name relative to the package (``proxy.exchange``; a package's ``__init__`` is
    the package's name, ``proxy``) -> its file. The package root's ``__init__`` (the version)
    is left out: see :func:`root_imports`."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            found[".".join(parts)] = path
    return found


def package_of(module: str) -> str:
    """The package a module belongs to; a top-level module (``app``) is a package of its own."""
    return module.split(".")[0]


def packages(root: Path = ROOT) -> set[str]:
    return {package_of(name) for name in modules(root)}


def imported_names(path: Path, root: Path = ROOT) -> Iterator[str]:
    """Every absolute module name ``path`` imports, top-level or inside functions; relative
    imports are resolved. ``from a import b`` names ``a.b``: b may be a module or a name in a."""
    own = list(path.relative_to(root).with_suffix("").parts)
    base = [PACKAGE, *own[:-1]]  # the package a relative import starts from
    for node in ast.walk(_tree(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                start = base[: len(base) - (node.level - 1)]
                module = ".".join([*start, *([node.module] if node.module else [])])
            elif node.module:
                module = node.module
            else:
                continue
            yield from (f"{module}.{alias.name}" for alias in node.names)


@functools.cache
def _tree(source: str) -> ast.Module:
    # A check reads every module, and the tests check copies that are mostly the same text.
    return ast.parse(source)


def _own_targets(path: Path, root: Path, known: Mapping[str, Path]) -> set[str]:
    # The package's modules that ``path`` imports: each name cut back to the longest known
    # module, so `from pkg.httpd.auth import BasicAuth` is httpd.auth, `from pkg.httpd import
    # framing` httpd.framing, and `from pkg import __version__` none (the root's __init__).
    targets: set[str] = set()
    for name in imported_names(path, root):
        if not name.startswith(PACKAGE + "."):
            continue
        inner = name.removeprefix(PACKAGE + ".")
        while inner and inner not in known:
            inner = inner.rpartition(".")[0]
        if inner:
            targets.add(inner)
    return targets


def module_edges(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (not itself)."""
    known = modules(root)
    return {name: _own_targets(path, root, known) - {name} for name, path in sorted(known.items())}


def arrows(root: Path = ROOT) -> list[Arrow]:
    """Every import from one package into another."""
    via: dict[tuple[str, str], set[str]] = {}
    for source, targets in module_edges(root).items():
        for target in targets:
            pair = (package_of(source), package_of(target))
            if pair[0] != pair[1]:
                via.setdefault(pair, set()).add(f"{source} -> {target}")
    return [Arrow(s, t, tuple(sorted(v))) for (s, t), v in sorted(via.items())]


def package_edges(root: Path = ROOT) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in packages(root)}
    for arrow in arrows(root):
        graph[arrow.source].add(arrow.target)
    return graph


def root_imports(root: Path = ROOT) -> list[str]:
    """What the package root's ``__init__`` imports of the package: every module imports the
    root for its version, so anything it imported would be a hidden arrow from everywhere."""
    init = root / "__init__.py"
    if not init.exists():
        return []
    return sorted(n for n in imported_names(init, root) if n.startswith(PACKAGE + "."))


# The checks ---------------------------------------------------------------------------


def forbidden_arrows(root: Path, table: Table) -> list[Arrow]:
    """The arrows between packages that ``table`` does not allow (a package missing from the
    table may import nothing)."""
    return [a for a in arrows(root) if a.target not in table.get(a.source, frozenset())]


def unlisted_packages(root: Path, table: Table) -> list[str]:
    return sorted(packages(root) - set(table))


def circles(graph: Mapping[str, set[str]] | Table) -> list[tuple[str, ...]]:
    """The groups of nodes that import each other, directly or around a circle (the strongly
    connected components of more than one node), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[tuple[str, ...]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; the graphs are a dozen nodes deep
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group: list[str] = []
            while not group or group[-1] != node:
                group.append(stack.pop())
            if len(group) > 1:
                found.append(tuple(sorted(group)))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def importers(root: Path, library: str) -> set[str]:
    """The modules that import ``library`` (or one of its modules)."""
    return {
        name
        for name, path in modules(root).items()
        if any(n == library or n.startswith(library + ".") for n in imported_names(path, root))
    }


# The doc ------------------------------------------------------------------------------

_TABLE_HEAD = re.compile(r"^\|\s*package\s*\|\s*may import\s*\|", re.IGNORECASE)
_NONE = {"", "—", "-", "nothing"}


def read_table(text: str) -> dict[str, frozenset[str]]:
    """The table ``| package | may import |`` of docs/architecture.md: one row a package,
    the packages it may import comma-separated, in backticks or not; ``—`` for none."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if _TABLE_HEAD.match(line)), None)
    if start is None:
        raise ValueError("no table headed '| package | may import |'")
    table: dict[str, frozenset[str]] = {}
    for line in lines[start + 2 :]:  # after the head and its |---|---| line
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 2:
            raise ValueError(f"a row of the package table has no 'may import' cell: {line}")
        name = cells[0].strip("`")
        if name in table:
            raise ValueError(f"the package table has two rows for {name}")
        allowed = (part.strip().strip("`") for part in cells[1].split(","))
        table[name] = frozenset(part for part in allowed if part not in _NONE)
    return table


def listed_modules(text: str) -> dict[str, list[str]]:
    """The folder listing of docs/architecture.md: lines ``- `core/` its concern — `model`,
    `records``` -> {"core": ["model", "records"]}. Top-level modules: ``- `app.py` ...``."""
    items: list[str] = []
    for line in text.splitlines():
        if line.startswith("- "):
            items.append(line)
        elif items and line.startswith("  ") and line.strip():
            items[-1] += " " + line.strip()  # an item wrapped onto the next lines
    listing: dict[str, list[str]] = {}
    for item in items:
        match = re.match(r"- `([A-Za-z_]+)(?:/|\.py)`", item)
        if match:
            tail = item.rpartition(" — ")[2] if " — " in item else ""
            listing[match.group(1)] = re.findall(r"`([a-z_0-9]+)`", tail)
    return listing


_PICTURE = re.compile(
    r"(<!-- drawn by `python -m tests\.package_graph(?: --package (?P<package>\w+))?` -->\n"
    r"```mermaid\n)(?P<body>.*?)(```)",
    re.DOTALL,
)


def pictures(text: str) -> list[tuple[str | None, str]]:
    """(package or None for the package graph, drawn text) of each picture in the doc."""
    return [(m.group("package"), m.group("body")) for m in _PICTURE.finditer(text)]


def draw(package: str | None, root: Path = ROOT) -> str:
    return package_mermaid(root) if package is None else module_mermaid(package, root)


def stale_pictures(text: str, root: Path = ROOT) -> list[str]:
    """The pictures of the doc that the code no longer draws: "packages" or a package name."""
    return [
        package or "packages"
        for package, body in pictures(text)
        if package not in packages(root) | {None} or body != draw(package, root)
    ]


def redraw(text: str, root: Path = ROOT) -> str:
    """``text`` with every picture drawn again from the code."""

    def again(match: re.Match[str]) -> str:
        return match.group(1) + draw(match.group("package"), root) + match.group(4)

    return _PICTURE.sub(again, text)


# Mermaid ------------------------------------------------------------------------------


def _id(name: str) -> str:
    return name.replace(".", "_")


def package_mermaid(root: Path = ROOT) -> str:
    """One box a package, one arrow where a package imports another."""
    graph = package_edges(root)
    lines = ["flowchart TD"]
    lines.extend(f'    {_id(name)}["{name}"]' for name in sorted(graph))
    for source, targets in sorted(graph.items()):
        lines.extend(f"    {_id(source)} --> {_id(target)}" for target in sorted(targets))
    return "\n".join(lines) + "\n"


def module_mermaid(package: str, root: Path = ROOT) -> str:
    """The modules inside ``package`` (boxes) and the other packages they import (rounded).
    The package's ``__init__`` is left out: it only names the public surface."""
    if package not in packages(root):
        raise ValueError(f"no package {package!r}: one of {', '.join(sorted(packages(root)))}")
    inside = {
        name: targets
        for name, targets in module_edges(root).items()
        if package_of(name) == package and name != package
    }
    outside = sorted({package_of(t) for ts in inside.values() for t in ts} - {package})
    lines = ["flowchart TD"]
    lines.extend(f'    {_id(name)}["{name.partition(".")[2]}"]' for name in sorted(inside))
    # Named as in the folder listing ("metrics/"), apart from a module of the same name.
    lines.extend(f'    {_id(name)}(["{_file_name(name, root)}"])' for name in outside)
    for source, targets in sorted(inside.items()):
        shown = {t if package_of(t) == package else package_of(t) for t in targets} - {package}
        lines.extend(f"    {_id(source)} --> {_id(target)}" for target in sorted(shown))
    return "\n".join(lines) + "\n"


def _file_name(package: str, root: Path) -> str:
    return f"{package}/" if (root / package).is_dir() else f"{package}.py"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.package_graph", description=__doc__)
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--package", help="print the module graph inside this package")
    what.add_argument(
        "--write", action="store_true", help=f"redraw every picture in {DOC.name} in place"
    )
    args = parser.parse_args(argv)
    if args.write:
        text = DOC.read_text(encoding="utf-8")
        DOC.write_text(redraw(text), encoding="utf-8")
        return 0
    try:
        sys.stdout.write(draw(args.package))
    except ValueError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
