"""A store the exporter cannot use stops it at start with exit status 2 and one line that
names the file, the problem, the flag and its variable, and what to do instead."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from elevate_import_exporter.simulator import Simulator
from tests.conftest import SIM_KEY, ExporterProcess, ExporterProcessFor, exporter_env
from tests.support import free_port

FLAG, VARIABLE = "--storage.path", "ELEVATE_EXPORTER_STORAGE_PATH"
IN_MEMORY = '--storage.path ""'


def assert_one_line_naming_the_flag(stderr: str, *named: str) -> str:
    """The single error line of a refused start, checked; returned for more checks."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1, stderr
    line = errors[0]
    for name in (FLAG, VARIABLE, IN_MEMORY, *named):
        assert name in line, f"{name!r} not in {line!r}"
    return line


def refused(
    exporter_process: ExporterProcessFor, sim: Simulator, path: Path | str, *, by: str = "flag"
) -> ExporterProcess:
    """An exporter started on the store at ``path`` (given by flag or variable), ended."""
    args = ["--elevate.base-url", sim.url]
    env = {"ELEVATE_API_KEY": SIM_KEY}
    if by == "flag":
        args += [FLAG, str(path)]
    else:
        env[VARIABLE] = str(path)
    proc = exporter_process(*args, env=env, wait=False)
    assert proc.process.wait(timeout=60) == 2, proc.stderr()
    return proc


def under_a_file(tmp_path: Path) -> Path:
    (tmp_path / "file").write_text("not a folder\n")
    return tmp_path / "file" / "sub" / "store.db"


def a_folder(tmp_path: Path) -> Path:
    return tmp_path


def garbage(tmp_path: Path) -> Path:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database\n" * 100)
    return path


def newer_schema(tmp_path: Path) -> Path:
    path = tmp_path / "newer.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
        conn.execute("CREATE TABLE imports (id TEXT)")
    return path


def someone_elses(tmp_path: Path) -> Path:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id TEXT)")
    return path


def a_named_pipe(tmp_path: Path) -> Path:
    import os

    path = tmp_path / "pipe.db"
    os.mkfifo(path)
    return path


CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "folder-under-a-file": (under_a_file, "cannot create the folder"),
    "a-directory": (a_folder, "it is a directory"),
    "garbage": (garbage, "not an SQLite database"),
    "newer-schema": (newer_schema, "newer than this exporter"),
    "someone-elses-database": (someone_elses, "something else"),
    "a-named-pipe": (a_named_pipe, "named pipe"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_store_the_exporter_cannot_use_exits_2_naming_the_flag_and_what_to_do(
    exporter_process: ExporterProcessFor, simulator: Simulator, tmp_path: Path, case: str
) -> None:
    make, problem = CASES[case]
    path = make(tmp_path)
    proc = refused(exporter_process, simulator, path)
    assert_one_line_naming_the_flag(proc.stderr(), str(path), problem)


def test_a_store_given_by_its_variable_names_the_flag_and_the_variable_too(
    exporter_process: ExporterProcessFor, simulator: Simulator, tmp_path: Path
) -> None:
    proc = refused(exporter_process, simulator, tmp_path, by="variable")
    assert_one_line_naming_the_flag(proc.stderr(), str(tmp_path), "it is a directory")


def test_a_store_locked_by_another_exporter_names_the_flag_and_what_to_do(
    exporter_process: ExporterProcessFor, simulator: Simulator, tmp_path: Path
) -> None:
    path = tmp_path / "shared.db"
    args = ("--elevate.base-url", simulator.url, FLAG, str(path))
    exporter_process(*args, env={"ELEVATE_API_KEY": SIM_KEY})
    second = exporter_process(*args, env={"ELEVATE_API_KEY": SIM_KEY}, wait=False)
    assert second.process.wait(timeout=60) == 2, second.stderr()
    assert_one_line_naming_the_flag(second.stderr(), str(path), "locked by another process")


def test_the_default_store_in_a_folder_that_cannot_hold_it_names_the_flag(
    simulator: Simulator, tmp_path: Path
) -> None:
    # What a new user meets first: no --storage.path, and a working folder where the
    # default data/ cannot be made (here a file of that name is in the way).
    (tmp_path / "data").write_text("a file, not a folder\n")
    env = exporter_env(ELEVATE_API_KEY=SIM_KEY)
    del env[VARIABLE]
    address = f"127.0.0.1:{free_port()}"
    run = subprocess.run(
        [
            *(sys.executable, "-m", "elevate_import_exporter", "run"),
            *("--elevate.base-url", simulator.url, "--web.listen-address", address),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2, run.stderr
    assert_one_line_naming_the_flag(run.stderr, "data/elevate-import-exporter.db")
