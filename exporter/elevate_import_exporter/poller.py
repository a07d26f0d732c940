"""Poll rounds and the state they leave: what the exporter knows about each import.

One round per scrape. Scrapes that arrive while a round runs wait for it and share
its result, so concurrent scrapes never multiply the requests sent to Elevate.
"""

from __future__ import annotations

import bisect
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Future, wait
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from elevate_import_exporter.client import (
    ERROR_REASONS,
    FINAL_STATUSES,
    ApiError,
    ElevateClient,
    ElevateError,
    ImportInfo,
    Request,
)
from elevate_import_exporter.ids import TrackedIds

log = logging.getLogger(__name__)
T = TypeVar("T")

# Prometheus' default buckets suit request latencies from a few ms to the timeout.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
# Enough warning lines to see what goes wrong without flooding the log when a
# whole cluster fails for thousands of ids.
_WARNINGS_PER_ROUND = 20


@dataclass(frozen=True, slots=True)
class ImportState:
    id: str
    first_seen: float
    info: ImportInfo | None = None
    status_since: float | None = None
    poll_success: bool = False

    @property
    def final(self) -> bool:
        return self.info is not None and self.info.status in FINAL_STATUSES


@dataclass(frozen=True, slots=True)
class RoundResult:
    up: bool
    seconds: float
    queried: int


@dataclass(frozen=True)
class ApiStats:
    requests: Mapping[str, int]
    errors: Mapping[str, int]
    bucket_counts: tuple[int, ...]  # per bucket of LATENCY_BUCKETS, then +Inf; not cumulative
    latency_sum: float


class RequestStats:
    """Counters of the status requests sent, fed by the client from its worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        self._errors: Counter[str] = Counter(dict.fromkeys(ERROR_REASONS, 0))
        self._buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self._sum = 0.0

    def record(self, request: Request) -> None:
        # bisect_left puts a value equal to a bound in that bound's bucket (le).
        index = bisect.bisect_left(LATENCY_BUCKETS, request.seconds)
        with self._lock:
            self._requests[request.code] += 1
            if request.error is not None:
                self._errors[request.error] += 1
            self._buckets[index] += 1
            self._sum += request.seconds

    def snapshot(self) -> ApiStats:
        with self._lock:
            return ApiStats(
                dict(self._requests), dict(self._errors), tuple(self._buckets), self._sum
            )


@dataclass(frozen=True)
class Snapshot:
    imports: Mapping[str, ImportState]
    last_round: RoundResult | None
    api: ApiStats


class _Workers:
    """A fixed set of daemon threads that run status queries.

    ThreadPoolExecutor's workers are joined at interpreter exit, so a request stuck
    on a hung connection would hold up a SIGTERM until its timeout; daemon threads
    do not.
    """

    def __init__(self, size: int) -> None:
        self._tasks: queue.SimpleQueue[
            tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None
        ]
        self._tasks = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"elevate-poll-{n}", daemon=True)
            for n in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, function: Callable[..., T], *args: Any) -> Future[T]:
        future: Future[T] = Future()
        self._tasks.put((future, function, args))
        return future

    def stop(self) -> None:
        for _ in self._threads:
            self._tasks.put(None)

    def _work(self) -> None:
        while (task := self._tasks.get()) is not None:
            future, function, args = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(function(*args))
            except BaseException as error:  # handed to the round, which logs it
                future.set_exception(error)


@dataclass
class _Round:
    done: threading.Event = field(default_factory=threading.Event)


class Poller:
    def __init__(
        self,
        client: ElevateClient,
        ids: TrackedIds,
        stats: RequestStats,
        *,
        concurrency: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._ids = ids
        self._stats = stats
        self._clock = clock
        self._workers = _Workers(concurrency)
        self._lock = threading.Lock()
        self._running: _Round | None = None
        # Replaced, never mutated, so a snapshot is a reference taken under the lock.
        self._imports: Mapping[str, ImportState] = {}
        self._last_round: RoundResult | None = None
        self._sync_ids()

    def close(self) -> None:
        self._workers.stop()
        self._client.close()

    def snapshot(self) -> Snapshot:
        with self._lock:
            imports, last_round = self._imports, self._last_round
        return Snapshot(imports, last_round, self._stats.snapshot())

    def poll(self, budget: float) -> None:
        """Run a round that ends within ``budget`` seconds, or wait for the one running."""
        deadline = time.monotonic() + budget
        with self._lock:
            current = self._running
            if current is None:
                current = self._running = _Round()
                leader = True
            else:
                leader = False
        if not leader:
            current.done.wait(max(0.0, deadline - time.monotonic()))
            return
        try:
            self._run(deadline)
        finally:
            with self._lock:
                self._running = None
            current.done.set()

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
            elif not isinstance(error, ElevateError):
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
            up=not failures, seconds=time.monotonic() - started, queried=len(pending)
        )
        with self._lock:
            self._last_round = result

    def _query(self, import_id: str, deadline: float, stop: threading.Event) -> ImportInfo:
        try:
            return self._client.import_status(import_id, deadline, stop)
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
                    imports[import_id] = replace(state, poll_success=False)
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
                )
            self._imports = imports
