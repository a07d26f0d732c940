"""The SQLite store keeps every import across restarts, crashes and full disks, and refuses
a file it must not touch (another exporter's, corrupt, newer, not a file) without touching it."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from elevate_import_exporter.core.model import DOCUMENTED_STATUSES, FINAL_STATUSES
from elevate_import_exporter.core.records import SOURCES, ImportRecord, Query
from elevate_import_exporter.lifecycle.store import MIGRATIONS, SCHEMA_VERSION, Store, StoreError
from tests.support import finishes, need_tool

Fingerprint = tuple[str, int, int, int, list[str]]

# Python run as a separate process: what another exporter, a crashed one or the sqlite3
# shell does to the file, which a second Store in this process could not show.
PRELUDE = """
import json, os, sys
from elevate_import_exporter.core.records import ImportRecord
from elevate_import_exporter.lifecycle.store import Store, StoreError
path = sys.argv[1]
"""


def record(n: int, **changes: Any) -> ImportRecord:
    base = ImportRecord(id=f"imp-{n}", source="api", first_seen=1_700_000_000.25 + n)
    return dataclasses.replace(base, **changes)


@contextlib.contextmanager
def shell(db: Path) -> Iterator[sqlite3.Connection]:
    """A plain connection, as the sqlite3 shell makes one; committed and closed after."""
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        yield conn


def fingerprint(path: Path) -> Fingerprint:
    """What must not change when a file is refused: bytes, size, mode, mtime, neighbours."""
    found = path.stat()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    neighbours = sorted(p.name for p in path.parent.iterdir())
    return digest, found.st_size, found.st_mode, found.st_mtime_ns, neighbours


def python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", PRELUDE + code, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def refusal(path: Path) -> str:
    with pytest.raises(StoreError) as caught:
        Store.open(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert caught.value.path == str(path)
    return caught.value.problem


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
def store(db: Path) -> Iterator[Store]:
    opened = Store.open(db)
    yield opened
    opened.close()


def filled(db: Path, count: int) -> Path:
    """``db`` closed cleanly with ``count`` records of realistic size in it."""
    opened = Store.open(db)
    labels = (("feed", "products-nightly"), ("run", "build-4711"))
    opened.save([record(n, labels=labels, message="m" * 120) for n in range(count)])
    opened.close()
    return db


# --- Creating, reading and writing -------------------------------------------------------


def test_a_new_store_creates_its_folders_private_and_its_file_0600_in_wal_mode(
    tmp_path: Path,
) -> None:
    db = tmp_path / "a" / "b" / "store.db"
    old_umask = os.umask(0)  # the modes must come from the store, not from a strict umask
    try:
        opened = Store.open(db)
    finally:
        os.umask(old_umask)
    try:
        opened.register([record(1)])
        assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
        assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700
        for name in ("store.db", "store.db-wal", "store.db-shm"):
            assert stat.S_IMODE((db.parent / name).stat().st_mode) == 0o600, name
    finally:
        opened.close()
    header = db.read_bytes()[:100]  # merged from the WAL into the file on close
    assert header[18:20] == b"\x02\x02"  # WAL for readers and writers
    assert int.from_bytes(header[60:64], "big") == SCHEMA_VERSION == 2


def test_every_field_of_a_record_survives_closing_and_reopening(db: Path) -> None:
    full = ImportRecord(
        id="imp-1",
        source="file",
        first_seen=1_700_000_000.125,
        type="PRODUCTS",
        labels=(("feed", "nightly ÄÖ 🚀"), ("run", 'with "quotes" and \\')),
        status="FAILURE",
        message="Line 3: unexpected ',' — ünïcödé",
        status_since=1_700_000_100.5,
        last_answer=1_700_000_200.75,
        final_at=1_700_000_100.5,
        retired_at=1_700_086_500.0,
    )
    with_nones = record(2)
    with contextlib.closing(Store.open(db)) as opened:
        opened.save([full, with_nones])
    with contextlib.closing(Store.open(db)) as reopened:
        assert reopened.load() == [full, with_nones]
        assert reopened.get("imp-1") == full
        assert reopened.get("imp-2") == with_nones
        assert reopened.get("imp-3") is None


def test_labels_are_kept_as_a_json_object_that_the_sqlite3_shell_can_read(db: Path) -> None:
    with contextlib.closing(Store.open(db)) as opened:
        opened.register([record(1, labels=(("feed", "f1"), ("run", "r9")))])
    with shell(db) as conn:
        text = conn.execute("SELECT labels FROM imports WHERE id = 'imp-1'").fetchone()[0]
    assert json.loads(text) == {"feed": "f1", "run": "r9"}


def test_register_inserts_only_new_ids_and_the_first_registration_wins(store: Store) -> None:
    first = record(1, type="PRODUCTS", labels=(("feed", "a"),))
    assert store.register([first, record(2)]) == [True, True]
    again = record(1, type="OTHER", first_seen=1.0, labels=(("feed", "b"),))
    # A known id, a new one, and the new one twice in one batch.
    assert store.register([again, record(3), record(3, type="LATE")]) == [False, True, False]
    assert store.get("imp-1") == first
    assert store.get("imp-3") == record(3)
    assert [r.id for r in store.load()] == ["imp-1", "imp-2", "imp-3"]


def test_register_of_nothing_returns_nothing(store: Store) -> None:
    assert store.register([]) == []
    assert store.load() == []


def test_save_replaces_whole_records_and_inserts_new_ones(store: Store) -> None:
    store.register([record(1, type="PRODUCTS", labels=(("feed", "a"),))])
    answered = record(1, type="PRODUCTS", status="SUCCESS", final_at=5.0, labels=())
    store.save([answered, record(2, status="WAITING")])
    assert store.load() == [answered, record(2, status="WAITING")]


@pytest.mark.parametrize("write", ["register", "save"])
def test_a_batch_with_one_bad_record_writes_none_of_it(store: Store, write: str) -> None:
    store.register([record(0)])
    bad = dataclasses.replace(record(3), first_seen=None)  # type: ignore[arg-type]  # NOT NULL
    batch = [record(1), record(2), bad, record(4)]
    with pytest.raises(StoreError, match=r"cannot write; nothing was changed \(SQLITE_CONSTRAINT"):
        getattr(store, write)(batch)
    assert store.load() == [record(0)]
    assert store.register([record(1)]) == [True]  # and the next transaction is a fresh one


def test_retire_marks_only_the_given_ids_and_ignores_unknown_ones(store: Store) -> None:
    store.register([record(1), record(2)])
    store.retire({"imp-1": 123.5, "unknown": 9.0})
    assert store.get("imp-1") == record(1, retired_at=123.5)
    assert store.get("imp-2") == record(2)
    assert store.get("unknown") is None


def test_delete_says_whether_the_id_was_there(store: Store) -> None:
    store.register([record(1)])
    assert store.delete("imp-1") is True
    assert store.delete("imp-1") is False
    assert store.load() == []


def test_purge_deletes_rows_retired_before_the_cutoff_except_the_kept_ones(store: Store) -> None:
    store.register([record(n) for n in range(6)])
    store.retire({"imp-0": 10.0, "imp-1": 19.9, "imp-2": 20.0, "imp-3": 30.0, "imp-4": 5.0})
    # More kept ids than SQLite takes as parameters of one statement.
    keep = {"imp-4", *(f"other-{n}" for n in range(40_000))}
    assert store.purge(20.0, keep=keep) == 2
    assert [r.id for r in store.load()] == ["imp-2", "imp-3", "imp-4", "imp-5"]
    assert store.purge(100.0) == 3
    assert [r.id for r in store.load()] == ["imp-5"]


# --- Queries: compared with a plain reading of the rules -----------------------------------


def history(count: int, seed: int = 7) -> list[ImportRecord]:
    """Varied records; few distinct times, so that equal times (ordered by id) occur."""
    rng = random.Random(seed)
    made = []
    for n in range(count):
        status = rng.choice((None, *DOCUMENTED_STATUSES))
        first_seen = float(rng.randrange(100))
        final_at = first_seen + rng.randrange(50) if status in FINAL_STATUSES else None
        retired = rng.random() < 0.3
        made.append(
            ImportRecord(
                id=f"imp-{rng.randrange(10**6):06d}-{n}",
                source=rng.choice(SOURCES),
                first_seen=first_seen,
                type=rng.choice(("", "PRODUCTS", "ADS")),
                status=status,
                final_at=final_at,
                retired_at=(final_at or first_seen) + 60 if retired else None,
            )
        )
    return made


def expected(records: list[ImportRecord], **filters: Any) -> list[ImportRecord]:
    def when(r: ImportRecord) -> float:
        return r.first_seen if r.final_at is None else r.final_at

    def matches(r: ImportRecord) -> bool:
        checks = [
            filters.get("status") in (None, r.status),
            filters.get("type") in (None, r.type),
            filters.get("source") in (None, r.source),
            filters.get("since") is None or when(r) >= filters["since"],
            filters.get("finished") in (None, r.final_at is not None or r.retired),
            filters.get("retired") in (None, r.retired),
        ]
        return all(checks)

    return sorted(filter(matches, records), key=lambda r: (-when(r), r.id))


FILTERS: list[dict[str, Any]] = [
    {},
    {"status": "FAILURE"},
    {"status": "NOT_FOUND", "retired": True},
    {"type": "PRODUCTS"},
    {"type": ""},
    {"source": "proxy"},
    {"since": 60.0},
    {"since": 60.5, "status": "SUCCESS"},
    {"finished": True},
    {"finished": False},
    {"retired": True},
    {"retired": False, "finished": True},
    {"status": "FAILURE", "type": "ADS", "source": "api", "since": 20.0, "finished": True},
    {"status": "NO_SUCH_STATUS"},
    {"since": 1e12},
]


@pytest.mark.parametrize("filters", FILTERS, ids=[json.dumps(f) for f in FILTERS])
def test_a_query_gives_the_matching_records_newest_first_and_their_total(
    store: Store, filters: dict[str, Any]
) -> None:
    records = history(400)
    store.save(records)
    want = expected(records, **filters)
    page, total = store.query(Query(**filters, limit=1000))
    assert (page, total) == (want, len(want))
    for limit, offset in (
        (10, 0),
        (7, 5),
        (25, max(0, len(want) - 3)),
        (5, len(want) + 10),
        (0, 0),
    ):
        assert store.query(Query(**filters, limit=limit, offset=offset)) == (
            want[offset : offset + limit],
            len(want),
        )


def test_a_query_answers_the_first_hundred_by_default(store: Store) -> None:
    records = history(150)
    store.save(records)
    page, total = store.query()
    assert (page, total) == (expected(records)[:100], 150)


def test_a_query_refuses_a_negative_page(store: Store) -> None:
    with pytest.raises(ValueError, match="negative"):
        store.query(Query(limit=-1))
    with pytest.raises(ValueError, match="negative"):
        store.query(Query(offset=-1))


def test_a_filter_value_is_data_not_sql(store: Store) -> None:
    store.register([record(1, type="PRODUCTS")])
    for nasty in ("' OR 1=1 --", "PRODUCTS' --", "%", "*"):
        assert store.query(Query(type=nasty)) == ([], 0)
        assert store.get(nasty) is None
    assert store.query(Query(type="PRODUCTS"))[1] == 1


@pytest.mark.parametrize(
    "query",
    [
        "SELECT id FROM imports ORDER BY coalesce(final_at, first_seen) DESC, id LIMIT 100",
        "SELECT id FROM imports WHERE status = 'FAILURE'"
        " AND coalesce(final_at, first_seen) >= 5 ORDER BY coalesce(final_at, first_seen) DESC,"
        " id LIMIT 100",
        "SELECT id FROM imports WHERE type = 'ADS'"
        " ORDER BY coalesce(final_at, first_seen) DESC, id LIMIT 100",
        "SELECT id FROM imports WHERE source = 'api'"
        " ORDER BY coalesce(final_at, first_seen) DESC, id LIMIT 100",
        "SELECT id FROM imports WHERE retired_at < 5",
    ],
)
def test_the_history_queries_are_served_by_an_index_without_sorting(db: Path, query: str) -> None:
    filled(db, 10)
    with shell(db) as conn:
        plan = " ".join(str(row[-1]) for row in conn.execute(f"EXPLAIN QUERY PLAN {query}"))
    assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, plan
    assert "TEMP B-TREE" not in plan, plan


def test_the_in_memory_store_behaves_like_a_file(tmp_path: Path) -> None:
    memory = Store.open(None)
    assert memory.path is None
    assert memory.register([record(1), record(1)]) == [True, False]
    memory.save(history(50))
    memory.retire({"imp-1": 1.0})
    assert memory.query(Query(retired=True))[1] == len(expected(memory.load(), retired=True))
    memory.close()
    memory.close()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(StoreError, match=r"^:memory:: the store is closed$"):
        memory.load()


def test_every_method_is_safe_to_call_from_many_threads_at_once(store: Store) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(worker: int) -> None:
        try:
            start.wait()
            for n in range(40):
                mine = record(worker * 1000 + n)
                assert store.register([mine]) == [True]
                store.save([dataclasses.replace(mine, status="WAITING")])
                store.query(Query(status="WAITING", limit=5))
                assert store.get(mine.id) is not None
                if n % 10 == 0:
                    store.retire({mine.id: float(n)})
                    store.load()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    records = store.load()
    assert len(records) == 8 * 40
    assert all(r.status == "WAITING" for r in records)
    assert store.query(Query(retired=True))[1] == 8 * 4


def test_a_closed_store_answers_every_call_with_a_store_error(db: Path) -> None:
    opened = Store.open(db)
    opened.close()
    opened.close()  # idempotent
    calls: list[Callable[[], object]] = [
        opened.load,
        lambda: opened.get("imp-1"),
        lambda: opened.register([record(1)]),
        lambda: opened.save([record(1)]),
        lambda: opened.retire({"imp-1": 1.0}),
        lambda: opened.delete("imp-1"),
        lambda: opened.purge(1.0),
        opened.query,
    ]
    for call in calls:
        with pytest.raises(StoreError, match="the store is closed"):
            call()


def test_a_store_error_is_one_line_naming_the_file() -> None:
    error = StoreError("data/x.db", "disk I/O error\nat page 4\r\n")
    assert str(error) == "data/x.db: disk I/O error at page 4"
    assert (error.path, error.problem) == ("data/x.db", "disk I/O error at page 4")


# --- One exporter per file; readers welcome -------------------------------------------------

OPEN_AND_SAY = """
try:
    Store.open(path).register([ImportRecord(id="from-the-other", source="api", first_seen=1.0)])
except StoreError as exc:
    print(exc)
    sys.exit(2)
print("opened")
"""


def test_a_second_exporter_process_is_refused_while_the_store_is_open(db: Path) -> None:
    holder = Store.open(filled(db, 20))
    try:
        before = fingerprint(db)
        refused = python(OPEN_AND_SAY, str(db))
        assert refused.returncode == 2, refused.stderr
        assert refused.stdout == f"{db}: locked by another process (another exporter?)\n"
        assert fingerprint(db) == before
        assert holder.register([record(99)]) == [True]  # the holder is not disturbed
    finally:
        holder.close()
    after_close = python(OPEN_AND_SAY, str(db))
    assert (after_close.returncode, after_close.stdout) == (0, "opened\n"), after_close.stderr


def test_a_second_open_in_the_same_process_is_refused_and_leaves_the_first_working(
    db: Path,
) -> None:
    first = Store.open(db)
    try:
        first.register([record(1)])
        with pytest.raises(StoreError, match="already open in this process"):
            Store.open(db)
        with pytest.raises(StoreError, match="already open in this process"):
            Store.open(db.parent / "." / db.name)  # another spelling, the same file
        assert first.register([record(2)]) == [True]
    finally:
        first.close()
    with contextlib.closing(Store.open(db)) as again:
        assert [r.id for r in again.load()] == ["imp-1", "imp-2"]


READ_LIKE_THE_SHELL = """
import sqlite3
shell = sqlite3.connect(path)
print(shell.execute("SELECT count(*), max(first_seen) FROM imports").fetchone())
"""


def test_another_process_can_read_the_database_while_the_exporter_writes(db: Path) -> None:
    with contextlib.closing(Store.open(db)) as opened:
        opened.register([record(n) for n in range(250)])
        reader = python(READ_LIKE_THE_SHELL, str(db))
        assert reader.stdout == f"(250, {record(249).first_seen})\n", reader.stderr
        opened.register([record(250)])  # and the reader left nothing in the way
        assert python(READ_LIKE_THE_SHELL, str(db)).stdout.startswith("(251, ")


# --- Crashes ------------------------------------------------------------------------------

REGISTER_THEN_WAIT = """
store = Store.open(path)
for n in range(1000):
    one = ImportRecord(id=f"imp-{n}", source="api", first_seen=1_700_000_000.25 + n,
                       labels=(("feed", f"feed-{n % 7}"),))
    assert store.register([one]) == [True]
print("registered 1000", flush=True)
sys.stdin.read()
"""


def test_every_registration_survives_a_sigkill_right_after_it_was_answered(db: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", PRELUDE + REGISTER_THEN_WAIT, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b"registered 1000\n"
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    # A kill leaves the log of committed transactions beside the file, not yet merged.
    assert (db.parent / "store.db-wal").stat().st_size > 0
    assert (db.parent / "store.db-shm").exists()
    with contextlib.closing(Store.open(db)) as reopened:
        records = reopened.load()
    assert len(records) == 1000
    by_id = {r.id: r for r in records}
    for n in range(1000):
        assert by_id[f"imp-{n}"].first_seen == 1_700_000_000.25 + n
        assert by_id[f"imp-{n}"].labels == (("feed", f"feed-{n % 7}"),)


# --- Write failures: real ones, the caller answers 503 and keeps running ---------------------

FAIL_A_WRITE = """
import resource, signal
store = Store.open(path)
store.register([ImportRecord(id=f"kept-{n}", source="api", first_seen=1.0) for n in range(10)])
if sys.argv[2] == "file-size-limit":
    # Past this size the kernel refuses to grow a file (EFBIG), as a full disk would.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    sizes = [os.path.getsize(path + suffix) for suffix in ("", "-wal")]
    resource.setrlimit(resource.RLIMIT_FSIZE, (max(sizes) + 64 * 1024, hard))
big = [ImportRecord(id=f"big-{n}", source="api", first_seen=2.0, message="x" * 200)
       for n in range(20_000)]
out = {}
try:
    store.save(big)
except StoreError as exc:
    out["error"] = str(exc)
out["after_failure"] = [r.id for r in store.load()]
out["registered_after"] = store.register([ImportRecord(id="later", source="api", first_seen=3.0)])
out["reloaded"] = len(store.load())
store.close()
print(json.dumps(out))
"""


def assert_failed_cleanly(result: subprocess.CompletedProcess[str], path: str) -> None:
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["error"].startswith(f"{path}: cannot write; nothing was changed (SQLITE_")
    assert out["after_failure"] == [f"kept-{n}" for n in range(10)]  # nothing half-written
    assert out["registered_after"] == [True]  # the store keeps working
    assert out["reloaded"] == 11


def test_a_write_the_disk_refuses_is_a_store_error_and_nothing_of_it_is_kept(db: Path) -> None:
    result = python(FAIL_A_WRITE, str(db), "file-size-limit")
    assert_failed_cleanly(result, str(db))
    with contextlib.closing(Store.open(db)) as reopened:
        assert len(reopened.load()) == 11
        assert reopened.get("big-0") is None


def test_a_full_filesystem_is_a_store_error_and_the_store_keeps_working(tmp_path: Path) -> None:
    # A real full disk: a small tmpfs, mounted in a mount namespace of the child's own.
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    unshare = need_tool("unshare")
    mount = 'mount -t tmpfs -o size=1m tmpfs "$1" && exec "$2" -c "$3" "$1/store.db" full'
    command = [unshare, "--mount", "--propagation", "private", "sh", "-c", mount, "sh"]
    result = subprocess.run(
        [*command, str(tmp_path), sys.executable, PRELUDE + FAIL_A_WRITE],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if "mount" in result.stderr and result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    assert_failed_cleanly(result, str(tmp_path / "store.db"))
    assert "database or disk is full" in json.loads(result.stdout)["error"]


@pytest.fixture
def read_only() -> Iterator[Callable[[Path], None]]:
    """Makes a file read-only for this process: chmod, or for root the immutable flag."""
    made: list[Path] = []

    def make(path: Path) -> None:
        if os.geteuid() != 0:
            path.chmod(0o400)
            return
        chattr = need_tool("chattr")  # root writes whatever the mode says
        if subprocess.run([chattr, "+i", str(path)], check=False).returncode:
            pytest.skip("this filesystem has no immutable flag")
        made.append(path)

    yield make
    for path in made:
        subprocess.run([need_tool("chattr"), "-i", str(path)], check=True)


def test_a_read_only_database_file_is_refused_untouched(
    db: Path, read_only: Callable[[Path], None]
) -> None:
    filled(db, 5)
    read_only(db)
    before = fingerprint(db)
    assert refusal(db) == "not writable (a read-only file?)"
    assert fingerprint(db) == before


# --- Files that must not be touched ----------------------------------------------------------


def garbage(db: Path) -> None:
    db.write_bytes(random.Random(3).randbytes(64 * 1024))


def header_only(db: Path) -> None:
    db.write_bytes(b"SQLite format 3\x00" + b"\xff" * 84)


def truncated(db: Path) -> None:
    filled(db, 5000)
    size = db.stat().st_size
    assert size > 512 * 1024
    with db.open("r+b") as file:
        file.truncate(size // 2)


def page_overwritten(db: Path) -> None:
    filled(db, 5000)
    middle = db.stat().st_size // 2 // 4096 * 4096  # a page of the table or of an index
    with db.open("r+b") as file:
        file.seek(middle)
        file.write(random.Random(5).randbytes(4096))


def newer_schema(db: Path) -> None:
    filled(db, 3)
    with shell(db) as conn:
        conn.execute("PRAGMA user_version = 7")


def someone_elses(db: Path) -> None:
    with shell(db) as conn:
        conn.execute("CREATE TABLE invoices (number INTEGER PRIMARY KEY, total REAL)")
        conn.execute("INSERT INTO invoices VALUES (1, 99.5)")


@pytest.mark.parametrize(
    ("spoil", "problem"),
    [
        (garbage, r"not an SQLite database \(or corrupt\)"),
        (header_only, r"not an SQLite database \(or corrupt\): SQLITE_NOTADB: .+"),
        (truncated, r"not an SQLite database \(or corrupt\): SQLITE_CORRUPT: .+"),
        (page_overwritten, r"not an SQLite database \(or corrupt\): .+"),
        (newer_schema, rf"schema version 7 is newer than this exporter's \({SCHEMA_VERSION}\)"),
        (someone_elses, r"an SQLite database of something else \(tables, no schema version\)"),
    ],
)
def test_a_file_the_store_must_not_use_is_refused_and_left_exactly_as_it_was(
    db: Path, spoil: Callable[[Path], None], problem: str
) -> None:
    spoil(db)
    before = fingerprint(db)
    assert re.fullmatch(problem, refusal(db))
    assert fingerprint(db) == before
    assert re.fullmatch(problem, refusal(db))  # and the refusal released the file


def test_an_empty_file_is_a_new_database(db: Path) -> None:
    db.touch(mode=0o640)
    with contextlib.closing(Store.open(db)) as opened:
        assert opened.register([record(1)]) == [True]
    with contextlib.closing(Store.open(db)) as reopened:
        assert reopened.load() == [record(1)]


def untouched(path: Path) -> tuple[int, int, int, int, int]:
    """The entry itself, not its access time: following a symlink may update that."""
    found = path.lstat()
    return found.st_mode, found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns


def fifo(path: Path) -> None:
    os.mkfifo(path)


def directory(path: Path) -> None:
    path.mkdir()


def device_link(path: Path) -> None:
    path.symlink_to("/dev/zero")


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (fifo, "a named pipe (FIFO)"),
        (directory, "a directory"),
        (device_link, "a character device"),
    ],
)
def test_something_other_than_a_regular_file_is_refused_without_blocking(
    db: Path, make: Callable[[Path], None], kind: str
) -> None:
    make(db)
    before = untouched(db)
    problems: list[str] = []
    assert finishes(lambda: problems.append(refusal(db))) is None
    assert problems == [f"it is {kind}, not a regular file"]
    assert untouched(db) == before
    assert [p.name for p in db.parent.iterdir()] == [db.name]


def test_a_symlink_to_a_database_file_is_followed(tmp_path: Path) -> None:
    real = filled(tmp_path / "real" / "store.db", 3)
    link = tmp_path / "link.db"
    link.symlink_to(real)
    with contextlib.closing(Store.open(link)) as opened:
        assert len(opened.load()) == 3
        with pytest.raises(StoreError, match="already open in this process"):
            Store.open(real)


def test_a_symlink_loop_is_refused_with_a_reason(db: Path) -> None:
    db.symlink_to(db.parent / "other.db")
    (db.parent / "other.db").symlink_to(db)
    assert re.fullmatch(r"cannot open \(.*[Ss]ymlink.*\)|cannot open \(.*levels.*\)", refusal(db))


def test_a_folder_that_cannot_be_created_is_named(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    problem = refusal(tmp_path / "file" / "sub" / "store.db")
    assert problem.startswith(f"cannot create the folder {tmp_path / 'file' / 'sub'}")


# --- Migrations --------------------------------------------------------------------------------


def add_note(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE imports ADD COLUMN note TEXT NOT NULL DEFAULT ''")
    conn.execute("UPDATE imports SET note = 'migrated'")


def test_a_database_of_this_version_is_migrated_to_the_next_and_keeps_its_rows(
    db: Path,
) -> None:
    filled(db, 50)
    with contextlib.closing(Store.open(db)) as old:
        rows = old.load()
    with contextlib.closing(Store.open(db, migrations=(*MIGRATIONS, add_note))) as migrated:
        assert migrated.load() == rows
        assert migrated.register([record(999)]) == [True]
    with shell(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
        notes = conn.execute("SELECT note, count(*) FROM imports GROUP BY note").fetchall()
    assert notes == [("", 1), ("migrated", 50)]
    # An exporter of the older version must not use the migrated file.
    newer = SCHEMA_VERSION + 1
    assert refusal(db) == f"schema version {newer} is newer than this exporter's ({SCHEMA_VERSION})"


def half_then_python_error(conn: sqlite3.Connection) -> None:
    add_note(conn)
    raise RuntimeError("step 2 gave up half-way")


def half_then_sql_error(conn: sqlite3.Connection) -> None:
    add_note(conn)
    conn.execute("ALTER TABLE no_such_table ADD COLUMN x")


@pytest.mark.parametrize(
    ("step", "why"),
    [
        (half_then_python_error, "step 2 gave up half-way"),
        (half_then_sql_error, "no such table: no_such_table"),
    ],
)
def test_a_failing_migration_leaves_the_database_as_it_was(
    db: Path, step: Callable[[sqlite3.Connection], None], why: str
) -> None:
    filled(db, 50)
    before = fingerprint(db)
    with pytest.raises(StoreError) as caught:
        Store.open(db, migrations=(*MIGRATIONS, step))
    failed = f"migration to schema version {SCHEMA_VERSION + 1} failed ("
    assert str(caught.value).startswith(f"{db}: {failed}")
    assert why in str(caught.value)
    assert fingerprint(db) == before
    with contextlib.closing(Store.open(db)) as unchanged:
        assert len(unchanged.load()) == 50
    with shell(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        columns = [row[1] for row in conn.execute("PRAGMA table_info(imports)")]
    assert "note" not in columns
