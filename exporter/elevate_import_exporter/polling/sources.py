"""Where tracked import ids come from: one small interface, many sources.

Flags and the ids file are sources today; ids registered over HTTP, kept in a
store or learnt by a proxy plug in as further sources without the poller
knowing. :class:`TrackedIds` joins them into the one set the poller follows.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from itertools import islice
from typing import Protocol, runtime_checkable

log = logging.getLogger(__name__)

# Who keeps a place under --imports.max-tracked first (lowest): see TrackedIds. A source
# not named here (flags, or one added later) counts as fixed; 1 are records.REGISTERED_SOURCES.
_RANKS = {"file": 2, "api": 1, "proxy": 1}


@runtime_checkable
class IdSource(Protocol):
    """A source of import ids; ``name`` labels its ids (``flag``, ``file``, ``api``, ``proxy``)."""

    name: str

    def current(self) -> tuple[str, ...]:
        """The source's ids now, in order, without duplicates; cheap to call every round."""

    def reload(self) -> None:
        """Read the source again now, whether or not it seems to have changed (SIGHUP)."""


@runtime_checkable
class MutableIdSource(IdSource, Protocol):
    """A source whose ids change at run time through the exporter itself."""

    def add(self, import_id: str) -> bool:
        """Track ``import_id``; False if it was tracked already."""

    def remove(self, import_id: str) -> bool:
        """Stop tracking ``import_id``; False if it was not tracked."""


class FixedIds:
    """Ids given at start-up: flags and environment variables."""

    def __init__(self, ids: Iterable[str], name: str = "flag") -> None:
        self.name = name
        self._ids = tuple(dict.fromkeys(ids))

    def current(self) -> tuple[str, ...]:
        return self._ids

    def reload(self) -> None:
        pass


class MemoryIds:
    """Ids added and removed at run time, kept in memory."""

    def __init__(self, name: str, ids: Iterable[str] = ()) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._ids: dict[str, None] = dict.fromkeys(ids)
        self._current = tuple(self._ids)

    def current(self) -> tuple[str, ...]:
        return self._current

    def reload(self) -> None:
        pass

    def add(self, import_id: str) -> bool:
        with self._lock:
            if import_id in self._ids:
                return False
            self._ids[import_id] = None
            self._current = tuple(self._ids)
            return True

    def remove(self, import_id: str) -> bool:
        with self._lock:
            if import_id not in self._ids:
                return False
            del self._ids[import_id]
            self._current = tuple(self._ids)
            return True


class TrackedIds:
    """The ids of all sources, in the order of the sources, each id once.

    With ``max_tracked``, at most that many ids are tracked, whichever source holds
    them: a runaway source must not take the exporter's memory or flood Prometheus
    with series. The ids beyond it are :attr:`refused`, with one warning each time
    their number changes. When there are too many, the ids of flags come first
    (fixed for the process' life), then registered ids (a registration was answered
    ``201`` only if the budget had room for it, a promise that a later change of the
    ids file must not break), then the ids file's: its last ids are the ones refused.
    Each group keeps the order of its sources.
    """

    def __init__(self, sources: Sequence[IdSource], max_tracked: int | None = None) -> None:
        if max_tracked is not None and max_tracked < 1:
            raise ValueError(f"max_tracked must be at least 1, not {max_tracked}")
        self.sources = tuple(sources)
        self._max = max_tracked
        self._lock = threading.Lock()
        self._seen: tuple[tuple[str, ...], ...] | None = None
        self._current: tuple[str, ...] = ()
        self._owner: dict[str, str] = {}
        self._held: dict[str, str] = {}  # every id of a source, refused ones too
        self._counts: dict[str, int] = {}
        self._refused = 0
        self._excluded: frozenset[str] = frozenset()

    def exclude(self, ids: frozenset[str]) -> None:
        """Track none of ``ids`` from now on, whichever source holds them (retired ids)."""
        with self._lock:
            self._excluded = ids
            self._seen = None  # join anew at the next call

    def current(self) -> tuple[str, ...]:
        parts = tuple(source.current() for source in self.sources)
        with self._lock:
            # Sources hand out the same tuple while they are unchanged, so an identity
            # check spares re-joining thousands of ids on every round.
            if self._seen is not None and all(
                a is b for a, b in zip(parts, self._seen, strict=True)
            ):
                return self._current
            refused_before = self._refused
            self._join(parts)
            current, refused = self._current, self._refused
        if refused != refused_before:
            self._log_refused(refused, len(current))
        return current

    @property
    def max_tracked(self) -> int | None:
        return self._max

    def held(self) -> Mapping[str, str]:
        """Every id a source holds (but excluded ones), tracked or refused, with the name
        of the first source that holds it; replaced, never changed."""
        self.current()
        with self._lock:
            return self._held

    def no_room_for(self, ids: Collection[str]) -> str | None:
        """Why ``ids`` cannot all be tracked if a source adds them now (None: they can).

        An id tracked already needs no room; one held but refused has none; a new one
        takes a place, and all of them must fit under ``max_tracked``.
        """
        held = self.held()
        with self._lock:
            untracked = [i for i in ids if i not in self._owner]
        new = sum(1 for i in untracked if i not in held)
        if not untracked or self._max is None or len(held) + new <= self._max:
            return None
        return (
            f"{len(held)} imports are tracked or refused already (flags, the ids file and "
            f"registrations together) and {len(untracked)} more cannot be: at most "
            f"{self._max} are tracked (--imports.max-tracked)"
        )

    @property
    def refused(self) -> int:
        """How many ids the sources hold beyond ``max_tracked``, which are not tracked."""
        self.current()
        with self._lock:
            return self._refused

    def source_of(self, import_id: str) -> str | None:
        """The name of the first source that holds ``import_id`` (as of :meth:`current`)."""
        with self._lock:
            return self._owner.get(import_id)

    def owners(self) -> Mapping[str, str]:
        """Each tracked id's source name (as of :meth:`current`); replaced, never changed."""
        with self._lock:
            return self._owner

    def counts(self) -> dict[str, int]:
        """Tracked ids per source name, each id counted for the first source that holds it."""
        self.current()
        with self._lock:
            return dict(self._counts)

    def reload(self) -> None:
        for source in self.sources:
            source.reload()

    def _join(self, parts: tuple[tuple[str, ...], ...]) -> None:
        owner: dict[str, str] = {}
        excluded = self._excluded
        for source, ids in zip(self.sources, parts, strict=True):
            for import_id in ids:
                if import_id not in excluded:
                    owner.setdefault(import_id, source.name)
        held, refused = owner, 0
        if self._max is not None and len(owner) > self._max:
            refused = len(owner) - self._max
            owner = self._within(owner, parts, self._max)
        counts = dict.fromkeys((s.name for s in self.sources), 0)
        for name in owner.values():
            counts[name] += 1
        self._owner, self._counts, self._refused = owner, counts, refused
        self._held = held
        self._current = tuple(owner)
        self._seen = parts

    def _within(
        self, owner: dict[str, str], parts: tuple[tuple[str, ...], ...], most: int
    ) -> dict[str, str]:
        """The ``most`` ids of ``owner`` that keep their place: by rank, then in order."""
        rank = dict.fromkeys(owner, max(_RANKS.values()))
        for source, ids in zip(self.sources, parts, strict=True):
            here = _RANKS.get(source.name, 0)
            for import_id in ids:
                if rank.get(import_id, -1) > here:
                    rank[import_id] = here
        groups: dict[int, list[str]] = {}
        for import_id in owner:
            groups.setdefault(rank[import_id], []).append(import_id)
        ranked = (import_id for level in sorted(groups) for import_id in groups[level])
        kept = set(islice(ranked, most))
        return {import_id: name for import_id, name in owner.items() if import_id in kept}

    def _log_refused(self, refused: int, tracked: int) -> None:
        if refused:
            log.warning(
                "%d import ids refused: only the first %d are tracked (--imports.max-tracked): "
                "flags first, then registered ids, then the ids file in its order",
                refused,
                self._max,
            )
        else:
            log.info("no import ids refused any more: all %d are tracked", tracked)
