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
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import wait
from dataclasses import replace
from typing import Protocol

from elevate_import_exporter.core.model import WHOLE_KEY_HINTS, ApiError, ImportInfo, QueryError
from elevate_import_exporter.core.state import ImportState as ImportState
from elevate_import_exporter.core.state import RoundResult as RoundResult
from elevate_import_exporter.core.state import Snapshot as Snapshot
from elevate_import_exporter.core.workers import Workers
from elevate_import_exporter.elevate.holds import Holds
from elevate_import_exporter.polling.sources import TrackedIds

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
# Why an id got no answer when Elevate gave no error for it: not answered by the round's
# deadline; not asked after an answer that concerns every id; a bug.
DEADLINE, NOT_SENT, CRASHED = "deadline", "not_sent", "crashed"
# Every reason of a round beside Elevate's error reasons (model.ERROR_REASONS).
ROUND_REASONS = (DEADLINE, NOT_SENT, HELD, CRASHED)
_NONE_LATE: Mapping[str, str] = {}
# With nothing to ask, one request for an id that cannot exist tells whether key and
# cluster still work (a valid key gets 200 NOT_FOUND); no more often than this.
PROBE_EVERY = 5 * 60.0
# When no query of a round gets a valid answer, a probe tells an outage from ids that
# fail on their own, no more often than this.
REACHABILITY_PROBE_EVERY = 60.0
# Real ids are long numbers or uuid-like strings; "0" is never one, and it passes the
# id rule of every flavour.
PROBE_ID = "0"


class StatusQuery(Protocol):
    """What the poller needs of an API flavour: one import's status, by a deadline."""

    def import_status(
        self, import_id: str, deadline: float, stop: threading.Event
    ) -> ImportInfo: ...

    def close(self) -> None: ...


Arrival = tuple[str, ImportInfo | None, BaseException | None]


class _Round:
    """A round in flight: the ids still to ask, and answers that arrived but are not applied.

    Worker lanes take ids one at a time until the deadline or a stop, so no work is queued
    that the round could not finish; answers are applied when somebody looks (a snapshot)
    or when the round ends, and none that arrives after the end.
    """

    def __init__(self) -> None:
        self.done = threading.Event()
        self.stop = threading.Event()
        self.deadline = 0.0
        self._lock = threading.Lock()
        self._todo: Iterator[str] = iter(())
        self._asking: set[str] = set()
        self._arrived: list[Arrival] = []
        self._closed = False
        # Applied so far: ids with a valid answer, ids without one by why, warnings written.
        self.answered = 0
        self.failures: Counter[str] = Counter()
        self.warned = 0
        self.whole_key_warned: set[str] = set()
        # Elevate answered with a Retry-After: alive, but asking to wait.
        self.told_to_wait = False

    def begin(self, ids: list[str], deadline: float) -> None:
        with self._lock:
            self._todo, self.deadline = iter(ids), deadline

    def next_id(self) -> str | None:
        with self._lock:
            if self._closed or self.stop.is_set() or time.monotonic() >= self.deadline:
                return None
            import_id = next(self._todo, None)
            if import_id is not None:
                self._asking.add(import_id)
            return import_id

    def arrive(self, import_id: str, info: ImportInfo | None, error: BaseException | None) -> None:
        with self._lock:
            self._asking.discard(import_id)
            if not self._closed:
                self._arrived.append((import_id, info, error))

    def take(self) -> list[Arrival]:
        with self._lock:
            arrived, self._arrived = self._arrived, []
            return arrived

    def close(self) -> tuple[list[Arrival], list[str], list[str]]:
        """End the round: the answers to apply, ids asked but not answered, ids never asked."""
        with self._lock:
            self._closed = True
            arrived, self._arrived = self._arrived, []
            return arrived, sorted(self._asking), list(self._todo)


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
        self._size = concurrency
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
        # The round in which each id was last asked, whatever came of it; rounds so far.
        self._last_asked: dict[str, int] = {}
        self._rounds = 0
        self._sync_ids()

    def close(self) -> None:
        self._workers.stop()
        self._api.close()

    def snapshot(self) -> Snapshot:
        """What is known now, answers of a round still running included."""
        running = self._running
        if running is not None:
            self._apply(running, running.take())
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
            self._run(deadline, mine)
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

    def _run(self, deadline: float, mine: _Round) -> None:
        started = time.monotonic()
        pending = self._sync_ids()
        held = self._holds.held(pending)
        # Ids asked longest ago first: when the deadline cuts a round short, the next round
        # begins with those it left out (and an id that hung goes after the others).
        last = self._last_asked
        asked = sorted((i for i in pending if i not in held), key=lambda i: last.get(i, -1))
        mine.begin(asked, deadline)
        lanes = [self._workers.submit(self._lane, mine) for _ in range(min(len(asked), self._size))]
        wait(lanes, timeout=max(0.0, deadline - time.monotonic()))
        # A 403, a 404 or a Retry-After stopped the round before its deadline.
        stopped = mine.stop.is_set()
        # Stragglers give up instead of retrying after the round has ended.
        mine.stop.set()
        arrived, unanswered, never_asked = mine.close()
        # Lanes take ids in order: those asked are the ones before the never asked.
        sent = asked[: len(asked) - len(never_asked)]
        self._note_asked(sent)
        late = dict.fromkeys(unanswered, DEADLINE)
        late.update(dict.fromkeys(never_asked, NOT_SENT if stopped else DEADLINE))
        late.update(dict.fromkeys(held, HELD))
        # Always a new mapping, even if nothing changed: readers (the catalog's retirement,
        # the shared rendering) take a new mapping for a new round.
        self._apply(mine, arrived, late, publish=True)
        failures = mine.failures + Counter(late.values())
        _log_round(failures, len(pending))
        # Ids that left while the round ran leave now, not one scrape later.
        self._sync_ids()
        # Held ids were not queried: the contract's up is about the ids a round asked.
        up = not any(reason != HELD for reason in failures)
        if not pending:
            up = reachable = self._probe(deadline, self._probe_every)
        elif mine.answered or mine.told_to_wait:
            reachable = True  # a Retry-After is an answer too: Elevate is there, and busy
        elif mine.whole_key_warned:
            reachable = False  # a 403 or a 404: Elevate refuses every id
        elif sent:
            # Every query failed: Elevate, or only these ids? An id that cannot exist tells.
            reachable = self._probe(deadline, min(self._probe_every, REACHABILITY_PROBE_EVERY))
        else:  # nothing was sent (all held): the last verdict stands
            reachable = self._last_round.reachable if self._last_round is not None else True
        result = RoundResult(
            up=up,
            seconds=time.monotonic() - started,
            queried=len(sent),
            ended=self._clock(),
            failures=dict(failures),
            reachable=reachable,
        )
        with self._lock:
            self._last_round = result

    def _note_asked(self, asked: list[str]) -> None:
        self._rounds += 1
        last = self._last_asked
        for import_id in asked:
            last[import_id] = self._rounds
        if len(last) > 2 * len(self._imports) + 1000:  # ids that left: bounded, amortised
            self._last_asked = {i: n for i, n in last.items() if i in self._imports}

    def _lane(self, mine: _Round) -> None:
        """Ask ids of the round one at a time until none is left, the deadline or a stop."""
        while (import_id := mine.next_id()) is not None:
            try:
                info = self._query(import_id, mine)
            except Exception as error:  # every kind is counted and logged where applied
                mine.arrive(import_id, None, error)
            else:
                mine.arrive(import_id, info, None)

    def _probe(self, deadline: float, every: float) -> bool:
        """The verdict of the latest probe, asking anew when ``every`` seconds have passed."""
        probe_id, now = self._probe_id, time.monotonic()
        due = self._probed_at is None or now - self._probed_at >= every
        if probe_id is None or not due or self._holds.held([probe_id]):
            return self._probe_up
        try:
            self._api.import_status(probe_id, deadline, threading.Event())
        except ApiError as error:
            self._holds.note(probe_id, error)
            log.warning(
                "probe request (id %s, which cannot exist: does Elevate answer at all?) failed: "
                "reason=%s code=%s: %s",
                probe_id,
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

    def _query(self, import_id: str, mine: _Round) -> ImportInfo:
        try:
            return self._api.import_status(import_id, mine.deadline, mine.stop)
        except ApiError as error:
            # A 403/404, or a busy cluster asking to wait: no other id can do better now.
            if self._holds.note(import_id, error):
                mine.told_to_wait = True
                mine.stop.set()
            elif error.concerns_whole_key:
                mine.stop.set()
            raise

    def _apply(
        self,
        mine: _Round,
        arrived: list[Arrival],
        late: Mapping[str, str] = _NONE_LATE,
        *,
        publish: bool = False,
    ) -> None:
        """Take answers of ``mine`` into the state, and count and log those that failed;
        mark the ``late`` ids (no answer, by why) as without one: ``last_polled`` still says
        when an answer last came."""
        if not arrived and not late and not publish:
            return
        now = self._clock()
        with self._lock:
            imports = dict(self._imports)
            for import_id, info, error in arrived:
                if info is None:
                    reason = _reason(error)
                    mine.failures[reason] += 1
                    _warn(mine, import_id, error)
                state = imports.get(import_id)
                if state is None:  # removed from its source while the round ran
                    continue
                if info is None:
                    imports[import_id] = replace(
                        state, poll_success=False, last_polled=now, failure=reason
                    )
                    continue
                mine.answered += 1
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
                    failure=None,
                )
            for import_id, reason in late.items():
                state = imports.get(import_id)
                # Already marked so by an earlier round (the tail a short deadline leaves out
                # each time): no new state, so little work past the deadline.
                if state is not None and (state.poll_success or state.failure != reason):
                    imports[import_id] = replace(state, poll_success=False, failure=reason)
            self._imports = imports


def _reason(error: BaseException | None) -> str:
    if isinstance(error, ApiError):
        return error.reason
    if isinstance(error, QueryError):
        return NOT_SENT
    return CRASHED


def _warn(mine: _Round, import_id: str, error: BaseException | None) -> None:
    """One warning per failed query, up to a limit a round; one per round for an answer
    that concerns every id (the round stops there: the ids not asked count ``not_sent``)."""
    if isinstance(error, ApiError) and error.concerns_whole_key:
        if error.reason in mine.whole_key_warned:
            return
        mine.whole_key_warned.add(error.reason)
        log.warning(
            "%s (id=%s reason=%s code=%s: %s); the round asks no other id",
            WHOLE_KEY_HINTS.get(error.reason, "Elevate refused the round"),
            import_id,
            error.reason,
            error.code,
            error.detail,
        )
        return
    if isinstance(error, ApiError):
        if mine.warned < _WARNINGS_PER_ROUND:
            mine.warned += 1
            log.warning(
                "status query failed for id=%s reason=%s code=%s: %s",
                import_id,
                error.reason,
                error.code,
                error.detail,
            )
    elif not isinstance(error, QueryError) and error is not None:
        log.error("status query crashed for id=%s", import_id, exc_info=error)


def _log_round(failures: Counter[str], pending: int) -> None:
    if not failures:
        return
    # Ids held back are announced when the hold begins; a round that only waits is no news.
    level = logging.DEBUG if set(failures) == {HELD} else logging.WARNING
    log.log(
        level,
        "poll round: %d of %d ids without a fresh answer (%s)%s",
        sum(failures.values()),
        pending,
        ", ".join(f"{k}={v}" for k, v in sorted(failures.items())),
        "".join(_EXPLAINED[k] for k in sorted(failures) if k in _EXPLAINED),
    )


# The reasons of a round summary that are no answer of Elevate's.
_EXPLAINED = {
    DEADLINE: "; deadline: not answered within the scrape's time, asked again next round",
    NOT_SENT: "; not_sent: not asked, the round stopped at an answer that concerns every id",
}
