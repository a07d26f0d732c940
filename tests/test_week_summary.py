"""The landing page's summary of the last days per type, read from a real store.

Records are written to a SQLite store in tmp_path and read back through the catalog, as
the page does; the page's cache of what it reads (PageData) is checked on the same.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from elevate_import_exporter.core.records import CatalogError, ImportRecord, Query
from elevate_import_exporter.core.state import RoundResult, Snapshot
from elevate_import_exporter.lifecycle.catalog import Catalog
from elevate_import_exporter.lifecycle.store import Store
from elevate_import_exporter.lifecycle.summary import (
    DAY,
    MAX_ROWS,
    PAGE_ROWS,
    TypeSummary,
    WeekSummary,
    week_summary,
)
from elevate_import_exporter.site.web import SUMMARY_MAX_AGE, SUMMARY_MIN_AGE, PageData

NOW = 1_800_000_000.0


def ended(
    import_id: str,
    status: str = "SUCCESS",
    *,
    ago: float = 3600,
    took: float = 60,
    type: str = "PRODUCTS",
    **fields: object,
) -> ImportRecord:
    """An import that reached ``status`` ``ago`` seconds before NOW after ``took`` seconds."""
    final_at = NOW - ago
    record = ImportRecord(
        import_id,
        source="api",
        first_seen=final_at - took,
        type=type,
        status=status,
        status_since=final_at,
        last_answer=final_at,
        final_at=final_at,
    )
    return replace(record, **fields)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with contextlib.closing(Store.open(tmp_path / "imports.db")) as opened:
        yield opened


def catalog_of(store: Store, *records: ImportRecord) -> Catalog:
    store.save(list(records))
    return Catalog(store, store.load(), retention=DAY, history=30 * DAY, max_registered=1000)


class Counting:
    """A catalog that counts what the summary asks of it, and may change the store between
    two pages (as a poll round may while a page is read)."""

    def __init__(self, catalog: Catalog, store: Store, between: ImportRecord | None = None):
        self.catalog = catalog
        self.store = store
        self.between = between
        self.queries: list[Query] = []
        self.rows = 0

    @property
    def version(self) -> object:
        return self.catalog.version

    def query(self, query: Query) -> tuple[list[ImportRecord], int]:
        self.queries.append(query)
        found = self.catalog.query(query)
        self.rows += len(found[0])
        if self.between is not None:
            self.store.save([self.between])
            self.between = None
        return found


def test_a_week_of_imports_is_counted_by_type_with_failures_and_the_median_duration(
    store: Store,
) -> None:
    catalog = catalog_of(
        store,
        ended("1", "SUCCESS", took=60),
        ended("2", "FAILURE", took=120, ago=6 * DAY),
        ended("3", "ABORTED", took=600),
        ended("4", "SUCCESS", took=30, type="ADS"),
        ended("5", "SUCCESS", took=45, type=""),  # the Admin API v4 names no type
        # Not in the summary: finished 8 days ago, still running, never found.
        ended("6", "SUCCESS", ago=8 * DAY),
        ended("7", "IN_PROGRESS", final_at=None),
        ended("8", "NOT_FOUND", final_at=None, retired_at=NOW - 60),
    )
    summary = week_summary(catalog, NOW)
    assert summary.types == (
        TypeSummary("", finished=1, failed=0, median=45),
        TypeSummary("ADS", finished=1, failed=0, median=30),
        TypeSummary("PRODUCTS", finished=3, failed=2, median=120),
    )
    assert (summary.since, summary.until) == (NOW - 7 * DAY, NOW)
    assert not summary.capped


def test_a_duration_runs_from_when_elevate_accepted_the_import_when_that_is_known(
    store: Store,
) -> None:
    # Registered with accepted_at 10 min before the exporter first saw it.
    late = ended("1", took=60)
    late = replace(late, started_at=late.first_seen - 600)
    summary = week_summary(catalog_of(store, late), NOW)
    assert summary.types == (TypeSummary("PRODUCTS", finished=1, failed=0, median=660),)


def test_an_empty_store_gives_an_empty_summary(store: Store) -> None:
    summary = week_summary(catalog_of(store), NOW)
    assert (summary.types, summary.read, summary.total, summary.capped) == ((), 0, 0, False)


def test_pages_are_read_in_turn_and_a_row_pushed_down_between_them_counts_once(
    store: Store,
) -> None:
    records = [ended(str(n), ago=3600 + n) for n in range(5)]
    # It finishes after the first page was read: newest of all, it pushes every row down
    # by one, so the second page starts with the first page's last row.
    newcomer = ended("99", ago=1)
    counting = Counting(catalog_of(store, *records), store, between=newcomer)
    summary = week_summary(counting, NOW, page_rows=2)
    assert [(q.offset, q.limit) for q in counting.queries] == [(0, 2), (2, 2), (4, 2), (6, 2)]
    assert all(q.finished is True and q.since == NOW - 7 * DAY for q in counting.queries)
    (products,) = summary.types
    assert products.finished == 5


def test_a_store_with_more_than_the_cap_summarises_the_newest_and_says_so(store: Store) -> None:
    newest = [ended(f"a{n}", type="ADS", ago=60 + n) for n in range(10)]
    older = [ended(f"p{n}", type="PRODUCTS", ago=7200 + n) for n in range(20)]
    counting = Counting(catalog_of(store, *older, *newest), store)
    summary = week_summary(counting, NOW, max_rows=10, page_rows=4)
    assert summary.capped
    assert (summary.read, summary.total) == (10, 30)
    assert summary.types == (TypeSummary("ADS", finished=10, failed=0, median=60),)
    # Never more rows than the cap, in pages no larger than asked.
    assert counting.rows == 10
    assert [q.limit for q in counting.queries] == [4, 4, 2]


def test_exactly_the_cap_is_not_capped(store: Store) -> None:
    catalog = catalog_of(store, *(ended(str(n), ago=60 + n) for n in range(6)))
    summary = week_summary(catalog, NOW, max_rows=6, page_rows=3)
    assert (summary.read, summary.total, summary.capped) == (6, 6, False)


def test_the_page_reads_at_most_twenty_thousand_rows_a_thousand_at_a_time(store: Store) -> None:
    assert (MAX_ROWS, PAGE_ROWS) == (20_000, 1000)
    counting = Counting(catalog_of(store, *(ended(str(n)) for n in range(3))), store)
    week_summary(counting, NOW)
    assert [(q.offset, q.limit) for q in counting.queries] == [(0, PAGE_ROWS)]
    for bad in ({"max_rows": 0}, {"page_rows": 0}):
        with pytest.raises(ValueError, match="positive"):
            week_summary(counting, NOW, **bad)


def test_a_store_that_cannot_be_read_raises_the_catalogs_error(store: Store) -> None:
    catalog = catalog_of(store, ended("1"))
    store.close()
    with pytest.raises(CatalogError, match="could not be read"):
        week_summary(catalog, NOW)


# -- what the landing page keeps of the store between reloads --------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def round_ended(at: float) -> RoundResult:
    return RoundResult(up=True, seconds=0.1, queried=1, ended=at)


def test_the_page_reads_the_summary_again_only_after_a_change_and_a_few_seconds(
    store: Store,
) -> None:
    counting = Counting(catalog_of(store, ended("1"), ended("2", type="ADS")), store)
    clock = Clock()
    data = PageData(clock)
    first = Snapshot({}, round_ended(NOW))

    def summaries() -> int:
        return sum(1 for q in counting.queries if q.finished)

    _, summary = data.read(counting, first)  # type: ignore[arg-type]
    assert isinstance(summary, WeekSummary)
    assert [t.type for t in summary.types] == ["ADS", "PRODUCTS"]
    assert summaries() == 1
    # Reloads without a new round or registration: nothing is read again.
    clock.now = NOW + SUMMARY_MIN_AGE
    data.read(counting, first)  # type: ignore[arg-type]
    assert summaries() == 1
    # An import ends, and a round sees it; the page reloads a second later and again once
    # SUMMARY_MIN_AGE has passed since the summary was read: only then is it read again.
    store.save([ended("3", type="SYNONYMS", ago=1)])
    second = Snapshot({}, round_ended(NOW + 1))
    clock.now = NOW + 1
    _, summary = data.read(counting, second)  # type: ignore[arg-type]
    assert summaries() == 1
    assert summary is not None
    assert [t.type for t in summary.types] == ["ADS", "PRODUCTS"]
    clock.now = NOW + SUMMARY_MIN_AGE + 1
    _, summary = data.read(counting, second)  # type: ignore[arg-type]
    assert summaries() == 2
    assert summary is not None
    assert [t.type for t in summary.types] == ["ADS", "PRODUCTS", "SYNONYMS"]
    data.read(counting, second)  # type: ignore[arg-type]
    assert summaries() == 2
    # Without any change, the days move on: read again after SUMMARY_MAX_AGE.
    clock.now += SUMMARY_MAX_AGE
    data.read(counting, second)  # type: ignore[arg-type]
    assert summaries() == 3


def test_a_store_that_fails_leaves_the_page_without_summary_and_sources_and_says_why(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    catalog = catalog_of(store, ended("1"))
    store.close()
    with caplog.at_level(logging.WARNING):
        records, summary = PageData(Clock()).read(catalog, Snapshot({}, None))
    assert (dict(records), summary) == ({}, None)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("without the summary of the last days" in w for w in warnings), warnings
