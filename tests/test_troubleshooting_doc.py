"""The troubleshooting page covers what the code can say: every reason and result a metric
can carry has a row, and every log line at warning or above is on the page."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import elevate_import_exporter
from elevate_import_exporter.core.model import ERROR_REASONS, WHOLE_KEY_HINTS
from elevate_import_exporter.lifecycle.catalog import REGISTRATION_RESULTS
from elevate_import_exporter.polling.poller import ROUND_REASONS
from elevate_import_exporter.proxy.delivery import DROP_REASONS
from elevate_import_exporter.proxy.tracking import OUTCOMES

DOC = Path(__file__).resolve().parent.parent / "docs" / "troubleshooting.md"
PACKAGE = Path(elevate_import_exporter.__file__).resolve().parent
LOUD = ("warning", "error", "exception", "critical")
# A printf or str.format placeholder: what varies in a log line.
PLACEHOLDER = re.compile(r"%[-#0 +]*\d*(?:\.\d+)?[sdrfi]|\{[^}]*\}")
# A line whose every fixed piece is shorter than this says nothing by itself ("%s", "%s %r":
# a message made elsewhere, whose sources the page covers by name).
MIN_FRAGMENT = 8


def page() -> str:
    return DOC.read_text(encoding="utf-8")


def flat(text: str) -> str:
    return " ".join(text.split())


def table_keys() -> set[str]:
    """The first cell of every table row, as written in backticks."""
    keys = set()
    for line in page().splitlines():
        if line.startswith("| `"):
            keys.update(re.findall(r"`([^`]+)`", line.split("|")[1]))
    return keys


def delivery_failure_reasons() -> set[str]:
    """The reasons the standalone proxy's delivery gives a failed batch (``DeliveryFailed``'s
    first argument), read from the code: they appear in its log lines."""
    tree = ast.parse((PACKAGE / "proxy" / "delivery.py").read_text(encoding="utf-8"))
    return {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "DeliveryFailed"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    }


def loud_log_lines() -> list[tuple[str, str]]:
    """(where, format) of every ``log.warning/error/exception/critical`` call with a fixed
    format, in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LOUD
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "log"
                and node.args
            ):
                continue
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                text = first.value
            elif isinstance(first, ast.JoinedStr):
                text = "".join(
                    str(part.value) if isinstance(part, ast.Constant) else "{}"
                    for part in first.values
                )
            else:
                continue
            found.append((f"{path.relative_to(PACKAGE)}:{node.lineno}", text))
    return found


def longest_fragment(text: str) -> str:
    return max((part.strip() for part in PLACEHOLDER.split(text)), key=len)


def said_lines() -> list[tuple[str, str]]:
    return [
        (where, fragment)
        for where, text in loud_log_lines()
        if len(fragment := longest_fragment(text)) >= MIN_FRAGMENT
    ]


@pytest.mark.parametrize("reason", [*ERROR_REASONS, *ROUND_REASONS])
def test_every_reason_a_metric_can_carry_has_a_row_that_says_what_to_do(reason: str) -> None:
    assert reason in table_keys(), f"docs/troubleshooting.md has no row for {reason}"


@pytest.mark.parametrize(
    "value",
    sorted({*REGISTRATION_RESULTS, *DROP_REASONS, *OUTCOMES, *delivery_failure_reasons()}),
)
def test_every_registration_result_proxy_outcome_and_delivery_reason_has_a_row(
    value: str,
) -> None:
    assert value in table_keys(), f"docs/troubleshooting.md has no row for {value}"


def test_the_delivery_reasons_are_read_from_the_code() -> None:
    # The AST reading finds the reasons the delivery's docstring names, so a new one shows up.
    assert {"unreachable", "unauthorized", "misdirected", "refused"} <= delivery_failure_reasons()


@pytest.mark.parametrize(("where", "fragment"), said_lines(), ids=[w for w, _ in said_lines()])
def test_every_log_line_at_warning_or_above_is_on_the_page(where: str, fragment: str) -> None:
    assert flat(fragment) in flat(page()), (
        f"docs/troubleshooting.md does not have the log line of {where} ({fragment!r}): "
        "say what it means and what to do"
    )


def test_the_log_lines_are_read_from_the_code() -> None:
    # Lines the page must have whatever else changes: the reading must keep finding them.
    fragments = {fragment for _, fragment in said_lines()}
    assert "status query failed for id=" in fragments
    assert "skipping line" not in fragments  # the longest fixed piece is taken, not the first
    assert any("is not an import id" in fragment for fragment in fragments)


@pytest.mark.parametrize("reason", sorted(WHOLE_KEY_HINTS))
def test_the_hint_for_an_answer_that_concerns_every_id_is_quoted_whole(reason: str) -> None:
    assert flat(WHOLE_KEY_HINTS[reason]) in flat(page())


def test_the_page_cites_no_issue_numbers() -> None:
    assert not re.search(r"\b[Ii]ssues? *#?\d+|(?<![\w&])#\d+\b", page())


def test_the_readme_links_the_troubleshooting_page() -> None:
    readme = (DOC.parent.parent / "README.md").read_text(encoding="utf-8")
    assert "(docs/troubleshooting.md)" in readme
