"""Reading a file that anyone may have put in place: regular files only, never blocking.

A named pipe opened for reading waits for a writer, a device may never end, and a
runaway file can be larger than memory. Every file the exporter reads (the ids
file, the key file, the web configuration, certificates) goes through here.
"""

from __future__ import annotations

import os
import stat as stat_kind
from pathlib import Path

# Non-blocking: opening a named pipe for reading would wait for a writer. Without a
# controlling terminal: a tty named as one of our files must not become ours.
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

_KINDS = (
    (stat_kind.S_ISDIR, "a directory"),
    (stat_kind.S_ISFIFO, "a named pipe (FIFO)"),
    (stat_kind.S_ISCHR, "a character device"),
    (stat_kind.S_ISBLK, "a block device"),
    (stat_kind.S_ISSOCK, "a socket"),
)

Signature = tuple[int, int, int, int]


class UnreadableFile(Exception):
    """Why a file was not read, in words for a message (the path is the caller's to name)."""


def signature(stat: os.stat_result) -> Signature:
    # Inode and device catch a file replaced by rename (how editors and Kubernetes
    # ConfigMaps update files); size and mtime catch edits in place.
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def path_signature(path: Path) -> Signature | None:
    """What the file at ``path`` looks like now; None if it cannot be looked at."""
    try:
        return signature(path.stat())
    except OSError:
        return None


def read_regular_file(path: Path, max_bytes: int) -> tuple[Signature, bytes]:
    """The signature and contents of the regular file at ``path`` (symlinks followed).

    Raises :class:`UnreadableFile` for anything else, or more than ``max_bytes``.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise UnreadableFile(why(exc)) from exc
    try:
        with os.fdopen(fd, "rb") as file:
            # The descriptor, not the path: the file may be swapped between two calls.
            stat = os.fstat(fd)
            if not stat_kind.S_ISREG(stat.st_mode):
                raise UnreadableFile(f"it is {_kind(stat.st_mode)}, not a regular file")
            data = file.read(max_bytes + 1)
    except OSError as exc:
        raise UnreadableFile(why(exc)) from exc
    if len(data) > max_bytes:
        raise UnreadableFile(f"it is larger than {_size(max_bytes)}")
    return signature(stat), data


def read_text_file(path: Path, max_bytes: int) -> tuple[Signature, str]:
    """:func:`read_regular_file`, decoded as UTF-8."""
    found, data = read_regular_file(path, max_bytes)
    try:
        return found, data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(f"it is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "an unusual kind of file")


def _size(count: int) -> str:
    mib, kib = count / (1024 * 1024), count / 1024
    return f"{mib:g} MiB" if mib >= 1 else f"{kib:g} KiB"
