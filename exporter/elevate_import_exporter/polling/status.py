"""The ``status`` command's core: ask for imports' statuses, once or until they are final.

No click and no terminal here. :func:`watch` yields a :class:`Progress` after every
answer and every second of waiting; the last one carries the :class:`Outcome`, whose
value is the exit status. The CLI renders them (:mod:`status_view`).

Respecting the API: at most ``concurrency`` requests in flight, one query per id and
round, rounds no closer than ``interval``, final ids never asked again, and a
``Retry-After`` honoured (:class:`~elevate_import_exporter.elevate.holds.Holds`).
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, replace

from elevate_import_exporter.core.model import ApiError, ImportInfo, NotSent
from elevate_import_exporter.core.workers import Workers
from elevate_import_exporter.elevate.api import StatusApi, status_api
from elevate_import_exporter.elevate.holds import Holds
from elevate_import_exporter.settings.config import Settings

# An import started a moment ago may not be known to every node of the cluster yet, so
# NOT_FOUND is asked again for this long; after it, the id is settled as unknown (a typo,
# or an id the cluster no longer keeps) rather than waited for until the timeout.
NOT_FOUND_GRACE = 60.0
# How often a wait between rounds yields, so that a live view can show the time go by.
TICK = 1.0
MIN_INTERVAL = 1.0
MIN_TIMEOUT = 1.0
MAX_INTERVAL = 3600.0
MAX_TIMEOUT = 7 * 86400.0

_FAILED = frozenset({"FAILURE", "ABORTED", "NOT_FOUND"})


class Outcome(enum.Enum):
    """How a check ended; the value is the exit status. Listed from the weightiest down."""

    FAILED = 1  # some import failed, was aborted, or is unknown to the cluster
    API_FAILING = 3  # the latest query for some import failed (403, 404, 5xx, ...)
    UNFINISHED = 4  # some import still on its way when the check stopped looking
    SUCCEEDED = 0  # every import SUCCESS

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class IdState:
    """What is known about one id: its latest valid answer and whether the latest query failed."""

    id: str
    info: ImportInfo | None = None
    error: ApiError | None = None  # the latest query failed; None again after a valid answer
    gave_up: bool = False  # NOT_FOUND for longer than the grace

    @property
    def status(self) -> str | None:
        return None if self.info is None else self.info.status

    @property
    def final(self) -> bool:
        return self.info is not None and self.info.final

    @property
    def settled(self) -> bool:
        """No longer asked: final, or unknown to the cluster for longer than the grace."""
        return self.final or self.gave_up

    @property
    def verdict(self) -> Outcome:
        if self.final or (self.status == "NOT_FOUND" and self.error is None):
            return Outcome.FAILED if self.status in _FAILED else Outcome.SUCCEEDED
        if self.error is not None:
            return Outcome.API_FAILING
        return Outcome.UNFINISHED


@dataclass(frozen=True)
class Progress:
    """Every id's state at one moment; ``changed`` names the ids whose status or error
    changed since the previous one. The last Progress of a check has an ``outcome``."""

    states: tuple[IdState, ...]
    elapsed: float
    changed: frozenset[str] = frozenset()
    outcome: Outcome | None = None

    @property
    def settled(self) -> int:
        return sum(state.settled for state in self.states)


def outcome_of(states: Sequence[IdState]) -> Outcome:
    """The weightiest of the ids' verdicts: a known failure before an unknown state."""
    verdicts = {state.verdict for state in states}
    return next((o for o in Outcome if o in verdicts), Outcome.SUCCEEDED)


@contextmanager
def open_api(settings: Settings) -> Iterator[StatusApi]:
    """The status API of ``settings``' flavour, closed on leaving."""
    api = status_api(settings.client)
    try:
        yield api
    finally:
        api.close()


def watch(
    api: StatusApi,
    ids: Sequence[str],
    *,
    concurrency: int,
    wait: bool,
    timeout: float,
    interval: float,
) -> Iterator[Progress]:
    """Ask for ``ids`` once, or with ``wait`` every ``interval`` until all are settled.

    Ends after ``timeout`` seconds at the latest (requests in flight are cut off then),
    and at once when a 403 or 404 says that no id can be answered.
    """
    return _Check(api, ids, concurrency, timeout).run(wait, interval)


class _Check:
    def __init__(self, api: StatusApi, ids: Sequence[str], concurrency: int, timeout: float):
        self._api = api
        self._states = {import_id: IdState(import_id) for import_id in ids}
        self._workers_size = max(1, min(concurrency, len(ids)))
        self._start = time.monotonic()
        self._deadline = self._start + timeout
        self._holds = Holds()
        self._stop = threading.Event()
        self._whole_key_failed = False

    def run(self, wait: bool, interval: float) -> Iterator[Progress]:
        workers = Workers(self._workers_size, name="elevate-status")
        try:
            while True:
                round_start = time.monotonic()
                yield from self._round(workers)
                if not wait or self._finished():
                    break
                yield from self._pause(round_start + interval)
                if self._finished():
                    break
            yield self._progress(frozenset(), outcome_of(tuple(self._states.values())))
        finally:
            self._stop.set()
            workers.stop()

    def _finished(self) -> bool:
        return (
            self._whole_key_failed
            or time.monotonic() >= self._deadline
            or all(state.settled for state in self._states.values())
        )

    def _round(self, workers: Workers) -> Iterator[Progress]:
        asking = [s.id for s in self._states.values() if not s.settled]
        held = self._holds.held(asking)
        futures: dict[Future[ImportInfo], str] = {
            workers.submit(self._api.import_status, import_id, self._deadline, self._stop): (
                import_id
            )
            for import_id in asking
            if import_id not in held
        }
        for future in as_completed(futures):
            import_id = futures[future]
            if self._record(import_id, future):
                yield self._progress(frozenset({import_id}))

    def _record(self, import_id: str, future: Future[ImportInfo]) -> bool:
        """Keep what a query brought; True if the id's status or error changed."""
        before = self._states[import_id]
        try:
            info = future.result()
        except NotSent:
            return False
        except ApiError as error:
            if error.reason == "timeout" and time.monotonic() >= self._deadline:
                return False  # cut off by the check's own timeout, not the API's doing
            self._holds.note(import_id, error)
            if error.concerns_whole_key:
                self._whole_key_failed = True
                self._stop.set()
            after = replace(before, error=error)
        else:
            unknown_too_long = time.monotonic() - self._start >= NOT_FOUND_GRACE
            gave_up = info.status == "NOT_FOUND" and unknown_too_long
            after = replace(before, info=info, error=None, gave_up=gave_up)
        self._states[import_id] = after
        return _shown(before) != _shown(after)

    def _pause(self, until: float) -> Iterator[Progress]:
        until = min(until, self._deadline)
        while (left := until - time.monotonic()) > 0:
            if self._stop.wait(min(TICK, left)):
                return
            yield self._progress(frozenset())

    def _progress(self, changed: frozenset[str], outcome: Outcome | None = None) -> Progress:
        return Progress(
            states=tuple(self._states.values()),
            elapsed=time.monotonic() - self._start,
            changed=changed,
            outcome=outcome,
        )


def _shown(state: IdState) -> tuple[object, ...]:
    info, error = state.info, state.error
    return (
        None if info is None else (info.status, info.type, info.message),
        None if error is None else (error.reason, error.code),
        state.gave_up,
    )
