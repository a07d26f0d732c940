"""The ids file: one import id a line, followed while the exporter runs."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from elevate_import_exporter.model import ID_RULE, is_valid_import_id

log = logging.getLogger(__name__)


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


class IdsFile:
    """The ids of a file that may change while the exporter runs.

    The file is checked with one ``stat`` per call and re-read only when it changed,
    so calling :meth:`current` on every round costs next to nothing.
    """

    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int, int] | None = None
        self._current: tuple[str, ...] = ()
        self._broken = False
        try:
            stat = path.stat()
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise IdsFileError(f"cannot read the ids file {path}: {_why(exc)}") from exc
        self._apply(text, _signature(stat))

    def current(self) -> tuple[str, ...]:
        with self._lock:
            self._refresh()
            return self._current

    def reload(self) -> None:
        with self._lock:
            self._signature = None
            self._refresh()

    def _refresh(self) -> None:
        path = self.path
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
                self.path,
                line.text[:100],
                ID_RULE,
            )
        ids_tuple = tuple(ids)
        # The same tuple while nothing changed lets TrackedIds skip re-joining.
        if ids_tuple != self._current:
            self._current = ids_tuple
        self._signature = signature


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
