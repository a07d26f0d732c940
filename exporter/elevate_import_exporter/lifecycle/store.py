"""Every tracked import kept in one SQLite file, so that a restart forgets nothing.

Opening looks before it touches: a regular file (or nothing yet) no other exporter holds,
an intact SQLite database of a known schema; only then is it opened for writing, switched
to WAL and migrated. Each write is one transaction, synced before it returns (FULL).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from elevate_import_exporter.core import files
from elevate_import_exporter.core.records import (
    ANY_ID,
    LATEST_TIME,
    FieldError,
    IdRule,
    ImportRecord,
    Query,
    damage_text,
    record_of_row,
    stored_labels,
)

log = logging.getLogger(__name__)

# The last time imports of a type ended with a status, by their allowlisted labels.
LastFinal = tuple[str, str, Mapping[str, str], float]

_EVERYTHING = Query()

DEFAULT_PATH = "data/elevate-import-exporter.db"
# MIGRATIONS[n] takes version n to n + 1 in the open's transaction: it must not commit.
Migration = Callable[[sqlite3.Connection], None]

_WHEN = "coalesce(final_at, first_seen)"  # newest first: when it ended, else when it began
# Columns are named as the record's fields; changing the record needs a migration step.
_FIELDS = tuple(field.name for field in dataclasses.fields(ImportRecord))
_COLUMNS = ", ".join(_FIELDS)
# Each index ends in the page order, so a filtered page is read in order, not sorted.
_SCHEMA_V1 = f"""
CREATE TABLE imports (id TEXT PRIMARY KEY NOT NULL, source TEXT NOT NULL,
    first_seen REAL NOT NULL, type TEXT NOT NULL DEFAULT '', labels TEXT NOT NULL DEFAULT '{{}}',
    status TEXT, message TEXT NOT NULL DEFAULT '', status_since REAL, last_answer REAL,
    final_at REAL, retired_at REAL) WITHOUT ROWID;
CREATE INDEX imports_by_when ON imports ({_WHEN} DESC, id);
CREATE INDEX imports_by_status ON imports (status, {_WHEN} DESC, id);
CREATE INDEX imports_by_type ON imports (type, {_WHEN} DESC, id);
CREATE INDEX imports_by_source ON imports (source, {_WHEN} DESC, id);
CREATE INDEX imports_by_retired ON imports (retired_at)"""


def _create_v1(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V1.split(";"):
        conn.execute(statement)


# Version 2: when Elevate accepted an import and when it left the queue (issue 22's
# durations), and the last time each type ended with each status, by the allowlisted
# labels: kept apart from the imports, so that purging their history never loses it.
# Seeded from the imports kept so far, with all their labels (only the allowlisted ones
# are read back).
_SCHEMA_V2 = """
ALTER TABLE imports ADD COLUMN started_at REAL;
ALTER TABLE imports ADD COLUMN left_queue_at REAL;
CREATE TABLE last_finals (type TEXT NOT NULL, status TEXT NOT NULL, labels TEXT NOT NULL,
    at REAL NOT NULL, PRIMARY KEY (type, status, labels)) WITHOUT ROWID;
INSERT INTO last_finals SELECT type, status, labels, max(final_at) FROM imports
    WHERE final_at IS NOT NULL AND status IS NOT NULL GROUP BY type, status, labels;
INSERT INTO last_finals SELECT type, status, labels, max(retired_at) FROM imports
    WHERE final_at IS NULL AND status = 'NOT_FOUND' AND retired_at IS NOT NULL
    GROUP BY type, status, labels"""


def _to_v2(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V2.split(";"):
        conn.execute(statement)


MIGRATIONS: tuple[Migration, ...] = (_create_v1, _to_v2)
SCHEMA_VERSION: int = len(MIGRATIONS)

_INSERT = f"INSERT INTO imports ({_COLUMNS}) VALUES ({', '.join('?' * len(_FIELDS))})"  # noqa: S608
_UPSERT = " ".join(f"{name} = excluded.{name}," for name in _FIELDS[1:]).rstrip(",")
_KEEP_FINAL = (
    "INSERT INTO last_finals (type, status, labels, at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (type, status, labels) DO UPDATE SET at = max(at, excluded.at)"
)
# Rows of the last-final table read at most: types x statuses x capped values keep it far
# below this; more is a table someone filled by hand.
MAX_LAST_FINALS = 100_000
_HEADER = b"SQLite format 3\x00"
# Enough damaged rows to see what is wrong, without a line for each row of a bad restore.
WARNED_ROWS = 20


class StoreError(Exception):
    """The store cannot be opened, read or written; ``str()`` is one line naming the file."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = " ".join(problem.split())
        super().__init__(f"{path}: {self.problem}")


class Store:
    """The imports table of one database file, used by one exporter, safe across threads.

    A damaged row (a hand edit, a bad restore: see records.record_of_row) is skipped at
    :meth:`load`, named in a warning and counted, not refused with the whole store: the
    exporter keeps serving the others. The row is then left as it is in the file (never
    shown, written, retired, purged or deleted) until it is repaired and the exporter
    restarted; nothing of it is lost.
    """

    def __init__(self, conn: sqlite3.Connection, path: str | None, held: files.Held | None) -> None:
        self.path = path
        self._name = ":memory:" if path is None else path
        self._conn: sqlite3.Connection | None = conn
        self._held = held
        self._lock = threading.Lock()
        self._id_rule: IdRule = ANY_ID
        self._skipped: frozenset[object] = frozenset()  # ids as SQLite holds them

    @classmethod
    def open(cls, path: str | Path | None, migrations: Sequence[Migration] = MIGRATIONS) -> Store:
        """The store at ``path`` (None: in memory), checked, locked and migrated.
        Raises :class:`StoreError`, and then leaves a file that was there as it was."""
        name = ":memory:" if path is None else str(path)
        held, conn = None, None
        try:
            where = name if path is None else str(Path(name).resolve())  # where SQLite puts -wal
            if path is not None:
                files.make_private_folder(Path(where).parent)
                held = files.hold_file(where)
                _inspect(where, name, held[0], len(migrations))
            with _failing(name, "cannot open for writing"):
                conn = sqlite3.connect(where, check_same_thread=False, isolation_level=None)
                _set_up(conn, name, wal=path is not None)
            _migrate(conn, name, migrations)
        except BaseException as exc:
            if conn is not None:
                conn.close()
            files.let_go(held)  # after the connection is closed: see files.hold_file
            if isinstance(exc, files.UnreadableFile):
                raise StoreError(name, str(exc)) from exc
            if isinstance(exc, OSError | RuntimeError):  # RuntimeError: a symlink loop
                raise StoreError(name, f"cannot open ({_why(exc)})") from exc
            raise
        return cls(conn, None if path is None else name, held)

    def close(self) -> None:
        """Close the database, then release the lock; a second call does nothing."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):  # nothing is left to lose
                    conn.close()
                files.let_go(self._held)

    def load(self, id_rule: IdRule | None = None) -> list[ImportRecord]:
        """Every sound record, retired ones included, by id; damaged rows are skipped
        (see the class). ``id_rule``: the ids of the API in use (model.id_rule)."""
        damaged: list[tuple[object, FieldError]] = []
        records: list[ImportRecord] = []
        with self._reading() as conn:
            self._id_rule = id_rule or ANY_ID
            for row in conn.execute(f"SELECT {_COLUMNS} FROM imports ORDER BY id"):  # noqa: S608
                try:
                    records.append(self._record(row))
                except FieldError as exc:
                    damaged.append((row[0], exc))
            self._skipped = frozenset(import_id for import_id, _why in damaged)
            # A table of this connection only: pages leave the rows out in SQL, their
            # count too, without a variable per id; nothing of it reaches the file.
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS skipped (id PRIMARY KEY)")
            conn.execute("DELETE FROM temp.skipped")
            conn.executemany("INSERT INTO temp.skipped VALUES (?)", [(i,) for i in self._skipped])
        for import_id, problem in damaged[:WARNED_ROWS]:
            log.warning(
                "%s: skipping the damaged row of %s; the row stays in the file untouched and "
                "unused: repair or delete it (sqlite3 %s), then restart",
                *(self._name, damage_text(import_id, problem), self._name),
            )
        if len(damaged) > WARNED_ROWS:
            log.warning("%s: ... and %d more damaged rows", self._name, len(damaged) - WARNED_ROWS)
        return records

    @property
    def skipped(self) -> frozenset[object]:
        """The ids of the damaged rows :meth:`load` skipped, as SQLite holds them."""
        return self._skipped

    def get(self, import_id: str) -> ImportRecord | None:
        if import_id in self._skipped:
            return None
        with self._reading() as conn:
            sql = f"SELECT {_COLUMNS} FROM imports WHERE id = ?"  # noqa: S608
            row = conn.execute(sql, (import_id,)).fetchone()
            return None if row is None else self._record(row)

    def register(self, records: Sequence[ImportRecord]) -> list[bool]:
        """Insert each record whose id is new, in one committed transaction; True where new.
        A known id keeps its row as it is: the first registration wins."""
        damaged = [record.id for record in records if record.id in self._skipped]
        if damaged:
            raise StoreError(self._name, f"import {damaged[0]} has a damaged row (see the log)")
        with self._writing() as conn:
            sql = f"{_INSERT} ON CONFLICT (id) DO NOTHING"
            return [conn.execute(sql, _row(record)).rowcount == 1 for record in records]

    def save(self, records: Sequence[ImportRecord], finals: Sequence[LastFinal] = ()) -> None:
        """Insert or replace whole records, and keep the ``finals`` (type, status, labels,
        time) when newer than those kept, in one committed transaction."""
        rows = [_row(record) for record in records if record.id not in self._skipped]
        with self._writing() as conn:
            sql = f"{_INSERT} ON CONFLICT (id) DO UPDATE SET {_UPSERT}"
            conn.executemany(sql, rows)
            conn.executemany(_KEEP_FINAL, [_final_row(final) for final in finals])

    def retire(self, ids_at: Mapping[str, float], finals: Sequence[LastFinal] = ()) -> None:
        """Mark each id retired at its time, and keep the ``finals`` as :meth:`save` does,
        in one committed transaction."""
        pairs = [(at, i) for i, at in ids_at.items() if i not in self._skipped]
        with self._writing() as conn:
            conn.executemany("UPDATE imports SET retired_at = ? WHERE id = ?", pairs)
            conn.executemany(_KEEP_FINAL, [_final_row(final) for final in finals])

    def last_finals(self) -> list[LastFinal]:
        """The kept last time of each (type, status, labels); a damaged row is skipped with a
        warning (it only holds a time, which the next end of its kind writes again)."""
        kept: list[LastFinal] = []
        damaged = 0
        with self._reading() as conn:
            sql = "SELECT type, status, labels, at FROM last_finals LIMIT ?"
            for kind, status, labels, at in conn.execute(sql, (MAX_LAST_FINALS,)):
                try:
                    if not (isinstance(kind, str) and isinstance(status, str) and status):
                        raise FieldError("holds no text", "type")
                    at = _kept_time(at)
                    kept.append((kind, status, dict(stored_labels(labels)), at))
                except (FieldError, TypeError):
                    damaged += 1
        if damaged:
            log.warning("%s: skipping %d damaged rows of last_finals", self._name, damaged)
        return kept

    def delete(self, import_id: str) -> bool:  # False if it was not there
        if import_id in self._skipped:
            return False
        with self._writing() as conn:
            return conn.execute("DELETE FROM imports WHERE id = ?", (import_id,)).rowcount > 0

    def purge(self, retired_before: float, keep: Collection[str] = ()) -> int:
        """Delete the rows retired before ``retired_before``, except ids in ``keep``."""
        with self._writing() as conn:
            # Chosen here, not with NOT IN (?, ...): ``keep`` may be longer than SQLite allows.
            old = conn.execute("SELECT id FROM imports WHERE retired_at < ?", (retired_before,))
            spared = {*keep, *self._skipped}
            doomed = [row for row in old.fetchall() if row[0] not in spared]
            conn.executemany("DELETE FROM imports WHERE id = ?", doomed)
        return len(doomed)

    def query(self, query: Query = _EVERYTHING) -> tuple[list[ImportRecord], int]:
        """A page of the records ``query`` asks for (then by id), and how many match in all."""
        limit, offset = query.limit, query.offset
        if limit < 0 or offset < 0:
            raise ValueError(f"limit and offset must not be negative: {limit}, {offset}")
        values = {
            "status": query.status,
            "type": query.type,
            "source": query.source,
            "since": query.since,
        }
        where, params = _where(values, finished=query.finished, retired=query.retired)
        if self._skipped:
            where += f"{' AND' if where else ' WHERE'} id NOT IN temp.skipped"
        page = f"SELECT {_COLUMNS} FROM imports{where} ORDER BY {_WHEN} DESC, id LIMIT ? OFFSET ?"  # noqa: S608
        with self._reading() as conn:
            total = conn.execute(f"SELECT count(*) FROM imports{where}", params).fetchone()  # noqa: S608
            page_rows = conn.execute(page, [*params, limit, offset]).fetchall()
            return [self._record(row) for row in page_rows], int(total[0])

    def _record(self, row: tuple[Any, ...]) -> ImportRecord:
        return record_of_row(dict(zip(_FIELDS, row, strict=True)), self._id_rule)

    def _live(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(self._name, "the store is closed")
        return self._conn

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock, _failing(self._name, "cannot read the store"):
            yield self._live()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        with self._lock, _failing(self._name, "cannot write; nothing was changed"):
            conn = self._live()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):  # a failed COMMIT may have rolled back
                    conn.execute("ROLLBACK")
                raise


def _where(
    values: Mapping[str, Any], *, finished: bool | None, retired: bool | None
) -> tuple[str, list[Any]]:
    chosen = {name: value for name, value in values.items() if value is not None}
    terms = [f"{_WHEN} >= ?" if name == "since" else f"{name} = ?" for name in chosen]
    either = "(final_at IS NOT NULL OR retired_at IS NOT NULL)"
    flags = ((either, finished), ("retired_at IS NOT NULL", retired))
    terms += [term if wanted else f"NOT {term}" for term, wanted in flags if wanted is not None]
    return (f" WHERE {' AND '.join(terms)}" if terms else ""), list(chosen.values())


def _final_row(final: LastFinal) -> tuple[Any, ...]:
    kind, status, labels, at = final
    return kind, status, json.dumps(labels, sort_keys=True, separators=(",", ":")), at


def _kept_time(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldError("not a time", "at")
    if not (math.isfinite(value) and 0 <= value <= LATEST_TIME):
        raise FieldError("not a time", "at")
    return float(value)


def _row(record: ImportRecord) -> tuple[Any, ...]:
    labels = json.dumps(dict(record.labels), sort_keys=True, separators=(",", ":"))
    return tuple(labels if name == "labels" else getattr(record, name) for name in _FIELDS)


@contextlib.contextmanager
def _failing(name: str, doing: str) -> Iterator[None]:
    """sqlite3 errors as StoreError (disk full, I/O error, corrupt: the caller answers 503)."""
    try:
        yield
    except (sqlite3.Error, ValueError) as exc:  # ValueError: a hand-edited row
        raise StoreError(name, f"{doing} ({_why(exc)})") from exc


def _inspect(where: str, name: str, fd: int, newest: int) -> None:
    """Refuse a file that is not an intact database of a known schema, without writing."""
    size = os.fstat(fd).st_size
    wal = Path(where + "-wal").exists()
    if size > 0 and os.pread(fd, len(_HEADER), 0) != _HEADER:
        raise StoreError(name, "not an SQLite database (or corrupt)")
    if not os.access(where, os.R_OK | os.W_OK):
        raise StoreError(name, "not writable (a read-only file?)")
    if size == 0 and not wal:
        return  # a new database
    # Without a WAL the file alone is the database, and immutable reads it without making
    # -wal and -shm files beside it. With one (a killed exporter's), read through it.
    uri = Path(where).as_uri() + ("?mode=ro" if wal else "?mode=ro&immutable=1")
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > newest:
                problem = f"schema version {version} is newer than this exporter's ({newest})"
                raise StoreError(name, problem)
            verdict = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise StoreError(name, f"not an SQLite database (or corrupt): {_why(exc)}") from exc
    if verdict != "ok":
        raise StoreError(name, f"not an SQLite database (or corrupt): {verdict}")
    if version == 0 and tables:
        raise StoreError(name, "an SQLite database of something else (tables, no schema version)")


def _set_up(conn: sqlite3.Connection, name: str, *, wal: bool) -> None:
    conn.execute("PRAGMA busy_timeout = 5000")  # a reader such as the sqlite3 shell may lock
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if wal and str(mode).lower() != "wal":
        raise StoreError(name, f"cannot switch to WAL mode (journal mode stays {mode})")
    # FULL syncs the WAL at each commit: an answered registration survives a power loss
    # too, not only a killed process (NORMAL); it costs one fsync per transaction.
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(f"PRAGMA journal_size_limit = {16 * 1024 * 1024}")


def _migrate(conn: sqlite3.Connection, name: str, steps: Sequence[Migration]) -> None:
    """Bring the schema to version ``len(steps)`` in one transaction, or leave it as it was."""
    with _failing(name, "cannot prepare the schema"):
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for number in range(version, len(steps)):
                try:
                    steps[number](conn)
                except Exception as exc:
                    problem = f"migration to schema version {number + 1} failed ({_why(exc)})"
                    raise StoreError(name, problem) from exc
            if version < len(steps):
                conn.execute(f"PRAGMA user_version = {len(steps)}")
                # A new store is no news; an older one brought up to date is.
                level = logging.DEBUG if version == 0 else logging.INFO
                log.log(level, "%s: schema migrated from %d to %d", name, version, len(steps))
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    code = getattr(exc, "sqlite_errorname", None)
    return f"{code}: {exc}" if code else str(exc) or type(exc).__name__
