"""Poll rounds and the state they leave: what the exporter knows about each import.

One round per scrape. Scrapes that arrive while a round runs wait for it and share
its result, so concurrent scrapes never multiply the requests sent to Elevate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Future, wait
from dataclasses import dataclass, field, replace
from typing import Protocol

from elevate_import_exporter.model import ApiError, ImportInfo, QueryError
from elevate_import_exporter.sources import TrackedIds
from elevate_import_exporter.workers import Workers

log = logging.getLogger(__name__)

# Enough warning lines to see what goes wrong without flooding the log when a
# whole cluster fails for thousands of ids.
_WARNINGS_PER_ROUND = 20


class StatusQuery(Protocol):
    """What the poller needs of an API flavour: one import's status, by a deadline."""

    def import_status(
        self, import_id: str, deadline: float, stop: threading.Event
    ) -> ImportInfo: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ImportState:
    id: str
    first_seen: float
    info: ImportInfo | None = None
    status_since: float | None = None
    poll_success: bool = False
    # When the latest answer (good or not) for the id came in; None: never asked.
    last_polled: float | None = None

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


@dataclass(frozen=True)
class Snapshot:
    imports: Mapping[str, ImportState]
    last_round: RoundResult | None


@dataclass
class _Round:
    done: threading.Event = field(default_factory=threading.Event)


class Poller:
    def __init__(
        self,
        api: StatusQuery,
        ids: TrackedIds,
        *,
        concurrency: int,
        min_interval: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._api = api
        self._ids = ids
        self._min_interval = min_interval
        self._clock = clock
        self._workers = Workers(concurrency)
        self._lock = threading.Lock()
        self._running: _Round | None = None
        # Replaced, never mutated, so a snapshot is a reference taken under the lock.
        self._imports: Mapping[str, ImportState] = {}
        self._last_round: RoundResult | None = None
        self._last_end: float | None = None  # monotonic
        self._sync_ids()

    def close(self) -> None:
        self._workers.stop()
        self._api.close()

    def snapshot(self) -> Snapshot:
        with self._lock:
            imports, last_round = self._imports, self._last_round
        return Snapshot(imports, last_round)

    def poll(self, budget: float) -> None:
        """Run a round that ends within ``budget`` seconds, or wait for the one running.

        Within the minimum interval after the last round ended, nothing is asked:
        the state of that round stands, so that whoever can reach the port cannot
        multiply the load on Elevate.
        """
        deadline = time.monotonic() + budget
        with self._lock:
            running = self._running
            recent = self._last_end is not None and (
                time.monotonic() - self._last_end < self._min_interval
            )
            if running is None and not recent:
                mine = self._running = _Round()
        if running is not None:
            running.done.wait(max(0.0, deadline - time.monotonic()))
            return
        if recent:
            # Ids that left their source leave at once, even between rounds.
            self._sync_ids()
            return
        try:
            self._run(deadline)
        finally:
            with self._lock:
                self._running = None
                self._last_end = time.monotonic()
            mine.done.set()

    def _sync_ids(self) -> list[str]:
        """Follow the tracked ids: new ids start now, removed ids are forgotten."""
        ids = self._ids.current()
        with self._lock:
            known = self._imports
        if len(ids) == len(known) and all(i in known for i in ids):
            return [i for i in ids if not known[i].final]
        now = self._clock()
        imports = {i: known.get(i) or ImportState(i, first_seen=now) for i in ids}
        with self._lock:
            self._imports = imports
        return [i for i in ids if not imports[i].final]

    def _run(self, deadline: float) -> None:
        started = time.monotonic()
        pending = self._sync_ids()
        stop = threading.Event()
        futures: dict[Future[ImportInfo], str] = {
            self._workers.submit(self._query, import_id, deadline, stop): import_id
            for import_id in pending
        }
        done, _late = wait(futures, timeout=max(0.0, deadline - time.monotonic()))
        # Stragglers give up instead of retrying after the round has ended.
        stop.set()
        answers: dict[str, ImportInfo | None] = dict.fromkeys(pending)
        failures: Counter[str] = Counter()
        warned = 0
        for future in done:
            import_id = futures[future]
            error = future.exception()
            if error is None:
                answers[import_id] = future.result()
                continue
            reason = error.reason if isinstance(error, ApiError) else "not_sent"
            failures[reason] += 1
            if isinstance(error, ApiError) and warned < _WARNINGS_PER_ROUND:
                warned += 1
                log.warning(
                    "status query failed for id=%s reason=%s code=%s: %s",
                    import_id,
                    error.reason,
                    error.code,
                    error.detail,
                )
            elif not isinstance(error, QueryError):
                log.error("status query crashed for id=%s", import_id, exc_info=error)
        missing = len(pending) - len(done)
        if missing:
            failures["deadline"] += missing
        if failures:
            log.warning(
                "poll round: %d of %d ids without a fresh answer (%s)",
                sum(failures.values()),
                len(pending),
                ", ".join(f"{k}={v}" for k, v in sorted(failures.items())),
            )
        self._apply(answers)
        result = RoundResult(
            up=not failures,
            seconds=time.monotonic() - started,
            queried=len(pending),
            ended=self._clock(),
            failures=dict(failures),
        )
        with self._lock:
            self._last_round = result

    def _query(self, import_id: str, deadline: float, stop: threading.Event) -> ImportInfo:
        try:
            return self._api.import_status(import_id, deadline, stop)
        except ApiError as error:
            if error.concerns_whole_key:
                stop.set()
            raise

    def _apply(self, answers: Mapping[str, ImportInfo | None]) -> None:
        now = self._clock()
        with self._lock:
            imports = dict(self._imports)
            for import_id, info in answers.items():
                state = imports.get(import_id)
                if state is None:  # removed from the ids file while the round ran
                    continue
                if info is None:
                    imports[import_id] = replace(state, poll_success=False, last_polled=now)
                    continue
                changed = state.info is None or state.info.status != info.status
                if changed and state.info is not None:
                    log.info(
                        "import id=%s type=%s status %s -> %s",
                        import_id,
                        info.type,
                        state.info.status,
                        info.status,
                    )
                imports[import_id] = replace(
                    state,
                    info=info,
                    status_since=now if changed else state.status_since,
                    poll_success=True,
                    last_polled=now,
                )
            self._imports = imports
