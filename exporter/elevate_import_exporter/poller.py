"""Poll rounds and the state they leave: what the exporter knows about each import.

One round per scrape, but none sooner than the minimum interval after the last one
ended. Scrapes that arrive while a round runs wait for it and share its result, so
concurrent scrapes never multiply the requests sent to Elevate; nor do ids that
Elevate asked to wait for (``Retry-After``, see :mod:`holds`). An id that leaves its
source keeps its state for ``forget_after`` seconds and comes back as it was.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, wait
from dataclasses import dataclass, field, replace
from typing import Protocol

from elevate_import_exporter.holds import Holds
from elevate_import_exporter.model import ApiError, ImportInfo, QueryError
from elevate_import_exporter.sources import TrackedIds
from elevate_import_exporter.state import ImportState as ImportState
from elevate_import_exporter.state import RoundResult as RoundResult
from elevate_import_exporter.state import Snapshot as Snapshot
from elevate_import_exporter.workers import Workers

log = logging.getLogger(__name__)

# Enough warning lines to see what goes wrong without flooding the log when a
# whole cluster fails for thousands of ids.
_WARNINGS_PER_ROUND = 20
# An ids file rewritten in place is briefly empty; a quarter of an hour covers any
# such moment (and an edit by hand) without keeping departed ids for long.
FORGET_AFTER = 15 * 60.0
# Bounds the memory held for departed ids, whatever leaves at once.
MAX_DEPARTED = 100_000
# The RoundResult.failures key of ids not asked because Elevate asked to wait.
HELD = "retry_after"
# With nothing to ask, one request for an id that cannot exist tells whether key and
# cluster still work (a valid key gets 200 NOT_FOUND); no more often than this.
PROBE_EVERY = 5 * 60.0
# Real ids are long numbers or uuid-like strings; "0" is never one, and it passes the
# id rule of every flavour.
PROBE_ID = "0"


class StatusQuery(Protocol):
    """What the poller needs of an API flavour: one import's status, by a deadline."""

    def import_status(
        self, import_id: str, deadline: float, stop: threading.Event
    ) -> ImportInfo: ...

    def close(self) -> None: ...


@dataclass
class _Round:
    done: threading.Event = field(default_factory=threading.Event)


class Poller:
    """Rounds of status queries for the tracked ids, and the state they leave.

    ``min_interval``: seconds after a round ended during which a poll asks nothing.
    ``forget_after``: seconds an id that left its source keeps its state (0: none).
    An id held back by a ``Retry-After`` counts as without a fresh answer: its
    ``poll_success`` is 0 and the round is not up.
    """

    def __init__(
        self,
        api: StatusQuery,
        ids: TrackedIds,
        *,
        concurrency: int,
        min_interval: float = 0.0,
        forget_after: float = FORGET_AFTER,
        clock: Callable[[], float] = time.time,
        probe_id: str | None = None,
        probe_every: float = PROBE_EVERY,
        restored: Iterable[ImportState] = (),
    ) -> None:
        self._api = api
        self._ids = ids
        self._min_interval = min_interval
        self._forget_after = forget_after
        self._clock = clock
        self._holds = Holds()
        self._workers = Workers(concurrency)
        self._lock = threading.Lock()
        self._running: _Round | None = None
        # Replaced, never mutated, so a snapshot is a reference taken under the lock.
        self._imports: Mapping[str, ImportState] = {}
        # Ids that left their source: state and when (monotonic) they left, oldest first.
        self._departed: dict[str, tuple[ImportState, float]] = {}
        # States kept elsewhere (the store, a registration) for ids not tracked yet.
        self._restored: dict[str, ImportState] = {state.id: state for state in restored}
        self._probe_id = probe_id
        self._probe_every = probe_every
        self._probed_at: float | None = None  # monotonic
        self._probe_up = True
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

    def restore(self, states: Iterable[ImportState]) -> None:
        """Take up these states when their ids appear in a source (now or later): first
        seen and status survive a restart, and a final status is not asked again."""
        with self._lock:
            for state in states:
                self._restored[state.id] = state
                self._departed.pop(state.id, None)

    def forget(self, ids: Iterable[str]) -> None:
        """Drop all that is kept of ``ids`` once they leave their sources (retired or
        deleted): should they come back, they start anew."""
        with self._lock:
            for import_id in ids:
                self._restored.pop(import_id, None)
                self._departed.pop(import_id, None)

    def sync(self) -> None:
        """Follow the sources now, between rounds: ids that left leave the state at once."""
        self._sync_ids()

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
        """Follow the tracked ids; returns those not final, to be asked in a round.

        New ids start now; an id that comes back within ``forget_after`` is restored
        as it left (first seen, status, a final status stays final).
        """
        ids = self._ids.current()
        with self._lock:
            known = self._imports
            self._forget_departed(time.monotonic())
            if len(ids) != len(known) or not all(i in known for i in ids):
                known = self._imports = self._follow(ids, known)
        return [i for i in ids if not known[i].final]

    def _follow(
        self, ids: tuple[str, ...], known: Mapping[str, ImportState]
    ) -> dict[str, ImportState]:
        # Called with the lock held: a round's answers must not land in between.
        now, left_at = self._clock(), time.monotonic()
        departed = self._departed
        imports: dict[str, ImportState] = {}
        for import_id in ids:
            state = known.get(import_id)
            if state is None:
                kept = departed.pop(import_id, None)
                restored = self._restored.pop(import_id, None)
                state = kept[0] if kept else restored or ImportState(import_id, first_seen=now)
            imports[import_id] = state
        if self._forget_after > 0:
            for import_id, state in known.items():
                if import_id not in imports:
                    departed[import_id] = (state, left_at)
            while len(departed) > MAX_DEPARTED:
                del departed[next(iter(departed))]
        return imports

    def _forget_departed(self, now: float) -> None:
        departed = self._departed
        # Oldest first, so the first one still within its grace ends the sweep.
        while departed:
            oldest = next(iter(departed))
            if departed[oldest][1] > now - self._forget_after:
                return
            del departed[oldest]

    def _run(self, deadline: float) -> None:
        started = time.monotonic()
        pending = self._sync_ids()
        held = self._holds.held(pending)
        asked = [i for i in pending if i not in held]
        stop = threading.Event()
        futures: dict[Future[ImportInfo], str] = {
            self._workers.submit(self._query, import_id, deadline, stop): import_id
            for import_id in asked
        }
        done, _late = wait(futures, timeout=max(0.0, deadline - time.monotonic()))
        # Stragglers give up instead of retrying after the round has ended.
        stop.set()
        answers: dict[str, ImportInfo | None] = dict.fromkeys(asked)
        failures = _collect(futures, done, answers)
        if held:
            failures[HELD] = len(held)
        _log_round(failures, len(pending))
        self._apply(answers, held)
        # Ids that left while the round ran leave now, not one scrape later.
        self._sync_ids()
        # Held ids were not queried: the contract's up is about the ids a round asked.
        up = not any(reason != HELD for reason in failures)
        if not pending:
            up = self._probe(deadline)
        result = RoundResult(
            up=up,
            seconds=time.monotonic() - started,
            queried=len(asked),
            ended=self._clock(),
            failures=dict(failures),
        )
        with self._lock:
            self._last_round = result

    def _probe(self, deadline: float) -> bool:
        """The verdict of the latest probe, asking anew when one is due."""
        probe_id, now = self._probe_id, time.monotonic()
        due = self._probed_at is None or now - self._probed_at >= self._probe_every
        if probe_id is None or not due or self._holds.held([probe_id]):
            return self._probe_up
        try:
            self._api.import_status(probe_id, deadline, threading.Event())
        except ApiError as error:
            self._holds.note(probe_id, error)
            log.warning(
                "probe request (no import to poll) failed: reason=%s code=%s: %s",
                error.reason,
                error.code,
                error.detail,
            )
            self._probe_up = False
        except QueryError:  # not sent: the round's time was up; the last verdict stands
            return self._probe_up
        else:
            self._probe_up = True
        self._probed_at = now
        return self._probe_up

    def _query(self, import_id: str, deadline: float, stop: threading.Event) -> ImportInfo:
        try:
            return self._api.import_status(import_id, deadline, stop)
        except ApiError as error:
            # A 403/404, or a busy cluster asking to wait: no other id can do better now.
            if self._holds.note(import_id, error) or error.concerns_whole_key:
                stop.set()
            raise

    def _apply(self, answers: Mapping[str, ImportInfo | None], held: set[str]) -> None:
        now = self._clock()
        with self._lock:
            imports = dict(self._imports)
            for import_id in held:
                # Not asked, so not fresh; last_polled still says when it last was.
                if (state := imports.get(import_id)) is not None:
                    imports[import_id] = replace(state, poll_success=False)
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


def _collect(
    futures: Mapping[Future[ImportInfo], str],
    done: set[Future[ImportInfo]],
    answers: dict[str, ImportInfo | None],
) -> Counter[str]:
    """Fill ``answers`` from the queries that ended; the ids without one, by why."""
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
    missing = len(futures) - len(done)
    if missing:
        failures["deadline"] += missing
    return failures


def _log_round(failures: Counter[str], pending: int) -> None:
    if not failures:
        return
    # Ids held back are announced when the hold begins; a round that only waits is no news.
    level = logging.DEBUG if set(failures) == {HELD} else logging.WARNING
    log.log(
        level,
        "poll round: %d of %d ids without a fresh answer (%s)",
        sum(failures.values()),
        pending,
        ", ".join(f"{k}={v}" for k, v in sorted(failures.items())),
    )
