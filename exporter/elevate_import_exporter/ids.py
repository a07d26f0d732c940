"""Which import ids to track: the fixed ones and those of an ids file that may change."""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
ID_RULE = "1 to 64 characters of A-Z a-z 0-9 _ -"


def is_valid_import_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


class IdsFileError(Exception):
    """The ids file could not be read at all."""


@dataclass(frozen=True)
class BadLine:
    number: int
    text: str


def parse_ids(text: str) -> tuple[list[str], list[BadLine]]:
    """Ids of an ids file in order of first appearance, and the lines that hold no valid id."""
    ids: dict[str, None] = {}
    bad: list[BadLine] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if is_valid_import_id(line):
            ids[line] = None
        else:
            bad.append(BadLine(number, raw.strip()))
    return list(ids), bad


def _signature(stat: os.stat_result) -> tuple[int, int, int, int]:
    # Inode and device catch a file replaced by rename (how editors and Kubernetes
    # ConfigMaps update files); size and mtime catch edits in place.
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


class TrackedIds:
    """The ids to track now: fixed ids first, then the ids file's, without duplicates.

    The file is checked with one ``stat`` per call and re-read only when it changed,
    so calling :meth:`current` on every scrape costs next to nothing.
    """

    def __init__(self, fixed: Iterable[str] = (), path: Path | None = None) -> None:
        self._fixed = tuple(dict.fromkeys(fixed))
        self._path = path
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int, int] | None = None
        self._current = self._fixed
        self._broken = False
        if path is not None:
            try:
                stat = path.stat()
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise IdsFileError(f"cannot read the ids file {path}: {_why(exc)}") from exc
            self._apply(text, _signature(stat))

    @property
    def path(self) -> Path | None:
        return self._path

    def current(self) -> tuple[str, ...]:
        if self._path is None:
            return self._current
        with self._lock:
            self._refresh(self._path)
            return self._current

    def _refresh(self, path: Path) -> None:
        try:
            stat = path.stat()
            if _signature(stat) == self._signature:
                return
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            if not self._broken:
                log.warning(
                    "cannot read the ids file %s, keeping the last good set of %d ids: %s",
                    path,
                    len(self._current),
                    _why(exc),
                )
                self._broken = True
            return
        if self._broken:
            log.info("the ids file %s is readable again", path)
            self._broken = False
        before = set(self._current)
        self._apply(text, _signature(stat))
        after = set(self._current)
        log.info(
            "re-read the ids file %s: %d ids, %d added, %d removed",
            path,
            len(self._current),
            len(after - before),
            len(before - after),
        )

    def _apply(self, text: str, signature: tuple[int, int, int, int]) -> None:
        ids, bad = parse_ids(text)
        for line in bad:
            log.warning(
                "skipping line %d of the ids file %s: %r is not an import id (%s)",
                line.number,
                self._path,
                line.text[:100],
                ID_RULE,
            )
        self._current = tuple(dict.fromkeys((*self._fixed, *ids)))
        self._signature = signature


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
