"""Where tracked import ids come from: one small interface, many sources.

Flags and the ids file are sources today; ids registered over HTTP, kept in a
store or learnt by a proxy plug in as further sources without the poller
knowing. :class:`TrackedIds` joins them into the one set the poller follows.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable


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
    """The ids of all sources, in the order of the sources, each id once."""

    def __init__(self, sources: Sequence[IdSource]) -> None:
        self.sources = tuple(sources)
        self._lock = threading.Lock()
        self._seen: tuple[tuple[str, ...], ...] = ()
        self._current: tuple[str, ...] = ()
        self._owner: dict[str, str] = {}

    def current(self) -> tuple[str, ...]:
        parts = tuple(source.current() for source in self.sources)
        with self._lock:
            # Sources hand out the same tuple while they are unchanged, so an identity
            # check spares re-joining thousands of ids on every round.
            if len(parts) != len(self._seen) or any(
                a is not b for a, b in zip(parts, self._seen, strict=True)
            ):
                owner: dict[str, str] = {}
                for source, ids in zip(self.sources, parts, strict=True):
                    for import_id in ids:
                        owner.setdefault(import_id, source.name)
                self._owner = owner
                self._current = tuple(owner)
                self._seen = parts
            return self._current

    def source_of(self, import_id: str) -> str | None:
        """The name of the first source that holds ``import_id`` (as of :meth:`current`)."""
        with self._lock:
            return self._owner.get(import_id)

    def counts(self) -> dict[str, int]:
        """Ids per source name, each id counted for the first source that holds it."""
        self.current()
        with self._lock:
            counts = dict.fromkeys((s.name for s in self.sources), 0)
            for name in self._owner.values():
                counts[name] += 1
            return counts

    def reload(self) -> None:
        for source in self.sources:
            source.reload()
