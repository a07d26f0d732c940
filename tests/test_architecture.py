"""The package keeps its shape: imports point one way, each outside library has one home."""

from __future__ import annotations

import re
from fnmatch import fnmatch
from pathlib import Path

import pytest

from tests.package_graph import edges, imported_names, mermaid, modules

DOC = Path(__file__).resolve().parent.parent / "docs" / "architecture.md"

# Top to bottom. A module imports only modules of lower layers (or of its own package);
# a new module must be placed here, which makes its place a decision.
LAYERS: dict[str, int] = {
    "cli": 7,
    "cli.common": 7,
    "cli.exporter": 7,
    "cli.simulate": 7,
    "cli.status": 7,
    "cli.track": 7,
    "app": 6,
    "web": 5,
    "collector": 4,
    "catalog": 4,
    "restapi": 4,
    "proxy_metrics": 4,
    "proxy": 5,
    "proxy_exchange": 3,
    "proxy_tracking": 2,
    "proxy_accept": 1,
    "proxy_stats": 1,
    "proxy_http": 0,
    "proxy_upstream": 0,
    "store": 2,
    "state": 2,
    "registration": 2,
    "track": 2,
    "records": 1,
    "framing": 0,
    "scrapetime": 0,
    "landing": 4,
    "exposition": 4,
    "poller": 3,
    "lines": 3,
    "status": 4,
    "status_view": 5,
    "api": 3,
    "api.web_v2": 2,
    "api.admin": 2,
    "api.body": 2,
    "tls": 2,
    "config": 2,
    "transport": 1,
    "sources": 1,
    "idsfile": 1,
    "stats": 1,
    "holds": 1,
    "connections": 1,
    "options": 1,
    "simulator": 1,
    "simulator.httpd": 1,
    "simulator.scripts": 1,
    "simulator.server": 1,
    "simulator.imports": 1,
    "simulator.feeds": 1,
    "model": 0,
    "secret": 0,
    "logs": 0,
    "workers": 0,
    "deadline": 0,
    "auth": 0,
    "webconfig": 1,
    "files": 0,
    "handshake": 0,
    "listeners": 0,
}


def test_every_module_has_a_place_in_the_layers() -> None:
    assert sorted(modules()) == sorted(LAYERS)


@pytest.mark.parametrize("module", sorted(LAYERS))
def test_a_module_imports_only_modules_below_it(module: str) -> None:
    upward = sorted(t for t in edges().get(module, ()) if LAYERS[t] >= LAYERS[module])
    assert upward == [], f"{module} (layer {LAYERS[module]}) imports {upward}"


def test_the_layers_have_no_cycle_through_a_package() -> None:
    # Within a package (api, simulator) modules may import each other; the layers above
    # cannot see that, so check that following imports never returns to where it began.
    graph = edges()

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for target in graph.get(start, ()):
            if target == goal or (target not in seen and reaches(target, goal, seen | {target})):
                return True
        return False

    assert [m for m in graph if reaches(m, m, {m})] == []


@pytest.mark.parametrize(
    ("library", "home"),
    [
        ("click", {"cli", "cli.*"}),
        ("requests", {"transport"}),
        ("urllib3", {"transport"}),
        ("bcrypt", {"auth"}),
        ("yaml", {"webconfig"}),
    ],
)
def test_an_outside_library_is_imported_by_its_one_module_only(
    library: str, home: set[str]
) -> None:
    # "cli.*": the command line is a package, and each of its modules may import click.
    importers = {
        name
        for name, path in modules().items()
        if any(n == library or n.startswith(library + ".") for n in imported_names(path))
    }
    assert importers
    assert {name for name in importers if not any(fnmatch(name, home_) for home_ in home)} == set()


def test_the_architecture_picture_is_drawn_from_the_code_as_it_is() -> None:
    text = DOC.read_text(encoding="utf-8")
    block = re.search(r"```mermaid\n(.*?)```", text, re.DOTALL)
    assert block is not None, "docs/architecture.md has no mermaid block"
    assert block.group(1) == mermaid(), (
        "docs/architecture.md is out of date: paste `python -m tests.package_graph` into it"
    )
