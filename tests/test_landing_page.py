"""The landing page: status colours, poll ages, the exporter's own state, escaping, history.

The live table is read over HTTP from a running exporter; the history section and the
summary of the last days are rendered directly from constructed records and summaries, and
read over HTTP once each from a running exporter's store (the summary itself:
test_week_summary.py). The page in a real browser, following the demo by itself, is in
test_demo_browser.py.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from elevate_import_exporter.core.model import ImportInfo
from elevate_import_exporter.core.records import ImportRecord
from elevate_import_exporter.core.state import ImportState, Snapshot
from elevate_import_exporter.lifecycle.summary import TypeSummary, WeekSummary
from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from elevate_import_exporter.site.landing import HISTORY_PAGE_SIZE, ago, landing_page, took
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
    """What the tests read of the page: meta tags, links, each table by id, the exporter's list.

    Rows belong to the table they are in, so the history below cannot pass for live imports.
    """

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.metas: list[dict[str, str]] = []
        self.links: list[dict[str, str]] = []
        self.tags: list[str] = []
        self.tables: dict[str, list[list[tuple[str, set[str]]]]] = {}
        self.terms: dict[str, str] = {}
        self._rows: list[list[tuple[str, set[str]]]] | None = None
        self._cell: list[str] | None = None
        self._classes: set[str] = set()
        self._term: str | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        if tag == "meta":
            self.metas.append(attributes)
        elif tag == "a":
            self.links.append(attributes)
        elif tag == "table":
            assert self._rows is None, "a table inside a table"
            name = attributes.get("id", "")
            assert name not in self.tables, f"two tables with id {name!r}"
            self._rows = self.tables[name] = []
        elif tag == "tr":
            assert self._rows is not None, "a row outside a table"
            self._rows.append([])
        elif tag in ("td", "th", "dt", "dd"):
            assert self._cell is None, f"<{tag}> inside an open cell"
            self._cell = []
            self._classes = set(attributes.get("class", "").split())

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._rows = None
        if self._cell is None or tag not in ("td", "th", "dt", "dd"):
            return
        text = "".join(self._cell).strip()
        if tag in ("td", "th") and self._rows:
            self._rows[-1].append((text, self._classes))
        elif tag == "dt":
            self._term = text
        elif tag == "dd" and self._term is not None:
            self.terms[self._term] = text
            self._term = None
        self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def rows_of(self, table: str) -> list[Row]:
        """The rows of one table in page order, cells by lower-cased column header."""
        header, *body = self.tables[table]
        names = [text.lower() for text, _ in header]
        rows = []
        for row in body:
            if len(row) == 1 and len(names) > 1:
                continue  # a note spanning the table ("No ... yet."), not a row of it
            cells = dict(zip(names, (text for text, _ in row), strict=True))
            classes = dict(zip(names, (classes for _, classes in row), strict=True))
            status = classes.get("status", classes.get("final status", set()))
            rows.append(Row(cells, status))
        return rows

    def table(self) -> dict[str, Row]:
        """The tracked imports by id."""
        return {row.cells["id"]: row for row in self.rows_of("tracked")}

    def history(self) -> list[Row]:
        """The finished and retired imports, in page order."""
        return self.rows_of("history")

    def notes(self, table: str) -> list[str]:
        return [row[0][0] for row in self.tables[table][1:] if len(row) == 1]

    def hrefs(self) -> list[str]:
        return [link["href"] for link in self.links if "href" in link]


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
    assert row.cells["last poll ok"] == "no (server_error)"
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
    assert state["Up (every id answered)"] == "no"
    # Two ids failed on their own; the other two got answers: Elevate is there.
    assert state["Elevate reachable"] == "yes"
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
    assert state["Up (every id answered)"] == "yes"
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


# -- the history: finished and retired imports ----------------------------------------------

NOW = 1_700_000_000.0
NOTHING_LIVE = Snapshot({}, None)


def when(seconds: float) -> str:
    """A time as the page writes it (written out here, so a wrong format shows)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def finished(
    import_id: str, status: str = "SUCCESS", took_seconds: float = 60, **fields: Any
) -> ImportRecord:
    first_seen = NOW - 7200
    record = ImportRecord(
        import_id,
        source="api",
        first_seen=first_seen,
        type="PRODUCTS",
        status=status,
        message=f"{status.lower()} message",
        status_since=first_seen + took_seconds,
        last_answer=first_seen + took_seconds,
        final_at=first_seen + took_seconds,
    )
    return replace(record, **fields)


def render(
    history: Sequence[ImportRecord],
    page: int = 1,
    pages: int = 1,
    snapshot: Snapshot = NOTHING_LIVE,
    *,
    records: Mapping[str, ImportRecord] | None = None,
    metric_labels: Sequence[str] = (),
    summary: WeekSummary | None = None,
) -> Page:
    body = landing_page(
        snapshot,
        "/metrics",
        history,
        page,
        pages,
        now=NOW,
        records=records or {},
        metric_labels=metric_labels,
        summary=summary,
    )
    return Page(body.decode("utf-8"))


def test_the_history_lists_finished_imports_in_the_order_given_with_all_their_columns() -> None:
    history = [
        finished(
            "3003",
            "FAILURE",
            took_seconds=192,
            message="Attribute 'price' is not a number on line 17.",
            labels=(("feed", "products-nightly"), ("run", "8812")),
        ),
        finished("3001", "SUCCESS", took_seconds=7500, source="file", type="ADS"),
        finished("3002", "ABORTED", took_seconds=4, source="flag", message=""),
    ]
    rows = render(history).history()
    assert [row.cells["id"] for row in rows] == ["3003", "3001", "3002"]
    failed, succeeded, aborted = (row.cells for row in rows)
    assert failed == {
        "id": "3003",
        "type": "PRODUCTS",
        "final status": "FAILURE",
        "message": "Attribute 'price' is not a number on line 17.",
        "first seen": when(NOW - 7200),
        "finished": when(NOW - 7200 + 192),
        "duration": "3m 12s",
        "labels": "feed=products-nightly run=8812",
        "source": "api",
    }
    assert (succeeded["type"], succeeded["duration"], succeeded["source"]) == (
        "ADS",
        "2h 5m",
        "file",
    )
    assert (aborted["message"], aborted["duration"], aborted["labels"]) == ("", "4s", "")
    assert [row.status_classes for row in rows] == [
        {"status", "status-failure"},
        {"status", "status-success"},
        {"status", "status-aborted"},
    ]


def test_a_retired_import_keeps_the_status_it_had_beside_a_retired_badge() -> None:
    history = [
        finished("3001", "FAILURE", retired_at=NOW - 60),
        finished("3002", "SUCCESS"),
        # An id Elevate never knew is retired without ever finishing.
        finished("3003", "NOT_FOUND", final_at=None, retired_at=NOW - 30),
    ]
    page = render(history)
    rows = {row.cells["id"]: row for row in page.history()}
    assert rows["3001"].cells["final status"] == "FAILURE retired"
    assert "status-failure" in rows["3001"].status_classes
    assert rows["3002"].cells["final status"] == "SUCCESS"
    assert rows["3003"].cells["final status"] == "NOT_FOUND retired"
    assert "status-not-found" in rows["3003"].status_classes
    assert (rows["3003"].cells["finished"], rows["3003"].cells["duration"]) == ("never", "")
    badges = re.findall(r'<span class="badge retired" title="([^"]*)">retired</span>', page.text)
    assert badges == [f"left the metrics {when(NOW - 60)}", f"left the metrics {when(NOW - 30)}"]


def test_durations_read_in_their_two_largest_units() -> None:
    assert took(0) == "0s"
    assert took(45.9) == "45s"
    assert took(192) == "3m 12s"
    assert took(3600) == "1h 0m"
    assert took(7500) == "2h 5m"
    assert took(86400 + 4 * 3600 + 59) == "1d 4h"
    # A clock stepped back between first seen and final shows no negative duration.
    assert took(-5) == "0s"


# Every element the page itself uses; anything else came from outside unescaped.
PAGE_TAGS = {
    "html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "a", "code", "nav",
    "span", "div", "dl", "dt", "dd", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
HOSTILE = (
    "<script>alert('owned')</script>",
    '"><img src=x onerror=alert(1)>',
    "</td></tr></table><table><tr><td>",
    "&amp; &lt; & <!-- -->",
    "lone\ud800 nul\x00 bell\x07 rtl\u202e emoji\U0001f600",
)


@pytest.mark.parametrize("text", HOSTILE)
@pytest.mark.parametrize("column", ["id", "type", "final status", "message", "labels", "source"])
def test_hostile_text_in_any_history_column_is_shown_as_text(column: str, text: str) -> None:
    by_column: dict[str, dict[str, Any]] = {
        "id": {"id": text},
        "type": {"type": text},
        "final status": {"status": text},
        "message": {"message": text},
        "labels": {"labels": (("feed", text),)},
        "source": {"source": text},
    }
    fields = by_column[column]
    live = ImportState("1001", NOW - 60, ImportInfo("1001", "IN_PROGRESS", "ADS", ""), NOW - 60)
    page = render([finished("3001", **fields)], snapshot=Snapshot({"1001": live}, None))
    # Only the page's own elements: no script, no img with a handler, no extra table.
    assert set(page.tags) <= PAGE_TAGS, set(page.tags) - PAGE_TAGS
    assert page.tags.count("table") == 2
    # One row of nine cells: nothing closed the row, the table or a cell early.
    (row,) = page.history()
    shown = text.replace("\ud800", "\ufffd").replace("\x00", "\ufffd").replace("\x07", "\ufffd")
    shown = shown.replace("\u202e", "\ufffd")  # bidi controls are neutralised too
    expected = f"feed={shown}" if column == "labels" else shown
    assert row.cells[column].strip() == expected.strip()
    if column == "final status":
        assert row.status_classes == {"status", "status-unknown"}
    assert list(page.table()) == ["1001"]
    assert page.tables.keys() == {"tracked", "history"}


def test_pagination_links_appear_only_when_the_history_has_several_pages() -> None:
    history = [finished("3001")]
    alone = render(history)
    assert not [href for href in alone.hrefs() if "page=" in href]
    assert "nav" not in alone.tags

    first, middle, last = (render(history, page, 3) for page in (1, 2, 3))
    assert [h for h in first.hrefs() if "page=" in h] == ["/?page=2"]
    assert [h for h in middle.hrefs() if "page=" in h] == ["/?page=1", "/?page=3"]
    assert [h for h in last.hrefs() if "page=" in h] == ["/?page=2"]
    for number, shown in enumerate((first, middle, last), start=1):
        assert f"page {number} of 3" in shown.text
        assert shown.tags.count("nav") == 1
    rels = {link["rel"]: link["href"] for link in middle.links if "rel" in link}
    assert rels == {"prev": "/?page=1", "next": "/?page=3"}


def test_a_page_past_the_last_says_so_and_links_back_to_the_last_page() -> None:
    past = render([], page=7, pages=3)
    assert past.notes("history") == ["No finished imports on this page."]
    assert [h for h in past.hrefs() if "page=" in h] == ["/?page=3"]
    # Even when everything fits on one page now, an old link to page 2 finds its way back.
    shrunk = render([], page=2, pages=1)
    assert [h for h in shrunk.hrefs() if "page=" in h] == ["/?page=1"]


def test_the_page_never_shows_more_than_one_page_of_history() -> None:
    assert HISTORY_PAGE_SIZE == 50
    history = [finished(str(4000 + n)) for n in range(3 * HISTORY_PAGE_SIZE)]
    rows = render(history, 1, 3).history()
    assert [row.cells["id"] for row in rows] == [str(4000 + n) for n in range(HISTORY_PAGE_SIZE)]


def test_an_empty_history_says_so_beside_the_live_imports() -> None:
    live = ImportState("1001", NOW - 60, ImportInfo("1001", "IN_PROGRESS", "ADS", ""), NOW - 60)
    page = render([], snapshot=Snapshot({"1001": live}, None))
    assert page.history() == []
    assert page.notes("history") == ["No finished imports yet."]
    assert page.table()["1001"].cells["status"] == "IN_PROGRESS"


def test_a_finished_import_still_exported_is_in_both_tables_each_with_its_own_columns() -> None:
    info = ImportInfo("3001", "FAILURE", "PRODUCTS", "Feed failed")
    live = ImportState("3001", NOW - 600, info, NOW - 300, poll_success=True, last_polled=NOW - 5)
    record = finished("3001", "FAILURE", took_seconds=300, message="Feed failed")
    page = render([record], snapshot=Snapshot({"3001": live}, None))
    assert page.table()["3001"].cells["last polled"] == "final, not asked again"
    (row,) = page.history()
    assert (row.cells["final status"], row.cells["duration"]) == ("FAILURE", "5m 0s")


# -- the tracked imports' source and allowlisted labels ---------------------------------------


def live(import_id: str, status: str = "IN_PROGRESS") -> ImportState:
    return ImportState(import_id, NOW - 60, ImportInfo(import_id, status, "PRODUCTS", ""), NOW - 60)


def registered(import_id: str, source: str = "api", **labels: str) -> ImportRecord:
    return ImportRecord(import_id, source=source, first_seen=NOW - 60, labels=tuple(labels.items()))


def test_the_tracked_table_shows_the_source_and_a_column_per_allowlisted_label() -> None:
    snapshot = Snapshot({i: live(i) for i in ("1001", "4001", "5001")}, None)
    records = {
        "1001": registered("1001", "flag"),
        "4001": registered("4001", "proxy", feed_name="nightly", path="/api/v2/import/products"),
        # 5001: no record kept yet (a round has not written it): no source, no labels.
    }
    page = render([], snapshot=snapshot, records=records, metric_labels=("feed_name", "team"))
    header = [text for text, _ in page.tables["tracked"][0]]
    assert header[-3:] == ["Source", "feed_name", "team"]
    rows = page.table()
    assert {k: rows["4001"].cells[k] for k in ("source", "feed_name", "team")} == {
        "source": "proxy",
        "feed_name": "nightly",
        "team": "",
    }
    assert (rows["1001"].cells["source"], rows["1001"].cells["feed_name"]) == ("flag", "")
    assert (rows["5001"].cells["source"], rows["5001"].cells["team"]) == ("", "")
    # Labels that are not allowlisted stay on the history and the API, not here.
    assert "/api/v2/import/products" not in page.text


def test_without_an_allowlist_the_tracked_table_has_the_source_and_no_label_columns() -> None:
    snapshot = Snapshot({"4001": live("4001")}, None)
    records = {"4001": registered("4001", "api", feed_name="nightly")}
    page = render([], snapshot=snapshot, records=records)
    header = [text for text, _ in page.tables["tracked"][0]]
    assert header == [
        "Id",
        "Type",
        "Status",
        "Since",
        "Last polled",
        "Message",
        "Last poll ok",
        "Source",
    ]
    assert page.table()["4001"].cells["source"] == "api"
    # The note of an empty table spans every column, labels included.
    empty = render([], metric_labels=("feed_name", "team"))
    assert '<td colspan="10">No import ids are tracked.</td>' in empty.text


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_label_values_and_names_in_the_tracked_table_are_shown_as_text(text: str) -> None:
    snapshot = Snapshot({"4001": live("4001")}, None)
    records = {"4001": registered("4001", "api", feed_name=text)}
    # Names are checked at start-up (a-z 0-9 _); the page escapes them all the same.
    page = render([], snapshot=snapshot, records=records, metric_labels=("feed_name", text))
    assert set(page.tags) <= PAGE_TAGS, set(page.tags) - PAGE_TAGS
    assert page.tags.count("table") == 2
    shown = text
    for odd in ("\ud800", "\x00", "\x07", "\u202e"):
        shown = shown.replace(odd, "\ufffd")
    header = [name for name, _ in page.tables["tracked"][0]]
    assert header[-2:] == ["feed_name", shown.strip()]
    (row,) = page.table().values()
    assert row.cells["feed_name"] == shown.strip()


def test_a_running_exporter_shows_each_imports_source_and_allowlisted_labels(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    simulator.add_import(ScriptedImport("1001", (Step("IN_PROGRESS"),)))
    simulator.add_import(ScriptedImport("4001", (Step("WAITING"),), type="ADS"))
    running = exporter_for(
        simulator.url, ["1001"], enable_registration=True, imports_metric_labels="feed_name,team"
    )
    hostile = "<script>alert('owned')</script>"
    document = {"id": "4001", "labels": {"feed_name": hostile, "team": "web", "run": "8812"}}
    request = urllib.request.Request(
        running.url + "/api/v1/imports",
        data=json.dumps(document).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 201
    poll_once(running.url)
    shown = page(running.url)
    assert set(shown.tags) <= PAGE_TAGS
    rows = shown.table()
    assert {k: rows["4001"].cells[k] for k in ("status", "source", "feed_name", "team")} == {
        "status": "WAITING",
        "source": "api",
        "feed_name": hostile,
        "team": "web",
    }
    assert (rows["1001"].cells["source"], rows["1001"].cells["feed_name"]) == ("flag", "")
    assert "8812" not in shown.text


# -- the last days per type ---------------------------------------------------------------------


def summary_of(*types: TypeSummary, capped: bool = False, total: int = 0) -> WeekSummary:
    read = sum(t.finished for t in types)
    return WeekSummary(NOW - 7 * 86400, NOW, types, read, total or read, capped)


def test_the_summary_shows_finished_failed_and_the_median_duration_per_type() -> None:
    summary = summary_of(
        TypeSummary("", finished=2, failed=0, median=45),
        TypeSummary("ADS", finished=12, failed=0, median=None),
        TypeSummary("PRODUCTS", finished=30, failed=4, median=192),
    )
    page = render([], summary=summary)
    rows = [row.cells for row in page.rows_of("week")]
    assert rows == [
        {"type": "(none)", "finished": "2", "failed": "0", "median duration": "45s"},
        {"type": "ADS", "finished": "12", "failed": "0", "median duration": ""},
        {"type": "PRODUCTS", "finished": "30", "failed": "4", "median duration": "3m 12s"},
    ]
    assert f"since {when(NOW - 7 * 86400)}" in page.text
    assert page.text.count('class="failed"') == 1
    assert '<p class="capped">' not in page.text


def test_a_capped_summary_says_how_many_rows_it_counted_of_how_many() -> None:
    summary = summary_of(
        TypeSummary("PRODUCTS", finished=20_000, failed=3, median=60), capped=True, total=31_500
    )
    page = render([], summary=summary)
    (note,) = re.findall(r'<p class="capped">(.*?)</p>', page.text, re.DOTALL)
    assert "the newest 20,000 of the 31,500 imports" in note
    assert [row.cells["finished"] for row in page.rows_of("week")] == ["20000"]


def test_an_empty_or_unreadable_summary_says_so() -> None:
    empty = render([], summary=summary_of())
    assert empty.notes("week") == ["No import finished in this period."]
    unreadable = render([])
    assert "week" not in unreadable.tables
    assert "Not available: the store could not be read" in unreadable.text


@pytest.mark.parametrize("text", HOSTILE)
def test_a_hostile_type_in_the_summary_is_shown_as_text(text: str) -> None:
    page = render([], summary=summary_of(TypeSummary(text, finished=1, failed=1, median=1)))
    assert set(page.tags) <= PAGE_TAGS, set(page.tags) - PAGE_TAGS
    (row,) = page.rows_of("week")
    shown = text
    for odd in ("\ud800", "\x00", "\x07", "\u202e"):
        shown = shown.replace(odd, "\ufffd")
    assert row.cells["type"] == shown.strip()


def test_a_running_exporter_summarises_the_imports_its_store_saw_finish(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    simulator.add_import(ScriptedImport("1001", (Step("SUCCESS"),)))
    simulator.add_import(ScriptedImport("1002", (Step("FAILURE"),)))
    simulator.add_import(ScriptedImport("1003", (Step("ABORTED"),), type="ADS"))
    simulator.add_import(ScriptedImport("1004", (Step("IN_PROGRESS"),), type="ADS"))
    # The first round, before the exporter returns, sees every final status.
    running = exporter_for(simulator.url, ["1001", "1002", "1003", "1004"])
    rows = {row.cells["type"]: row.cells for row in page(running.url).rows_of("week")}
    assert {kind: (r["finished"], r["failed"]) for kind, r in rows.items()} == {
        "ADS": ("1", "1"),
        "PRODUCTS": ("2", "1"),
    }
