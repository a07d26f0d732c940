"""The landing page over HTTP: status colours, poll ages, the exporter's own state, escaping.

The page in a real browser, following the demo by itself, is in test_demo_browser.py.
"""

from __future__ import annotations

import re
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from elevate_import_exporter.landing import ago
from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from tests.conftest import ExporterFor
from tests.support import wait_until

# Written out, not derived from the code's table, so a wrong mapping shows.
STATUS_CLASSES = {
    "SUCCESS": "status-success",
    "FAILURE": "status-failure",
    "ABORTED": "status-aborted",
    "IN_PROGRESS": "status-in-progress",
    "WAITING": "status-waiting",
    "BLOCKED": "status-blocked",
}


@dataclass
class Row:
    cells: dict[str, str]
    status_classes: set[str]


class Page(HTMLParser):
    """What the tests read of the page: meta tags, the table, the exporter's list."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.metas: list[dict[str, str]] = []
        self.rows: list[list[tuple[str, set[str]]]] = []
        self.terms: dict[str, str] = {}
        self._cell: list[str] | None = None
        self._classes: set[str] = set()
        self._term: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        if tag == "meta":
            self.metas.append(attributes)
        elif tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th", "dt", "dd"):
            self._cell = []
            self._classes = set(attributes.get("class", "").split())

    def handle_endtag(self, tag: str) -> None:
        if self._cell is None or tag not in ("td", "th", "dt", "dd"):
            return
        text = "".join(self._cell).strip()
        if tag in ("td", "th") and self.rows:
            self.rows[-1].append((text, self._classes))
        elif tag == "dt":
            self._term = text
        elif tag == "dd" and self._term is not None:
            self.terms[self._term] = text
            self._term = None
        self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def table(self) -> dict[str, Row]:
        """The imports by id, cells by lower-cased column header."""
        header = [text.lower() for text, _ in self.rows[0]]
        rows = {}
        for row in self.rows[1:]:
            cells = dict(zip(header, (text for text, _ in row), strict=True))
            status = dict(zip(header, (classes for _, classes in row), strict=True))["status"]
            rows[cells["id"]] = Row(cells, status)
        return rows


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        body: bytes = response.read()
        return body.decode("utf-8")


def page(url: str) -> Page:
    return Page(fetch(url + "/"))


def poll_once(url: str) -> None:
    """A scrape, which runs a poll round (min_poll_interval is 0 in these tests)."""
    fetch(url + "/metrics")


# -- colours --------------------------------------------------------------------------------


def test_each_status_cell_carries_the_class_of_its_status_and_keeps_its_text(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    ids = {status: str(2000 + n) for n, status in enumerate(STATUS_CLASSES)}
    for status, import_id in ids.items():
        simulator.add_import(ScriptedImport(import_id, (Step(status),)))
    simulator.add_import(ScriptedImport("3000", (Step("REINDEXING"),)))
    running = exporter_for(simulator.url, [*ids.values(), "3000", "3001"])
    rows = page(running.url).table()
    for status, import_id in ids.items():
        assert rows[import_id].cells["status"] == status
        assert STATUS_CLASSES[status] in rows[import_id].status_classes, (status, rows[import_id])
    # A status Elevate does not document, and an id it does not know, are grey.
    assert rows["3000"].cells["status"] == "REINDEXING"
    assert "status-unknown" in rows["3000"].status_classes
    assert rows["3001"].cells["status"] == "NOT_FOUND"
    assert "status-not-found" in rows["3001"].status_classes


def test_an_import_without_an_answer_yet_is_unknown_in_grey(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    simulator.fail_ids.add("1001")
    running = exporter_for(simulator.url, ["1001"], retries="0")
    row = page(running.url).table()["1001"]
    assert row.cells["status"] == "unknown yet"
    assert row.cells["last poll ok"] == "no"
    assert "status-unknown" in row.status_classes


def test_the_stylesheet_gives_success_failure_and_progress_different_colours(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    running = exporter_for(simulator.url, [])
    text = page(running.url).text

    def background(css_class: str) -> str:
        found = re.search(r"\." + css_class + r"\b[^{]*\{[^}]*background:\s*([^;]+);", text)
        assert found, f"no background for .{css_class}"
        return found.group(1)

    colours = {background(c) for c in ("status-success", "status-failure", "status-in-progress")}
    assert len(colours) == 3
    assert background("status-failure") == background("status-aborted")


# -- ages -----------------------------------------------------------------------------------


def test_each_import_shows_how_long_ago_it_was_last_polled_and_the_age_grows(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    simulator.add_import(ScriptedImport("1001", (Step("IN_PROGRESS"),)))
    # No round after the first, so the age can only grow.
    running = exporter_for(simulator.url, ["1001", "1002"], min_poll_interval="1h")
    for row in page(running.url).table().values():
        assert re.fullmatch(r"\d+ s ago", row.cells["last polled"]), row
        assert re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC", row.cells["since"]), row

    def aged() -> bool:
        polled = page(running.url).table()["1001"].cells["last polled"]
        return polled != "0 s ago"

    wait_until(aged, timeout=10, interval=0.2, what="the poll age to pass 0 s")


def test_an_id_not_polled_yet_shows_never(
    simulator: Simulator, exporter_for: ExporterFor, tmp_path: Path
) -> None:
    ids_file = tmp_path / "ids"
    ids_file.write_text("1001\n", encoding="utf-8")
    running = exporter_for(simulator.url, ids_file=str(ids_file), min_poll_interval="1h")
    ids_file.write_text("1001\n1002\n", encoding="utf-8")
    # Within the minimum interval a scrape asks nothing, but takes the new id in.
    poll_once(running.url)
    rows = page(running.url).table()
    assert rows["1002"].cells["last polled"] == "never"
    assert rows["1002"].cells["status"] == "unknown yet"
    assert rows["1001"].cells["last polled"].endswith(" s ago")


def test_ages_read_in_the_largest_whole_unit() -> None:
    now = 1_700_000_000.0
    assert ago(None, now) == "never"
    assert ago(now - 3.7, now) == "3 s ago"
    assert ago(now - 59, now) == "59 s ago"
    assert ago(now - 60, now) == "1 min ago"
    assert ago(now - 7200, now) == "2 h ago"
    assert ago(now - 3 * 86400, now) == "3 d ago"
    # A wall clock stepped back shows no negative age.
    assert ago(now + 5, now) == "0 s ago"


# -- the exporter's own state ---------------------------------------------------------------


def test_the_exporter_section_shows_the_last_round_and_its_failures_by_reason(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    simulator.add_import(ScriptedImport("1001", (Step("IN_PROGRESS"),)))
    simulator.add_import(ScriptedImport("1002", (Step("SUCCESS"),)))
    simulator.fail_ids.add("1003")
    simulator.garbage_ids.add("1004")
    running = exporter_for(simulator.url, ["1001", "1002", "1003", "1004"], retries="0")
    state = page(running.url).terms
    assert state["Up"] == "no"
    assert state["Ids queried"].startswith("4 ")
    assert state["Ids without an answer"] == "invalid_response: 1, server_error: 1"
    assert state["Ids tracked"] == "4"
    assert re.fullmatch(
        r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC, \d+ s ago", state["Last poll round ended"]
    )

    simulator.fail_ids.clear()
    simulator.garbage_ids.clear()
    poll_once(running.url)
    state = page(running.url).terms
    assert state["Up"] == "yes"
    # 1002 is final: the second round does not ask for it again.
    assert state["Ids queried"].startswith("3 ")
    assert state["Ids without an answer"] == "none"


# -- escaping and refresh -------------------------------------------------------------------


def test_hostile_text_from_the_api_is_shown_escaped(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    script = "<script>alert('owned')</script>"
    simulator.add_import(
        ScriptedImport(
            "1001", (Step(script, message=f'{script} "quoted" & <b>'),), type=f"{script}&amp;"
        )
    )
    running = exporter_for(simulator.url, ["1001"])
    shown = page(running.url)
    assert "<script" not in shown.text.lower()
    assert "&lt;script&gt;" in shown.text
    row = shown.table()["1001"]
    assert row.cells["status"] == script
    assert row.cells["type"] == f"{script}&amp;"
    assert row.cells["message"] == f'{script} "quoted" & <b>'
    assert "status-unknown" in row.status_classes


def test_odd_characters_from_the_api_do_not_break_the_page(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    odd = "nul\x00 bell\x07 lone\ud800 rtl\u202e emoji\U0001f600"
    simulator.add_import(ScriptedImport("1001", (Step("FAILURE", message=odd),), type=odd))
    running = exporter_for(simulator.url, ["1001"])
    row = page(running.url).table()["1001"]
    assert row.cells["status"] == "FAILURE"
    assert "emoji\U0001f600" in row.cells["message"]
    assert "\x00" not in row.cells["message"]


def test_the_page_reloads_itself_every_few_seconds(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    running = exporter_for(simulator.url, ["1001"])
    refresh = [m for m in page(running.url).metas if m.get("http-equiv", "").lower() == "refresh"]
    assert len(refresh) == 1
    assert 1 <= int(refresh[0]["content"]) <= 10
