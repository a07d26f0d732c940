"""The documentation site builds with ``mkdocs build --strict``, and says no issue numbers.

mkdocs.yml makes every problem a reader would meet a warning (a link to a missing page or
anchor, a page left out of the nav, a nav entry without its page), and --strict turns
warnings into a failed build. The build goes to tmp_path, never the work tree.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.support import missing

CONFIG = REPO / "mkdocs.yml"
DOCS = REPO / "docs"
# A build takes seconds; a hung one must not hold the suite.
BUILD_TIMEOUT = 300
# The pages a newcomer looks for, by their place in the built site.
PAGES = (
    "getting-started",
    "ids",
    "feed-path",
    "configuration",
    "reference/configuration",
    "metrics",
    "reference/metrics",
    "security",
    "deployment/docker",
    "deployment/systemd",
    "deployment/kubernetes",
    "deployment/high-availability",
    "clusters",
    "alerts",
    "runbook",
    "troubleshooting",
    "architecture",
    "benchmarks",
)
# "#22", "issue 22", "issues 22 and 24", "PR 7", and links to an issue or a pull request.
ISSUE_CITATION = re.compile(
    r"(?<![\w&#/])#\d+\b|\b(?:issues?|PRs?|pull requests?)\s+#?\d+|/(?:issues|pull)/\d+",
    re.IGNORECASE,
)


def mkdocs() -> str:
    found = Path(sys.executable).parent / "mkdocs"
    path = str(found) if found.exists() else shutil.which("mkdocs")
    if path is None:
        missing("mkdocs is not installed (pip install -e '.[dev]')")
        raise AssertionError("unreachable")
    if importlib.util.find_spec("material") is None:
        missing("mkdocs-material is not installed (pip install -e '.[dev]')")
    return path


def build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [mkdocs(), "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        # Only the banner about mkdocs' future goes; every warning stays.
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )


def test_the_docs_site_builds_strictly_with_every_page_a_newcomer_looks_for(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    done = build(CONFIG, site)
    assert done.returncode == 0, done.stdout + done.stderr
    absent = [page for page in PAGES if not (site / page / "index.html").is_file()]
    assert absent == [], f"pages missing from the built site: {absent}"
    assert (site / "search" / "search_index.json").is_file(), "the site has no search"


@pytest.mark.parametrize(
    ("breakage", "named"),
    [
        ("a link to a page that does not exist", "no-such-page.md"),
        ("a link to a section that does not exist", "no-such-section"),
        ("a page left out of the nav", "stray.md"),
        ("a nav entry whose page is gone", "benchmarks.md"),
    ],
)
def test_the_build_fails_on(breakage: str, named: str, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(DOCS, copy / "docs")
    config = copy / "mkdocs.yml"
    shutil.copy(CONFIG, config)
    index = copy / "docs" / "index.md"
    if named == "no-such-page.md":
        index.write_text(index.read_text("utf-8") + "\n[gone](no-such-page.md)\n", "utf-8")
    elif named == "no-such-section":
        link = "\n[gone](getting-started.md#no-such-section)\n"
        index.write_text(index.read_text("utf-8") + link, "utf-8")
    elif named == "stray.md":
        (copy / "docs" / "stray.md").write_text("# Not in the nav\n", "utf-8")
    else:
        (copy / "docs" / named).unlink()
    done = build(config, tmp_path / "site")
    assert done.returncode != 0, f"{breakage} passed the build:\n{done.stderr}"
    assert named in done.stdout + done.stderr


def test_every_link_of_the_readme_finds_its_file() -> None:
    # GitHub shows the README, not mkdocs: its links to docs/ are checked here.
    readme = (REPO / "README.md").read_text("utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [t for t in targets if not re.match(r"[a-z]+:", t)]
    assert "docs/troubleshooting.md" in local
    assert [t for t in local if not (REPO / t).exists()] == []


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]


def test_no_page_and_not_the_readme_cites_an_issue_number() -> None:
    citations = [
        f"{page.relative_to(REPO)}:{number}: {match[0]}"
        for page in pages()
        for number, line in enumerate(page.read_text("utf-8").splitlines(), start=1)
        for match in ISSUE_CITATION.finditer(line)
    ]
    assert citations == [], "say what changed, not which issue asked for it"


@pytest.mark.parametrize(
    "text",
    ["as issue 22 asks", "see #22", "(issues 22 and 24)", "PR 7", "/issues/22"],
)
def test_the_issue_check_sees(text: str) -> None:
    assert ISSUE_CITATION.search(text)


@pytest.mark.parametrize(
    "text",
    ["[the store](#kept-across-restarts-the-store)", "# 1. The package", "step 2 of 5"],
)
def test_the_issue_check_lets_pass(text: str) -> None:
    assert not ISSUE_CITATION.search(text)
