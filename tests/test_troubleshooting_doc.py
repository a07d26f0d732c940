"""The troubleshooting page covers what the code can say: every reason of the metrics."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from elevate_import_exporter.core.model import ERROR_REASONS
from elevate_import_exporter.polling.poller import ROUND_REASONS

DOC = Path(__file__).resolve().parent.parent / "docs" / "troubleshooting.md"


def table_keys() -> set[str]:
    """The first cell of every table row, as written in backticks."""
    keys = set()
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("| `"):
            keys.update(re.findall(r"`([^`]+)`", line.split("|")[1]))
    return keys


@pytest.mark.parametrize("reason", [*ERROR_REASONS, *ROUND_REASONS])
def test_every_reason_a_metric_can_carry_has_a_row_that_says_what_to_do(reason: str) -> None:
    assert reason in table_keys(), f"docs/troubleshooting.md has no row for {reason}"


def test_the_readme_links_the_troubleshooting_page() -> None:
    readme = (DOC.parent.parent / "README.md").read_text(encoding="utf-8")
    assert "(docs/troubleshooting.md)" in readme
