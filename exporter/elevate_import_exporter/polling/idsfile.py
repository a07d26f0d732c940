"""The ids file: one import id a line, followed while the exporter runs.

Only a regular file is read (a symlink to one is fine: Kubernetes ConfigMaps are
made of them), opened without blocking, and at most :data:`MAX_IDS_FILE_BYTES`
of it: a named pipe, a device or a runaway file must not stall a poll round or
eat the exporter's memory.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from elevate_import_exporter.core.files import (
    Signature,
    UnreadableFile,
    path_signature,
    read_text_file,
    why,
)
from elevate_import_exporter.core.model import ID_RULE, is_valid_import_id

log = logging.getLogger(__name__)

# Far above what 1,000,000 ids need (the most --imports.max-tracked allows), far
# below what would hurt the exporter.
MAX_IDS_FILE_BYTES = 16 * 1024 * 1024

# Enough bad lines to see what is wrong with a file, without one warning for each
# line of a file that is not an ids file at all.
BAD_LINES_WARNED = 20


class IdsFileError(Exception):
    """The ids file could not be read at all."""


@dataclass(frozen=True)
class BadLine:
    number: int
    text: str


def parse_ids(
    text: str, valid: Callable[[str], bool] = is_valid_import_id
) -> tuple[list[str], list[BadLine]]:
    """Ids of an ids file in order of first appearance, and the lines that hold no ``valid`` id."""
    ids: dict[str, None] = {}
    bad: list[BadLine] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if valid(line):
            ids[line] = None
        else:
            bad.append(BadLine(number, raw.strip()))
    return list(ids), bad


def _read(path: Path) -> tuple[Signature, str]:
    return read_text_file(path, MAX_IDS_FILE_BYTES)


class IdsFile:
    """The ids of a file that may change while the exporter runs.

    The file is checked with one ``stat`` per call and re-read only when it changed,
    so calling :meth:`current` on every round costs next to nothing. A file that
    cannot be read leaves the last good set in place, with one warning for each
    new reason.
    """

    name = "file"

    def __init__(
        self,
        path: Path,
        valid: Callable[[str], bool] = is_valid_import_id,
        rule: str = ID_RULE,
    ) -> None:
        """``valid`` tells an id of the API flavour in use, ``rule`` words it for warnings."""
        self.path = path
        self._valid = valid
        self._rule = rule
        self._lock = threading.Lock()
        self._signature: Signature | None = None
        self._current: tuple[str, ...] = ()
        self._broken: str | None = None  # why the latest read failed
        try:
            signature, text = _read(path)
        except UnreadableFile as exc:
            raise IdsFileError(f"cannot read the ids file {path}: {exc}") from None
        self._apply(text, signature)

    def current(self) -> tuple[str, ...]:
        with self._lock:
            self._refresh()
            return self._current

    def reload(self) -> None:
        """Read the file now, even if its size, time and inode look unchanged."""
        with self._lock:
            self._signature = None
            self._refresh()

    def _refresh(self) -> None:
        try:
            if path_signature(self.path) == self._signature:
                return
            signature, text = _read(self.path)
        except (OSError, UnreadableFile) as exc:
            self._failed(why(exc))
            return
        if self._broken is not None:
            log.info("the ids file %s is readable again", self.path)
            self._broken = None
        before = set(self._current)
        self._apply(text, signature)
        after = set(self._current)
        log.info(
            "re-read the ids file %s: %d ids, %d added, %d removed",
            self.path,
            len(self._current),
            len(after - before),
            len(before - after),
        )

    def _failed(self, why: str) -> None:
        # Every round asks; a file that stays broken must not log on every scrape.
        if why == self._broken:
            return
        log.warning(
            "cannot read the ids file %s, keeping the last good set of %d ids: %s",
            self.path,
            len(self._current),
            why,
        )
        self._broken = why

    def _apply(self, text: str, signature: Signature) -> None:
        ids, bad = parse_ids(text, self._valid)
        self._warn_bad_lines(bad)
        ids_tuple = tuple(ids)
        # The same tuple while nothing changed lets TrackedIds skip re-joining.
        if ids_tuple != self._current:
            self._current = ids_tuple
        self._signature = signature

    def _warn_bad_lines(self, bad: list[BadLine]) -> None:
        for line in bad[:BAD_LINES_WARNED]:
            log.warning(
                "skipping line %d of the ids file %s: %r is not an import id (%s)",
                line.number,
                self.path,
                line.text[:100],
                self._rule,
            )
        if len(bad) > BAD_LINES_WARNED:
            log.warning(
                "... and %d more bad lines in the ids file %s",
                len(bad) - BAD_LINES_WARNED,
                self.path,
            )
