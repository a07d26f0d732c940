"""The imports the exporter knows: registered, tracked, retired, and their history.

The store keeps every import across restarts; the poller keeps the live state. The
catalog joins them: it loads the store before the first round (first seen and status
survive, final imports are not asked again), takes registrations (committed before they
are answered), writes what each round changed, and retires imports that have been final,
or NOT_FOUND, for longer than the retention: their series leave the metrics, their
records stay in the store as history until the history period ends.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Literal, Protocol

from elevate_import_exporter.core.model import FINAL_STATUSES
from elevate_import_exporter.core.outcomes import Finish, Outcomes, changes
from elevate_import_exporter.core.records import (
    REGISTERED_SOURCES,
    IdRule,
    ImportRecord,
    Query,
    Registration,
)
from elevate_import_exporter.core.records import CatalogError as CatalogError
from elevate_import_exporter.core.state import ImportState, Snapshot, holds
from elevate_import_exporter.core.state import record_of as _record
from elevate_import_exporter.core.state import state_of as _state
from elevate_import_exporter.lifecycle.store import Store, StoreError
from elevate_import_exporter.polling.sources import MemoryIds, TrackedIds

log = logging.getLogger(__name__)

_EVERYTHING = Query()

DeleteOutcome = Literal["deleted", "unknown", "not_registered"]
# elevate_import_registrations_total{result}: created/existing count ids, the others requests.
REGISTRATION_RESULTS = ("created", "existing", "invalid", "disabled", "failed")
# elevate_import_retired_total{status}: why an import was retired.
RETIRED_STATUSES = (*sorted(FINAL_STATUSES), "NOT_FOUND")
# Purging the history is cheap but needs no haste: at start-up and then this often.
PURGE_EVERY = 3600.0


class LiveImports(Protocol):
    """What the catalog asks of the live state of the imports (:class:`~.poller.Poller`)."""

    def snapshot(self) -> Snapshot: ...

    def sync(self) -> None: ...

    def forget(self, ids: Iterable[str]) -> None: ...

    def restore(self, states: Iterable[ImportState]) -> None: ...


def registered_sources(records: Iterable[ImportRecord]) -> dict[str, MemoryIds]:
    """The id sources of registered imports (``api``, ``proxy``) as the store kept them."""
    live = [record for record in records if not record.retired]
    return {
        name: MemoryIds(name, (r.id for r in live if r.source == name))
        for name in REGISTERED_SOURCES
    }


def live_states(records: Iterable[ImportRecord]) -> list[ImportState]:
    """The live imports as the store kept them, for the poller to take up: first seen and
    status survive a restart, and a final status is not asked again."""
    return [_state(record) for record in records if not record.retired]


class Catalog:
    """Every import the exporter knows of.

    With ``ids`` (every source, these ``sources`` of registered ids among them) and
    ``live`` (the poller that asks about them), it keeps their state in the store and
    retires from them; without, it only registers and lists (tests, a bare site).
    """

    def __init__(
        self,
        store: Store,
        records: Iterable[ImportRecord],
        *,
        retention: float,
        history: float,
        max_registered: int,
        clock: Callable[[], float] = time.time,
        sources: Mapping[str, MemoryIds] | None = None,
        ids: TrackedIds | None = None,
        live: LiveImports | None = None,
        outcomes: Outcomes | None = None,
    ) -> None:
        self._store = store
        # The aggregates; their kept last-final times are read once, here.
        self.outcomes = outcomes or Outcomes()
        self.outcomes.restore(store.last_finals())
        self._retention = retention
        self._history = history
        self._max_registered = max_registered
        self._clock = clock
        self._lock = threading.RLock()
        self._live: dict[str, ImportRecord] = {}
        self._retired: set[str] = set()
        for record in records:
            if record.retired:
                self._retired.add(record.id)
            else:
                self._live[record.id] = record
                self.outcomes.track(record.id, _answered_type(record), record.labels)
        self.sources = dict(sources or registered_sources(self._live.values()))
        self._registrations: Counter[str] = Counter()
        self._retired_counts: Counter[str] = Counter()
        self._poller = live
        self._ids = ids
        self._seen_imports: object = None
        self._purged_at: float | None = None
        # Replaced (compared by identity) whenever a counter or the set of imports changes.
        self.version: object = object()
        if ids is not None:  # retired ids stay out, whatever source still lists them
            ids.exclude(frozenset(self._retired))
        if live is not None:
            live.sync()

    @classmethod
    def load(
        cls,
        store: Store,
        *,
        retention: float,
        history: float,
        max_registered: int,
        clock: Callable[[], float] = time.time,
        id_rule: IdRule | None = None,  # model.id_rule of the API: a row of another id is skipped
        outcomes: Outcomes | None = None,
    ) -> Catalog:
        return cls(
            store,
            store.load(id_rule),
            retention=retention,
            history=history,
            max_registered=max_registered,
            clock=clock,
            outcomes=outcomes,
        )

    @property
    def skipped_rows(self) -> int:
        """Damaged rows of the store that were skipped at load and stay in it untouched."""
        return len(self._store.skipped)

    @property
    def retired_ids(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._retired)

    # -- registration -------------------------------------------------------------------

    def register(self, registrations: Sequence[Registration], source: str) -> list[bool]:
        """Track each id, committed to the store before this returns; True where it was new.

        A known id (live or retired) is left as it is: registering it again is not an error.
        ``source`` is ``api`` or ``proxy``. Raises :class:`CatalogError`, registering none,
        if the store cannot take them, an id's stored row is damaged, or an id would not be
        polled: --imports.max-tracked is one budget for every source (TrackedIds).
        """
        if source not in self.sources:
            raise ValueError(f"not a source of registrations: {source!r}")
        with self._lock:
            now = self._clock()
            records = [
                ImportRecord(
                    r.id,
                    source,
                    first_seen=now,
                    type=r.type,
                    labels=r.labels,
                    # A clock a little ahead of ours (validated within an allowance) must not
                    # start an import after it was first seen.
                    started_at=None if r.accepted_at is None else min(r.accepted_at, now),
                )
                for r in registrations
            ]
            # Before following, the registrations alone are known to count.
            ids = self._ids or TrackedIds(tuple(self.sources.values()), self._max_registered)
            problem = ids.no_room_for({r.id for r in records} - self._retired)
            if problem is not None:
                raise CatalogError(f"{problem}; nothing was registered")
            try:
                created = self._store.register(records)
            except StoreError as error:
                log.warning("registration not stored: %s", error)
                raise CatalogError(f"the store could not take it: {error.problem}") from error
            new = [record for record, made in zip(records, created, strict=True) if made]
            back = {record.id for record in new} & self._retired  # purged, then registered
            for record in new:
                self._live[record.id] = record
                self.outcomes.track(record.id, "", record.labels)  # the type Elevate's, later
            if back and self._ids is not None:
                self._retired -= back
                self._ids.exclude(frozenset(self._retired))
            if self._poller is not None:
                self._poller.restore(_state(record) for record in new)
            for record in new:
                self.sources[source].add(record.id)
            self._registrations["created"] += len(new)
            self._registrations["existing"] += len(records) - len(new)
            self.version = object()
        return created

    def count(self, result: str) -> None:
        """Count a registration request that did not get to :meth:`register`."""
        if result not in REGISTRATION_RESULTS:
            raise ValueError(f"not a registration result: {result!r}")
        with self._lock:
            self._registrations[result] += 1
            self.version = object()

    @property
    def registrations(self) -> Mapping[str, int]:
        """elevate_import_registrations_total by result, every result present."""
        with self._lock:
            return {result: self._registrations[result] for result in REGISTRATION_RESULTS}

    @property
    def retired_counts(self) -> Mapping[str, int]:
        """elevate_import_retired_total by the status an import was retired with."""
        with self._lock:
            return {status: self._retired_counts[status] for status in RETIRED_STATUSES}

    # -- reading --------------------------------------------------------------------------

    def get(self, import_id: str) -> ImportRecord | None:
        """The record of ``import_id``, live or retired; None if unknown."""
        with self._lock, _reading():
            return self._store.get(import_id)

    def query(self, query: Query = _EVERYTHING) -> tuple[list[ImportRecord], int]:
        """A page of the records ``query`` asks for, and how many match in all."""
        with self._lock, _reading():
            return self._store.query(query)

    def delete(self, import_id: str) -> DeleteOutcome:
        """Forget a registered id (source api or proxy) with its history.

        ``unknown``: no such id. ``not_registered``: it comes from a flag or the ids file,
        where it must be removed; nothing changes.
        """
        with self._lock, _reading():
            known = import_id in self._live or self._store.get(import_id) is not None
            if not known:
                return "unknown"
            if self._given_by_operator(import_id):
                return "not_registered"
            try:
                self._store.delete(import_id)
            except StoreError as error:
                raise CatalogError(f"the store could not take it: {error.problem}") from error
            self._live.pop(import_id, None)
            self._retired.discard(import_id)
            for source in self.sources.values():
                source.remove(import_id)
            self.outcomes.forget([import_id])
            self.version = object()
        if self._poller is not None:
            self._poller.sync()
            self._poller.forget([import_id])
        return "deleted"

    def _given_by_operator(self, import_id: str) -> bool:
        if self._ids is None:
            return False
        return any(
            import_id in source.current()
            for source in self._ids.sources
            if source.name not in REGISTERED_SOURCES
        )

    # -- after each round -------------------------------------------------------------------

    def after_poll(self) -> None:
        """Write what the last round changed, retire what is due, purge old history."""
        poller, ids = self._poller, self._ids
        if poller is None or ids is None:
            return
        imports = poller.snapshot().imports
        retired: list[str] = []
        with self._lock:
            if imports is not self._seen_imports:
                self._save_changes(imports, ids)
                retired = self._retire(self._due(imports, self._clock()), ids)
                self.outcomes.prune(imports, self._live)
                self._seen_imports = imports
            self._purge_if_due(ids)
        if retired:  # their series leave now, not at the next round
            poller.sync()
            poller.forget(retired)

    def _save_changes(self, imports: Mapping[str, ImportState], ids: TrackedIds) -> None:
        owners = ids.owners()
        changed: list[ImportRecord] = []
        for import_id, state in imports.items():
            source = owners.get(import_id, "flag")
            known = self._live.get(import_id)
            if not holds(known, state, source):
                changed.append(_record(state, source, known))
        if not changed:
            return
        outcomes = self.outcomes
        events = [(r, *changes(self._live.get(r.id), r)) for r in changed]
        # The last-final times go in the same transaction as the records that end: a
        # restart finds both or neither, so nothing is counted twice or lost.
        finals = [outcomes.kept_row(r.id, finish) for r, _q, finish in events if finish]
        try:
            self._store.save(changed, finals)
        except StoreError as error:
            # Kept in memory; the next round tries again (and counts then).
            log.warning("could not write %d changed imports to the store: %s", len(changed), error)
            return
        for record, queue, finish in events:
            self._live[record.id] = record
            outcomes.track(record.id, _answered_type(record), record.labels)
            if queue is not None:
                outcomes.left_queue(record.id, queue)
            if finish is not None:
                outcomes.finished(record.id, finish)

    def _due(self, imports: Mapping[str, ImportState], now: float) -> dict[str, str]:
        """Ids to retire, with the status they leave with."""
        due: dict[str, str] = {}
        for import_id, state in imports.items():
            info, since = state.info, state.status_since
            if info is None or since is None or now - since < self._retention:
                continue
            if info.final or info.status == "NOT_FOUND":
                due[import_id] = info.status
        return due

    def _retire(self, due: Mapping[str, str], ids: TrackedIds) -> list[str]:
        if not due:
            return []
        now = self._clock()
        outcomes = self.outcomes
        # NOT_FOUND is an end too, counted as it is retired; final ones were counted as
        # they ended.
        lost = {
            import_id: Finish(record.type, status, record.labels, now)
            for import_id, status in due.items()
            if status == "NOT_FOUND" and (record := self._live.get(import_id)) is not None
        }
        finals = [outcomes.kept_row(import_id, finish) for import_id, finish in lost.items()]
        try:
            self._store.retire(dict.fromkeys(due, now), finals)
        except StoreError as error:
            log.warning("could not retire %d imports in the store: %s", len(due), error)
            return []
        for import_id, status in due.items():
            self._retired.add(import_id)
            self._retired_counts[status] += 1
            self._live.pop(import_id, None)
            for source in self.sources.values():
                source.remove(import_id)
            log.info("import id=%s retired with status %s", import_id, status)
        for import_id, finish in lost.items():
            outcomes.finished(import_id, finish)
        outcomes.forget(due)
        ids.exclude(frozenset(self._retired))
        self.version = object()
        return list(due)

    def _purge_if_due(self, ids: TrackedIds) -> None:
        now = self._clock()
        if self._purged_at is not None and 0 <= now - self._purged_at < PURGE_EVERY:
            return
        self._purged_at = now
        # Ids still listed by the operator keep their record, so they stay retired
        # instead of coming back as new when their history ends.
        keep = {
            import_id
            for source in ids.sources
            if source.name not in REGISTERED_SOURCES
            for import_id in source.current()
        }
        try:
            purged = self._store.purge(now - self._history, keep)
        except StoreError as error:
            log.warning("could not purge the store's history: %s", error)
            return
        if purged:
            log.info("purged %d retired imports older than the history period", purged)
            # Only to free memory: a purged id registered again is new anyway.
            still, _total = self._store.query(Query(retired=True, limit=len(self._retired)))
            self._retired = {record.id for record in still}


def _answered_type(record: ImportRecord) -> str:
    """The type as Elevate answers it; "" until it has: a type given at registration may be
    spelt otherwise, and its series at 0 would stay for good."""
    return record.type if record.status is not None else ""


@contextlib.contextmanager
def _reading() -> Iterator[None]:
    try:
        yield
    except StoreError as error:
        raise CatalogError(f"the store could not be read: {error.problem}") from error
