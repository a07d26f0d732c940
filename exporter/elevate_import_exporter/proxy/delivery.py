"""The standalone proxy's registrations on their way to an exporter: never in the feed's way.

The ids of ``202`` answers go to a bounded queue at once (:meth:`Delivery.register` never
waits on the network); a thread hands them to the exporter's registration API in batches,
retrying with jittered exponential backoff while the exporter is down. When the queue is
full the oldest id waiting is dropped (counted), never the feed's request. Delivery is at
least once: an id sent twice is answered ``existing`` by the exporter.

With a spool, every id queued is also appended (fsync'd) to a file of JSON lines, and a
marker follows each batch that left the queue, so that a restarted proxy queues again what
was not delivered. The file is compacted (rewritten with only what waits) when the
delivered part dominates, and at start, which also drops a line torn by a kill.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from elevate_import_exporter.core.files import (
    Held,
    UnreadableFile,
    hold_file,
    let_go,
    make_private_folder,
    why,
)
from elevate_import_exporter.core.model import one_line
from elevate_import_exporter.core.records import Registration
from elevate_import_exporter.lifecycle.track import Client, TrackError, post_once

log = logging.getLogger(__name__)

QUERY = "source=proxy"
DROP_REASONS = ("queue_full", "refused")
# A line of the spool is one registration (an id, a type, up to 8 labels): far below this.
MAX_LINE_BYTES = 64 * 1024
_READ_CHUNK = 1024 * 1024

Send = Callable[[Sequence[Registration]], None]


class DeliveryFailed(Exception):
    """A batch not delivered: ``reason`` (``unreachable``, ``unauthorized``,
    ``misdirected``, ``throttled``, ``server_error``, ``invalid_answer``: retried;
    ``refused``: the ids themselves, dropped), and whether another attempt may succeed."""

    def __init__(self, reason: str, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry = retry


class SpoolError(Exception):
    """The spool cannot be used (a directory, locked, unreadable): a setup error."""


@dataclass(frozen=True, slots=True)
class DeliveryStats:
    waiting: int
    delivered: int
    retries: int
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    last_delivery: float | None = None  # unix seconds


@dataclass(slots=True)
class _Entry:
    seq: int
    registration: Registration


class Delivery:
    """Ids from 202 answers on their way to an exporter through ``send``.

    ``capacity`` bounds the ids waiting (in the queue and in the batch being sent);
    ``batch`` bounds the ids in one ``send``; ``spool`` keeps them across restarts.
    Raises :class:`SpoolError` if the spool cannot be used.
    """

    def __init__(
        self,
        send: Send,
        *,
        capacity: int = 100_000,
        batch: int = 1000,
        spool: Path | None = None,
        backoff_first: float = 1.0,
        backoff_max: float = 60.0,
    ) -> None:
        if capacity < 2 or batch < 1:
            raise ValueError("capacity must be at least 2 and batch at least 1")
        self._send = send
        self._capacity = capacity
        # Below the capacity: there is always a queued id older than a new one to drop.
        self._batch = min(batch, capacity - 1)
        self._backoff = (backoff_first, backoff_max)
        self._wake = threading.Condition()
        self._queue: deque[_Entry] = deque()
        self._sending: list[_Entry] = []
        self._seq = 0
        self._delivered = self._retries = 0
        self._dropped = dict.fromkeys(DROP_REASONS, 0)
        self._last: float | None = None
        self._overflowing = False
        self._condition = "up"  # or the reason of the last failure warned about
        self._stopping = False
        self._deadline = 0.0
        self._thread: threading.Thread | None = None
        self._spool = _Spool(spool, self._batch) if spool is not None else None
        if self._spool is not None:
            entries, lost = self._spool.replay(capacity)
            self._queue.extend(entries)
            self._seq = max((e.seq for e in entries), default=-1) + 1
            self._dropped["queue_full"] += lost
            if entries:
                log.info("registration spool %s: %d ids to deliver", spool, len(entries))

    # -- the feed's side ---------------------------------------------------------------------

    def register(self, registrations: Sequence[Registration], source: str) -> list[bool]:
        """Queue ``registrations`` (and spool them) for delivery; never waits on the network.
        ``source`` is the proxy's: the exporter records them as ``proxy`` in any case.
        Called as the 202 comes: a registration without ``accepted_at`` gets this moment,
        so that the exporter measures from the 202 however long the delivery takes."""
        now = time.time()
        with self._wake:
            entries = []
            for registration in registrations:
                if registration.accepted_at is None:
                    registration = replace(registration, accepted_at=now)
                entries.append(_Entry(self._seq, registration))
                self._seq += 1
            if self._spool is not None and entries:
                self._spool.add(entries)
            self._queue.extend(entries)
            excess = len(self._queue) + len(self._sending) - self._capacity
            if excess > 0:
                self._overflow(excess)
            if self._spool is not None:
                self._spool.compact_if_due(self._queue)
            self._wake.notify()
        return [True] * len(registrations)

    def _overflow(self, count: int) -> None:
        # From the front: the oldest ids waiting, newer than those of a batch being sent
        # (which is smaller than the capacity: there is always one to drop).
        dropped = [self._queue.popleft() for _ in range(count)]
        oldest = dropped[0]
        self._dropped["queue_full"] += count
        if self._spool is not None:
            self._spool.done(dropped[0].seq, dropped[-1].seq + 1)
        if not self._overflowing:
            self._overflowing = True
            log.warning(
                "registration queue full (%d ids): dropping the oldest (id %s) and more while "
                "it stays full; see elevate_import_proxy_registrations_dropped_total",
                self._capacity,
                one_line(oldest.registration.id, 100),
            )

    # -- the delivery thread -----------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="registration-delivery", daemon=True)
        self._thread.start()

    def close(self, seconds: float) -> None:
        """Deliver what is queued for up to ``seconds``, then stop; the spool keeps the rest."""
        with self._wake:
            self._stopping = True
            self._deadline = time.monotonic() + seconds
            self._wake.notify_all()
        if self._thread is not None:
            # A send under way is bounded by the client's timeout: it may end after this.
            self._thread.join(max(seconds, 0.0) + 1.0)
        with self._wake:
            left = len(self._queue) + len(self._sending)
            if left:
                kept = f"; kept in the spool {self._spool.path}" if self._spool else "; lost"
                log.warning("%d registrations not delivered before the end%s", left, kept)
            if self._spool is not None:
                self._spool.close()
                self._spool = None

    def snapshot(self) -> DeliveryStats:
        with self._wake:
            return DeliveryStats(
                len(self._queue) + len(self._sending),
                self._delivered,
                self._retries,
                dict(self._dropped),
                self._last,
            )

    def _run(self) -> None:
        failures = 0
        while True:
            with self._wake:
                while not self._queue and not self._stopping:
                    self._wake.wait()
                if not self._queue or (self._stopping and time.monotonic() >= self._deadline):
                    return
                count = min(self._batch, len(self._queue))
                self._sending = [self._queue.popleft() for _ in range(count)]
                batch = [entry.registration for entry in self._sending]
            try:
                self._send(batch)
            except DeliveryFailed as exc:
                failed: DeliveryFailed = exc
            except Exception as exc:  # a bug in a sender must not end the delivery
                log.debug("registration send failed", exc_info=True)
                failed = DeliveryFailed("unreachable", type(exc).__name__, retry=True)
            else:
                self._finished(delivered=True)
                failures = 0
                continue
            if not failed.retry:
                self._refused(failed)
                continue
            self._again(failed)
            delay = min(self._backoff[0] * 2**failures, self._backoff[1])
            failures += 1
            with self._wake:
                # Jittered, so that replicas do not return to a restarted exporter together.
                until = time.monotonic() + delay * random.uniform(0.5, 1.0)
                if self._stopping:
                    until = min(until, self._deadline)
                while time.monotonic() < until:
                    self._wake.wait(until - time.monotonic())
                    if self._stopping:
                        until = min(until, self._deadline)

    def _finished(self, *, delivered: bool) -> None:
        with self._wake:
            sent, self._sending = self._sending, []
            if delivered:
                self._delivered += len(sent)
                self._last = time.time()
                if self._condition != "up":
                    log.warning("registrations are delivered again (%d waiting)", len(self._queue))
                    self._condition = "up"
            else:
                self._dropped["refused"] += len(sent)
            # The queue has room again: a next overflow is a new burst, with its warning.
            self._overflowing = False
            if self._spool is not None and sent:
                self._spool.done(sent[0].seq, sent[-1].seq + 1)
                self._spool.compact_if_due(self._queue)

    def _refused(self, failed: DeliveryFailed) -> None:
        with self._wake:
            count = len(self._sending)
            if self._condition != "refused":
                self._condition = "refused"
                log.warning(
                    "the exporter refused %d registrations, dropped: %s; further refusals are "
                    'counted in elevate_import_proxy_registrations_dropped_total{reason="refused"}',
                    count,
                    failed,
                )
            else:
                log.debug("the exporter refused %d registrations, dropped: %s", count, failed)
        self._finished(delivered=False)

    def _again(self, failed: DeliveryFailed) -> None:
        with self._wake:
            # Back to the front: the oldest again, and the first dropped if the queue fills.
            self._queue.extendleft(reversed(self._sending))
            self._sending = []
            self._retries += 1
            if self._condition in ("up", "refused"):
                self._condition = failed.reason
                log.warning(
                    "registrations cannot be delivered (%s): %s; retrying with backoff "
                    "(%d waiting)",
                    failed.reason,
                    failed,
                    len(self._queue),
                )
            else:
                log.debug("registration delivery failed again (%s): %s", failed.reason, failed)


class _Spool:
    """The append-only file of JSON lines under the queue, locked for this process."""

    def __init__(self, path: Path, batch: int) -> None:
        self.path = path
        self._batch = batch
        try:
            if path.is_dir():
                raise SpoolError(f"registration spool {path} is a directory, not a file")
            make_private_folder(path.parent)
            self._held: Held | None = hold_file(str(path))
            self._out = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except UnreadableFile as exc:
            raise SpoolError(f"cannot use the registration spool {path}: {exc}") from None
        except OSError as exc:
            raise SpoolError(f"cannot open the registration spool {path}: {why(exc)}") from None
        self._lines = 0  # in the file now
        self._broken = False

    def replay(self, capacity: int) -> tuple[list[_Entry], int]:
        """What the file holds that was added and not marked done, in order (at most the
        newest ``capacity``; how many older ones were left out); the file rewritten so."""
        added: dict[int, Registration] = {}
        done: list[tuple[int, int]] = []
        damaged = 0
        assert self._held is not None
        for line, whole in _lines(self._held[0]):
            item = _parse(line) if whole else None
            if item is None:
                damaged += 1
            elif isinstance(item, tuple):
                done.append(item)
            else:
                added[item.seq] = item.registration
        if damaged:
            log.warning(
                "registration spool %s: skipped %d damaged lines (a write cut short?)",
                self.path,
                damaged,
            )
        for first, end in done:
            # Whichever is shorter: the span, or the ids left (a hostile span may be huge).
            within = range(first, end) if end - first < len(added) else list(added)
            for seq in within:
                if first <= seq < end:
                    added.pop(seq, None)
        entries = [_Entry(seq, added[seq]) for seq in sorted(added)]
        lost = max(0, len(entries) - capacity)
        if lost:
            log.warning(
                "registration spool %s: %d ids beyond the queue's capacity dropped (the oldest)",
                self.path,
                lost,
            )
            entries = entries[lost:]
        if not self.compact(entries):
            # Appending after a torn line would tear the next one as well.
            raise SpoolError(f"cannot rewrite the registration spool {self.path} at start")
        return entries, lost

    def add(self, entries: Sequence[_Entry]) -> None:
        self._append([_spooled(e) for e in entries])

    def done(self, first: int, end: int) -> None:
        self._append([{"done": [first, end]}])

    def _append(self, documents: Sequence[dict[str, object]]) -> None:
        data = b"".join(_encode(document) for document in documents)
        try:
            _write_all(self._out, data)
            os.fsync(self._out)
        except OSError as exc:
            if not self._broken:
                log.warning(
                    "registration spool %s: cannot write (%s); the ids stay in memory only "
                    "until it can be rewritten",
                    self.path,
                    why(exc),
                )
            self._broken = True
            return
        self._lines += len(documents)

    def compact_if_due(self, waiting: Sequence[_Entry]) -> None:
        # Rewritten once the delivered part outweighs what waits (and a rewrite is worth it):
        # the file stays within about twice the queue's capacity.
        stale = self._lines - len(waiting)
        if self._broken or stale > max(len(waiting), self._batch):
            self.compact(waiting)

    def compact(self, waiting: Sequence[_Entry]) -> bool:
        """Rewrite the file with ``waiting`` only: a new file renamed over it, so that a kill
        at any moment leaves the old file or the new one, whole."""
        temporary = self.path.with_name(self.path.name + ".tmp")
        with_lines = [_spooled(e) for e in waiting]
        try:
            temporary.unlink(missing_ok=True)
            # Locked before it takes the spool's name: no moment without a lock on it.
            held = hold_file(str(temporary))
            out = os.open(temporary, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except (OSError, UnreadableFile) as exc:
            self._compaction_failed(exc)
            return False
        try:
            _write_all(out, b"".join(_encode(document) for document in with_lines))
            os.fsync(out)
            temporary.replace(self.path)
            _sync_folder(self.path.parent)
        except OSError as exc:
            os.close(out)
            let_go(held)
            self._compaction_failed(exc)
            return False
        os.close(self._out)
        let_go(self._held)
        self._held, self._out = held, out
        self._lines = len(with_lines)
        self._broken = False
        return True

    def _compaction_failed(self, exc: BaseException) -> None:
        log.warning("registration spool %s: cannot rewrite it (%s)", self.path, why(exc))

    def close(self) -> None:
        os.close(self._out)
        let_go(self._held)
        self._held = None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _encode(document: dict[str, object]) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _lines(fd: int) -> Iterator[tuple[bytes, bool]]:
    """The lines of the file behind ``fd`` from its start, each with whether it ended with a
    newline; a line longer than :data:`MAX_LINE_BYTES` comes as an empty, damaged one."""
    os.lseek(fd, 0, os.SEEK_SET)
    pending = b""
    skipping = False
    while chunk := os.read(fd, _READ_CHUNK):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            if skipping:
                skipping = False
                yield b"", False
            else:
                yield line, True
        if len(pending) > MAX_LINE_BYTES:
            pending, skipping = b"", True
    if pending or skipping:
        yield b"", False


def _spooled(entry: _Entry) -> dict[str, object]:
    registration = entry.registration
    document: dict[str, object] = {
        "seq": entry.seq,
        "id": registration.id,
        "type": registration.type,
        "labels": dict(registration.labels),
    }
    if registration.accepted_at is not None:
        document["accepted_at"] = registration.accepted_at
    return document


def _parse(line: bytes) -> _Entry | tuple[int, int] | None:
    """An added registration, a done marker (first, end), or None for a damaged line."""
    try:
        document = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    if set(document) == {"done"}:
        span = document["done"]
        if (
            isinstance(span, list)
            and len(span) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in span)
        ):
            return span[0], span[1]
        return None
    seq, import_id = document.get("seq"), document.get("id")
    kind, labels = document.get("type", ""), document.get("labels", {})
    accepted = document.get("accepted_at")
    if (
        set(document) <= {"seq", "id", "type", "labels", "accepted_at"}
        and (accepted is None or _a_time(accepted))
        and isinstance(seq, int)
        and not isinstance(seq, bool)
        and seq >= 0
        and isinstance(import_id, str)
        and import_id
        and isinstance(kind, str)
        and isinstance(labels, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())
    ):
        labelled = tuple(sorted(labels.items()))
        return _Entry(seq, Registration(import_id, kind, labelled, accepted))
    return None


def _a_time(value: object) -> bool:
    # What the exporter takes as accepted_at (it checks the upper end itself).
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1e11


def _sync_folder(folder: Path) -> None:
    # The rename is durable once the folder's entry is on disk.
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the sender over HTTP -------------------------------------------------------------------


def http_sender(client: Client) -> Send:
    """One attempt per batch: ``POST <url>?source=proxy`` with ``track``'s client (its
    credentials, TLS, time and size bounds). 2xx with a word on every id: delivered; a 4xx
    (but 408 and 429) or a redirect: refused for good; anything else: worth a retry."""

    # An exporter older than accepted_at refuses the key with a 400 naming it. Its ids
    # are not at fault: they go again without it, and so does every later batch.
    takes_accepted_at = True

    def send(registrations: Sequence[Registration]) -> None:
        nonlocal takes_accepted_at
        if not takes_accepted_at:
            registrations = _without_accepted_at(registrations)
        try:
            post_once(client, registrations, QUERY)
        except TrackError as exc:
            if not (exc.status == 400 and _refuses_accepted_at(exc, registrations)):
                raise _failed(exc) from None
            takes_accepted_at = False
            log.warning(
                "the exporter does not take accepted_at (it is older than this proxy): its "
                "durations start when it registers the ids, not at the 202; upgrade it"
            )
            send(registrations)
        except Exception as exc:
            # Not one of the errors the client expects: its text may quote the server.
            raise DeliveryFailed("unreachable", type(exc).__name__, retry=True) from None

    return send


def _refuses_accepted_at(exc: TrackError, registrations: Sequence[Registration]) -> bool:
    return "accepted_at" in str(exc) and any(r.accepted_at is not None for r in registrations)


def _without_accepted_at(registrations: Sequence[Registration]) -> list[Registration]:
    return [replace(r, accepted_at=None) for r in registrations]


def _failed(exc: TrackError) -> DeliveryFailed:
    status = exc.status
    if status is None:
        return DeliveryFailed("unreachable", str(exc), retry=True)
    if status in (408, 429):
        return DeliveryFailed("throttled", str(exc), retry=True)
    # Wrong credentials, registration turned off, a URL that is no exporter's API: the
    # setup is wrong, not the ids. They wait (within the queue's bound) until it is fixed.
    if status in (401, 403):
        return DeliveryFailed("unauthorized", str(exc), retry=True)
    if 300 <= status < 400 or status in (404, 405):
        return DeliveryFailed("misdirected", str(exc), retry=True)
    if 400 <= status < 500:  # the ids themselves are refused: sending them again cannot help
        return DeliveryFailed("refused", str(exc), retry=False)
    if 500 <= status < 600:
        return DeliveryFailed("server_error", str(exc), retry=True)
    return DeliveryFailed("invalid_answer", str(exc), retry=True)


# -- metrics --------------------------------------------------------------------------------


class DeliveryCollector(Collector):
    """The delivery's metric families, fresh on every scrape."""

    def __init__(self, delivery: Delivery) -> None:
        self._delivery = delivery

    def describe(self) -> Iterator[Metric]:
        yield from _families(DeliveryStats(0, 0, 0))

    def collect(self) -> Iterator[Metric]:
        yield from _families(self._delivery.snapshot())


def _families(stats: DeliveryStats) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "elevate_import_proxy_registrations_waiting",
        "Import ids from 202 answers waiting to be registered with the exporter.",
        value=stats.waiting,
    )
    yield CounterMetricFamily(
        "elevate_import_proxy_registrations_delivered",
        "Import ids handed to the exporter's registration API (at least once).",
        value=stats.delivered,
    )
    yield CounterMetricFamily(
        "elevate_import_proxy_registration_retries",
        "Batches of registrations sent again after the exporter failed or was not reached.",
        value=stats.retries,
    )
    dropped = CounterMetricFamily(
        "elevate_import_proxy_registrations_dropped",
        "Import ids never registered, by reason: queue_full (the oldest waiting, to make room), "
        "refused (the exporter answered 4xx).",
        labels=["reason"],
    )
    for reason in DROP_REASONS:
        dropped.add_metric([reason], stats.dropped.get(reason, 0))
    yield dropped
    yield GaugeMetricFamily(
        "elevate_import_proxy_last_delivery_timestamp_seconds",
        "When registrations were last delivered to the exporter (unix seconds; 0 before).",
        value=stats.last_delivery or 0,
    )
