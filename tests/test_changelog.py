"""CHANGELOG.md keeps the Keep a Changelog 1.1.0 form, and covers every version up to now.

A release that forgot its section, put it out of order, or left a heading without its
comparison link would ship release notes (release.yml takes the section) that do not match
what users get.
"""

from __future__ import annotations

import datetime
import itertools
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import elevate_import_exporter

REPO = Path(__file__).resolve().parent.parent
CHANGELOG = REPO / "CHANGELOG.md"

ALLOWED_SUBSECTIONS = ("Added", "Changed", "Deprecated", "Removed", "Fixed", "Security")
# The first version this file covers; every minor version since then has a section.
FIRST_VERSION = (0, 1, 0)

_VERSION_HEADING = re.compile(r"^## \[(?P<version>\d+\.\d+\.\d+)\] - (?P<date>\S+)$")
_LINK_REFERENCE = re.compile(r"^\[(?P<name>[^\]]+)\]: (?P<url>\S+)$")


@dataclass(frozen=True)
class Section:
    name: str  # "Unreleased" or a version
    date: str | None
    subsections: tuple[tuple[str, tuple[str, ...]], ...]  # (name, lines of content)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _lines() -> list[str]:
    return CHANGELOG.read_text(encoding="utf-8").splitlines()


def sections() -> list[Section]:
    """The `## ` sections in file order, each with its `### ` subsections."""
    found: list[Section] = []
    name: str | None = None
    date: str | None = None
    subsections: list[tuple[str, list[str]]] = []

    def close() -> None:
        if name is not None:
            found.append(
                Section(name, date, tuple((sub, tuple(body)) for sub, body in subsections))
            )

    for line in _lines():
        if _LINK_REFERENCE.match(line):
            break
        if line.startswith("## "):
            close()
            subsections = []
            match = _VERSION_HEADING.match(line)
            if line == "## [Unreleased]":
                name, date = "Unreleased", None
            else:
                assert match, f"a version heading must read '## [X.Y.Z] - YYYY-MM-DD': {line!r}"
                name, date = match["version"], match["date"]
        elif line.startswith("### "):
            assert name is not None, f"a subsection before any version: {line!r}"
            subsections.append((line.removeprefix("### "), []))
        elif line.strip() and subsections:
            subsections[-1][1].append(line)
        elif line.strip() and name is not None:
            raise AssertionError(f"text outside a subsection of [{name}]: {line!r}")
    close()
    return found


def released_versions() -> list[str]:
    """The versions with a section, newest first (as the file lists them)."""
    return [section.name for section in sections() if section.name != "Unreleased"]


def link_references() -> dict[str, str]:
    references: dict[str, str] = {}
    for line in _lines():
        match = _LINK_REFERENCE.match(line)
        if match:
            assert match["name"].lower() not in references, f"link {match['name']} twice"
            references[match["name"].lower()] = match["url"]
    return references


def _repository_url() -> str:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    url: str = pyproject["project"]["urls"]["Source"]
    return url.rstrip("/")


def test_the_package_version_has_a_section_and_is_the_newest() -> None:
    versions = released_versions()
    assert elevate_import_exporter.__version__ in versions
    assert versions[0] == elevate_import_exporter.__version__


def test_every_minor_version_from_the_first_to_now_has_a_section() -> None:
    versions = {_version_key(version) for version in released_versions()}
    current = _version_key(elevate_import_exporter.__version__)
    assert current[0] == 0, "a 1.x release needs this test to learn about majors"
    expected = {(0, minor, 0) for minor in range(FIRST_VERSION[1], current[1] + 1)}
    assert expected <= versions, f"no section for {sorted(expected - versions)}"


def test_unreleased_comes_first_and_versions_descend_with_iso_dates() -> None:
    found = sections()
    assert found[0].name == "Unreleased"
    assert [section.name for section in found].count("Unreleased") == 1
    released = found[1:]
    keys = [_version_key(section.name) for section in released]
    assert keys == sorted(keys, reverse=True), "versions must be newest first"
    assert len(set(keys)) == len(keys), "a version has two sections"
    dates = []
    for section in released:
        assert section.date is not None
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", section.date), section.date
        dates.append(datetime.date.fromisoformat(section.date))
    assert dates == sorted(dates, reverse=True), "a newer version cannot have an older date"


def test_only_the_six_subsections_appear_each_once_and_none_is_empty() -> None:
    for section in sections():
        names = [name for name, _ in section.subsections]
        unknown = set(names) - set(ALLOWED_SUBSECTIONS)
        assert not unknown, f"[{section.name}] has subsections {sorted(unknown)}"
        assert len(names) == len(set(names)), f"[{section.name}] repeats a subsection"
        for name, body in section.subsections:
            assert any(line.startswith("- ") for line in body), f"[{section.name}] {name} empty"
        if section.name != "Unreleased":
            assert section.subsections, f"[{section.name}] says nothing"


def test_every_heading_has_a_link_reference_comparing_tags() -> None:
    base = _repository_url()
    references = link_references()
    versions = released_versions()
    assert set(references) == {"unreleased", *versions}, "a heading and its link must pair"
    assert references["unreleased"] == f"{base}/compare/v{versions[0]}...HEAD"
    for newer, older in itertools.pairwise(versions):
        assert references[newer] == f"{base}/compare/v{older}...v{newer}"
    assert references[versions[-1]] == f"{base}/releases/tag/v{versions[-1]}"


def test_no_line_cites_an_issue_number() -> None:
    # Users cannot open the project's internal issues: a number tells them nothing.
    citation = re.compile(r"#\d+|\bissues?\s+#?\d+", re.IGNORECASE)
    cited = [line for line in _lines() if citation.search(line)]
    assert not cited, cited
