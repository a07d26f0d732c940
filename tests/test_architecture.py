"""The package keeps its shape: the package table of docs/architecture.md holds, no two
packages import each other, each outside library stays at home, and the pictures are true.

Every check is a function of a folder (tests/package_graph.py); the tests at the end run
the same functions over a copy with planted imports, to see each of them fail.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import pytest

from tests.package_graph import (
    DOC,
    PACKAGE,
    REDRAW,
    ROOT,
    Arrow,
    Table,
    circles,
    forbidden_arrows,
    importers,
    listed_modules,
    modules,
    package_edges,
    packages,
    read_table,
    redraw,
    root_imports,
    stale_pictures,
    unlisted_packages,
)


@dataclass(frozen=True)
class Library:
    """Where an outside library may be imported: in modules matching ``home`` (when given),
    never in modules matching ``never``."""

    name: str
    home: tuple[str, ...] = ()
    never: tuple[str, ...] = ()

    def misplaced(self, root: Path) -> list[str]:
        return sorted(
            module
            for module in importers(root, self.name)
            if (self.home and not any(fnmatch(module, p) for p in self.home))
            or any(fnmatch(module, p) for p in self.never)
        )


LIBRARIES = [
    Library("click", home=("cli", "cli.*")),
    Library("bcrypt", home=("httpd.auth",)),
    Library("yaml", home=("httpd.webconfig",)),
    # One HTTP parser, for the server and the proxy alike, kept in the generic server.
    Library("h11", home=("httpd", "httpd.*")),
    # Its pools are subclassed and a private method patched: keep that in one place.
    Library("urllib3", home=("elevate.transport", "elevate.deadline")),
    # The client of every call going out; the side that answers requests has no use for it.
    Library("requests", never=("httpd", "httpd.*", "site", "site.*")),
]


def doc_table() -> Table:
    return read_table(DOC.read_text(encoding="utf-8"))


def test_every_package_and_top_level_module_has_a_row_in_the_table() -> None:
    assert unlisted_packages(ROOT, doc_table()) == [], "add a row to docs/architecture.md"


def test_the_table_names_only_packages_that_exist() -> None:
    table = doc_table()
    named = set(table) | {target for targets in table.values() for target in targets}
    assert sorted(named - packages(ROOT)) == []


def test_no_package_imports_one_that_the_table_does_not_allow() -> None:
    forbidden = [line for arrow in forbidden_arrows(ROOT, doc_table()) for line in arrow.via]
    assert forbidden == [], (
        "imports the package table of docs/architecture.md forbids (move the code, or "
        "change the table in review): " + "; ".join(forbidden)
    )


def test_no_packages_import_each_other_around_a_circle() -> None:
    assert circles(package_edges(ROOT)) == []


def test_the_table_itself_allows_no_circle() -> None:
    assert circles(doc_table()) == []


def test_the_package_root_imports_nothing_of_the_package() -> None:
    # Every module imports the root for __version__: an import there is an arrow from all.
    assert root_imports(ROOT) == []


@pytest.mark.parametrize("library", LIBRARIES, ids=lambda library: library.name)
def test_an_outside_library_is_imported_at_its_home_only(library: Library) -> None:
    assert library.misplaced(ROOT) == [], f"{library.name} is imported away from its home"


def test_the_folder_listing_names_every_package_and_each_of_its_modules() -> None:
    listing = listed_modules(DOC.read_text(encoding="utf-8"))
    real: dict[str, list[str]] = {name: [] for name in packages(ROOT)}
    for name in modules(ROOT):
        package, _, module = name.partition(".")
        if module and "." not in module:
            real[package].append(module)
    stale = {
        package: {
            "missing": sorted(set(real.get(package, [])) - set(listing.get(package, []))),
            "gone": sorted(set(listing.get(package, [])) - set(real.get(package, []))),
        }
        for package in sorted(set(real) | set(listing))
        if package not in listing
        or package not in real
        or sorted(real[package]) != sorted(listing[package])
    }
    assert stale == {}, f"update the folder listing of docs/architecture.md: {stale}"


def test_every_picture_in_the_doc_is_drawn_from_the_code_as_it_is() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert text.count("```mermaid") == text.count("<!-- drawn by `python -m tests.package_graph")
    assert stale_pictures(text, ROOT) == [], (
        f"docs/architecture.md shows an old picture of these: run `{REDRAW}`"
    )


# The checks above, seen failing on a copy of the package with planted imports.


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    root = tmp_path / PACKAGE
    shutil.copytree(ROOT, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def plant(root: Path, module: str, line: str) -> None:
    path = root.joinpath(*module.split(".")).with_suffix(".py")
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")


def planted_arrows(root: Path, module: str, line: str) -> list[Arrow]:
    """The forbidden arrows that planting ``line`` in ``module`` adds (one the real code
    has already is the real test's to report, not every planted test's)."""
    before = forbidden_arrows(root, doc_table())
    plant(root, module, line)
    return [arrow for arrow in forbidden_arrows(root, doc_table()) if arrow not in before]


def test_a_planted_upward_import_is_reported_as_exactly_that_arrow(copy: Path) -> None:
    assert planted_arrows(copy, "core.model", f"from {PACKAGE}.site import web") == [
        Arrow("core", "site", ("core.model -> site.web",))
    ]


def test_an_import_inside_a_function_counts_as_an_arrow_too(copy: Path) -> None:
    line = f"def later() -> None:\n    from {PACKAGE}.proxy import server"
    assert planted_arrows(copy, "httpd.auth", line) == [
        Arrow("httpd", "proxy", ("httpd.auth -> proxy.server",))
    ]


def test_a_relative_import_counts_as_an_arrow_too(copy: Path) -> None:
    assert planted_arrows(copy, "metrics.stats", "from ..lifecycle import store") == [
        Arrow("metrics", "lifecycle", ("metrics.stats -> lifecycle.store",))
    ]


def test_a_planted_circle_between_two_packages_is_reported_as_that_circle(copy: Path) -> None:
    # settings imports core; core importing settings closes the circle.
    plant(copy, "core.files", f"import {PACKAGE}.settings.config")
    assert circles(package_edges(copy)) == [("core", "settings")]


def test_a_table_that_closes_a_circle_is_reported() -> None:
    table = dict(doc_table()) | {"core": frozenset({"settings"})}
    assert circles(table) == [("core", "settings")]


def test_a_new_package_without_a_row_is_reported_and_may_import_nothing(copy: Path) -> None:
    (copy / "extra").mkdir()
    (copy / "extra" / "__init__.py").write_text(f"from {PACKAGE}.core import model\n")
    (copy / "tool.py").write_text('"""A new top-level module."""\n')
    assert unlisted_packages(copy, doc_table()) == ["extra", "tool"]
    assert Arrow("extra", "core", ("extra -> core.model",)) in forbidden_arrows(copy, doc_table())


@pytest.mark.parametrize("library", LIBRARIES, ids=lambda library: library.name)
def test_a_library_planted_away_from_its_home_is_reported(library: Library, copy: Path) -> None:
    # core.model is no library's home; site.web is on the inbound side.
    module = "site.web" if library.never else "core.model"
    before = library.misplaced(copy)
    plant(copy, module, f"import {library.name}.sub as _sub")
    assert [found for found in library.misplaced(copy) if found not in before] == [module]


def test_a_picture_the_code_no_longer_draws_is_reported_and_redrawn(copy: Path) -> None:
    text = redraw(DOC.read_text(encoding="utf-8"), copy)  # true of the copy, to begin with
    plant(copy, "proxy.tracking", f"from {PACKAGE}.polling import sources")
    assert stale_pictures(text, copy) == ["packages", "proxy"]
    assert stale_pictures(redraw(text, copy), copy) == []
