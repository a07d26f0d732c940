"""The generated reference pages (docs/reference/) say what the code does now: the flags as
the commands declare them, the metric families as a live exporter and a live standalone
proxy publish them (tests/reference.py writes both)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import elevate_import_exporter
from elevate_import_exporter.cli import cli
from elevate_import_exporter.settings.options import (
    LOG_OPTIONS,
    PROXY_OPTIONS,
    RUN_OPTIONS,
    Option,
)
from tests import reference

STALE = f"run `{reference.REWRITE}` and commit the page"
# The aggregates over weeks, with the labels the shared decisions give them (L: the
# allowlisted metric labels).
L = reference.METRIC_LABELS_SHOWN
AGGREGATES = {
    "elevate_import_finished_total": ("`status`", "`type`", L),
    "elevate_import_duration_seconds": ("`status`", "`type`", L),
    "elevate_import_queue_seconds": ("`type`", L),
    "elevate_import_last_final_timestamp_seconds": ("`status`", "`type`", L),
    "elevate_import_labels": ("`id`", L),
    "elevate_import_metric_label_overflow_total": ("`label`",),
}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> reference.LiveFamilies:
    return reference.live_families(tmp_path_factory.mktemp("reference"))


def written(path: Path) -> str:
    assert path.exists(), f"{path.relative_to(reference.REPO)} is missing: {STALE}"
    return path.read_text(encoding="utf-8")


def section(page: str, command: str) -> str:
    start = page.index(f"## `{command}`\n")
    end = page.find("\n## ", start + 1)
    return page[start : end if end != -1 else len(page)]


def test_every_variable_the_code_reads_by_name_is_on_the_configuration_page() -> None:
    root = Path(elevate_import_exporter.__file__).resolve().parent
    read = {
        name
        for path in root.rglob("*.py")
        for name in re.findall(r"environ\.get\(\s*\"([A-Z_]+)\"", path.read_text("utf-8"))
    }
    assert read, "the reading of os.environ.get calls found nothing"
    page = reference.configuration_page()
    assert [name for name in sorted(read) if name not in page] == []


def test_the_configuration_page_is_what_the_commands_declare_now() -> None:
    assert written(reference.CONFIGURATION) == reference.configuration_page(), (
        f"docs/reference/configuration.md is out of date: {STALE}"
    )


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_every_command_has_a_section_on_the_configuration_page(command: str) -> None:
    assert f"## `{command}`\n" in reference.configuration_page()


@pytest.mark.parametrize(
    ("command", "option"),
    [
        *(("run", option) for option in (*RUN_OPTIONS, *LOG_OPTIONS)),
        *(("proxy", option) for option in (*PROXY_OPTIONS, *LOG_OPTIONS)),
    ],
    ids=lambda value: value if isinstance(value, str) else value.flag,
)
def test_every_option_of_the_table_has_a_row_with_its_variable_and_default(
    command: str, option: Option
) -> None:
    rows = [
        line
        for line in section(reference.configuration_page(), command).splitlines()
        if line.startswith(f"| `{option.flag}`")
    ]
    assert len(rows) == 1, f"{option.flag} has {len(rows)} rows in the section of {command}"
    [row] = rows
    assert f"`{option.env}`" in row
    if option.boolean:
        assert "| off |" in row
    elif option.default is not None:
        assert f"`{option.default}`" in row
    assert " ".join(option.help.split())[:40].replace("|", "\\|") in row


def test_the_metrics_page_has_every_family_a_live_exporter_and_proxy_publish_as_published(
    live: reference.LiveFamilies,
) -> None:
    page = written(reference.METRICS)
    found = reference.differences(page, reference.metrics_page(live))
    assert not found, (
        "docs/reference/metrics.md and /metrics part:\n" + "\n".join(found) + f"\n{STALE}"
    )


@pytest.mark.parametrize("name", sorted(AGGREGATES))
def test_the_aggregates_over_weeks_are_on_the_metrics_page_with_their_labels(name: str) -> None:
    rows = [
        line.split(" | ")
        for line in written(reference.METRICS).splitlines()
        if line.startswith(f"| `{name}` |")
    ]
    assert len(rows) == 1, f"{name} is not on the exporter's table: {STALE}"
    assert tuple(sorted(rows[0][2].split(", "))) == tuple(sorted(AGGREGATES[name]))


def test_a_family_the_page_lacks_or_shows_otherwise_is_named_by_the_check() -> None:
    # The check compares rows; a page that lost one row and changed another must name both.
    scrape = (
        '# HELP a_total Things.\n# TYPE a_total counter\na_total{kind="x"} 1\n'
        "# HELP b Now.\n# TYPE b gauge\nb 2\n"
        "# HELP c_seconds Time.\n# TYPE c_seconds histogram\n"
        'c_seconds_bucket{le="1",team="t"} 1\nc_seconds_sum{team="t"} 1\n'
        'c_seconds_count{team="t"} 1\n'
    )
    families = reference.parse_exposition(scrape)
    assert sorted(families) == ["a_total", "b", "c_seconds"]
    assert families["c_seconds"].labels == ["team"]
    current = reference.metrics_page(reference.LiveFamilies(families, {}))
    assert "| `c_seconds` | histogram | *metric labels* | Time. |" in current
    stale = current.replace("| `b` | gauge |  | Now. |\n", "").replace("Things.", "Stuff.")
    found = reference.differences(stale, current)
    assert any("b is on /metrics but not on the page" in said for said in found)
    assert any("a_total differs" in said for said in found)
    assert reference.differences(current, current) == []


@pytest.mark.parametrize("path", [reference.CONFIGURATION, reference.METRICS], ids=lambda p: p.name)
def test_the_reference_pages_cite_no_issue_numbers(path: Path) -> None:
    assert not re.search(r"\b[Ii]ssues? *#?\d+|(?<![\w&])#\d+\b", written(path))
