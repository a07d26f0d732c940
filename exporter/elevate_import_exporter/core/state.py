"""What the exporter knows of each import after a poll round, and of the round itself.

Immutable values: the poller replaces them, never changes them, so whoever holds one
(a scrape, the landing page, the store) holds a consistent picture.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from elevate_import_exporter.core.model import ImportInfo
from elevate_import_exporter.core.outcomes import left_queue_at
from elevate_import_exporter.core.records import ImportRecord


@dataclass(frozen=True, slots=True)
class ImportState:
    id: str
    first_seen: float
    info: ImportInfo | None = None
    status_since: float | None = None
    poll_success: bool = False
    # When the latest answer (good or not) for the id came in; None: never asked.
    last_polled: float | None = None
    # Why the latest round got no valid answer for the id (an error reason, "deadline",
    # "not_sent" or "retry_after"); None while poll_success holds.
    failure: str | None = None

    @property
    def final(self) -> bool:
        return self.info is not None and self.info.final


@dataclass(frozen=True, slots=True)
class RoundResult:
    up: bool
    seconds: float
    queried: int
    ended: float  # wall-clock time, as the poller's clock tells it
    failures: Mapping[str, int] = field(default_factory=dict)  # ids without an answer, by why
    # Elevate gave at least one valid answer (or, with nothing to ask, the probe did): what
    # "the API is unreachable" alerts on, so that one silent id cannot look like an outage.
    reachable: bool = True


@dataclass(frozen=True)
class Snapshot:
    imports: Mapping[str, ImportState]
    last_round: RoundResult | None


def state_of(record: ImportRecord) -> ImportState:
    """The live state of an import as the store kept it."""
    info = None
    if record.status is not None:
        info = ImportInfo(record.id, record.status, record.type, record.message)
    return ImportState(
        record.id,
        first_seen=record.first_seen,
        info=info,
        status_since=record.status_since,
        # A final status held from earlier counts as a good answer, as after a round.
        poll_success=info is not None and info.final,
        last_polled=record.last_answer,
    )


def record_of(state: ImportState, source: str, known: ImportRecord | None) -> ImportRecord:
    """The record to keep of a live state; type and labels as registered until answered,
    start as registered, and the first poll that saw it past the queue."""
    info = state.info
    final_at = state.status_since if info is not None and info.final else None
    status = info.status if info is not None else None
    return ImportRecord(
        state.id,
        source=source,
        first_seen=state.first_seen,
        type=info.type if info is not None else (known.type if known else ""),
        labels=known.labels if known else (),
        status=info.status if info is not None else None,
        message=info.message if info is not None else "",
        status_since=state.status_since,
        last_answer=state.last_polled,
        final_at=final_at,
        started_at=known.started_at if known else None,
        left_queue_at=left_queue_at(known, status, state.status_since),
    )


def holds(record: ImportRecord | None, state: ImportState, source: str) -> bool:
    """Whether ``record`` keeps what matters of ``state`` already (no write needed): its
    source, first seen, status since, and the last answer's status, type and message."""
    if record is None or (record.source, record.first_seen, record.status_since) != (
        source,
        state.first_seen,
        state.status_since,
    ):
        return False
    info = state.info
    if info is None:
        return record.status is None
    return (record.status, record.type, record.message) == (info.status, info.type, info.message)
