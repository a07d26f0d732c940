"""Reading a file that anyone may have put in place: regular files only, never blocking.

A named pipe opened for reading waits for a writer, a device may never end, and a
runaway file can be larger than memory. Every file the exporter reads (the ids
file, the key file, the web configuration, certificates) goes through here, and the
store's database file is opened, made and locked here before SQLite touches it.
"""

from __future__ import annotations

import contextlib
import fcntl
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
Held = tuple[int, tuple[int, int]]  # a descriptor, and its file's (device, inode)

# Files (device, inode) held in this process. Closing any descriptor of a file drops all
# the POSIX locks this process has on it, SQLite's too: so a second open in this process
# is refused before it opens (and closes) a descriptor of a file that is in use.
_HELD: set[tuple[int, int]] = set()


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


def make_private_folder(folder: Path) -> None:
    """``folder`` and its missing parents, each made 0700 (``makedirs`` would make the
    parents 0777 & ~umask); :class:`UnreadableFile` names the one that could not be made."""
    if folder.exists() or folder == folder.parent:
        return
    make_private_folder(folder.parent)
    try:
        folder.mkdir(mode=0o700)
    except OSError as exc:
        raise UnreadableFile(f"cannot create the folder {folder} ({why(exc)})") from exc


def hold_file(path: str) -> Held:
    """A descriptor of the regular file at ``path`` (made 0600 if missing), locked for
    this process alone; give it back with :func:`let_go`. Raises :class:`UnreadableFile`
    (or OSError if it cannot be opened at all)."""
    with contextlib.suppress(FileNotFoundError):
        _check_held(Path(path).stat())  # before a descriptor exists: see _HELD
    fd = os.open(path, _OPEN_FLAGS | os.O_CREAT, 0o600)
    found = os.fstat(fd)
    try:
        _check_held(found)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException as exc:
        os.close(fd)
        if isinstance(exc, BlockingIOError):
            raise UnreadableFile("locked by another process (another exporter?)") from exc
        raise
    _HELD.add((found.st_dev, found.st_ino))
    return fd, (found.st_dev, found.st_ino)


def let_go(held: Held | None) -> None:
    """Close a descriptor of :func:`hold_file` (its lock goes with it)."""
    if held is not None:
        os.close(held[0])
        _HELD.discard(held[1])


def _check_held(found: os.stat_result) -> None:
    if not stat_kind.S_ISREG(found.st_mode):
        raise UnreadableFile(f"it is {_kind(found.st_mode)}, not a regular file")
    if (found.st_dev, found.st_ino) in _HELD:
        raise UnreadableFile("already open in this process")


def why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "an unusual kind of file")


def _size(count: int) -> str:
    mib, kib = count / (1024 * 1024), count / 1024
    return f"{mib:g} MiB" if mib >= 1 else f"{kib:g} KiB"
