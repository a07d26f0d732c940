"""The last days of finished imports per type, read from the store: how many finished, how
many failed, and their median duration, for the landing page.

Prometheus keeps the long history (the aggregates of ``elevate_import_finished_total`` and
the duration histogram); this is the glance a page can give without it. It reads pages of
the catalog's listing, newest first, and stops at a bound, so that a store of many imports
costs a page load no more than that bound; the summary says when it stopped early.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from elevate_import_exporter.core.records import ImportRecord, Query

DAY = 86400.0
DAYS = 7
# At most this many finished imports are read for one summary (each row is checked as it is
# read: about half a second for all of them): a store with more summarises the newest ones
# and says so.
MAX_ROWS = 20_000
# Rows asked for at once.
PAGE_ROWS = 1000
# What counts against an import: the final statuses other than SUCCESS.
FAILED_STATUSES = frozenset({"FAILURE", "ABORTED"})


class Listing(Protocol):
    """What the summary needs of the catalog (``lifecycle.catalog.Catalog``)."""

    def query(self, query: Query) -> tuple[list[ImportRecord], int]: ...


@dataclass(frozen=True, slots=True)
class TypeSummary:
    """One type's finished imports: ``failed`` of them FAILURE or ABORTED; ``median``
    duration in seconds (from the start when known, else first seen), None if none."""

    type: str
    finished: int
    failed: int
    median: float | None


@dataclass(frozen=True, slots=True)
class WeekSummary:
    """Imports that reached a final status from ``since`` to ``until`` (Unix seconds), by
    type (sorted). ``capped``: more finished in that time than ``read`` rows; the counts
    cover the newest ``read`` only, of ``total`` the store listed."""

    since: float
    until: float
    types: tuple[TypeSummary, ...]
    read: int
    total: int
    capped: bool


def week_summary(
    catalog: Listing,
    now: float,
    *,
    days: float = DAYS,
    max_rows: int = MAX_ROWS,
    page_rows: int = PAGE_ROWS,
) -> WeekSummary:
    """The summary of the ``days`` before ``now``, from at most ``max_rows`` rows.

    Raises what ``catalog.query`` raises (``CatalogError``). Rows listed again by a later
    page (an import that finished while reading pushes the others down) count once.
    """
    if max_rows <= 0 or page_rows <= 0:
        raise ValueError(f"max_rows and page_rows must be positive: {max_rows}, {page_rows}")
    since = now - days * DAY
    seen: set[str] = set()
    records: list[ImportRecord] = []
    total = 0
    offset = 0
    while offset < max_rows:
        limit = min(page_rows, max_rows - offset)
        page, count = catalog.query(Query(since=since, finished=True, limit=limit, offset=offset))
        if offset == 0:
            total = count
        for record in page:
            if record.id not in seen:
                seen.add(record.id)
                records.append(record)
        offset += len(page)
        if len(page) < limit:
            break
    capped = offset >= max_rows and total > offset
    return WeekSummary(since, now, _by_type(records, since), offset, max(total, offset), capped)


def _by_type(records: Iterable[ImportRecord], since: float) -> tuple[TypeSummary, ...]:
    finished: dict[str, list[ImportRecord]] = {}
    for record in records:
        # The listing also holds imports retired without a final status (NOT_FOUND), by
        # when they were first seen: they never finished.
        if record.final and record.final_at is not None and record.final_at >= since:
            finished.setdefault(record.type, []).append(record)
    summaries = []
    for kind in sorted(finished):
        ended = finished[kind]
        durations = [d for d in (r.duration for r in ended) if d is not None]
        summaries.append(
            TypeSummary(
                kind,
                finished=len(ended),
                failed=sum(1 for r in ended if r.status in FAILED_STATUSES),
                median=statistics.median(durations) if durations else None,
            )
        )
    return tuple(summaries)
