"""Odd ids files and runaway id counts: nothing may block a round, flood the log or the memory.

Issue 8, cases 9 (a FIFO or other non-regular file), 11 (bad-line warnings capped),
12 (SIGHUP re-reads) and 15 (``--imports.max-tracked``).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from elevate_import_exporter import __version__
from elevate_import_exporter.app import Application as Exporter
from elevate_import_exporter.core.secret import Secret
from elevate_import_exporter.elevate.api import StatusApi, flavour_named
from elevate_import_exporter.elevate.transport import Transport
from elevate_import_exporter.metrics.collector import ImportCollector
from elevate_import_exporter.metrics.stats import RequestStats
from elevate_import_exporter.polling.idsfile import IdsFile, IdsFileError
from elevate_import_exporter.polling.poller import Poller
from elevate_import_exporter.polling.sources import FixedIds, MemoryIds, TrackedIds
from elevate_import_exporter.simulator import Simulator
from tests.conftest import SIM_KEY, ExporterFor, ExporterProcess, ExporterProcessFor
from tests.support import Scrape, ids_in_every_series, wait_until
from tests.support import scrape_text as support_scrape_text

TRACKED = "elevate_import_tracked_imports"
REFUSED = "elevate_import_refused_imports"
BY_SOURCE = "elevate_import_source_imports"
IDS_LOGGER = "elevate_import_exporter.polling.idsfile"
# The documented limits, written out here rather than imported, so that a changed
# constant shows up as a failing test and docs/configuration.md to update.
SIZE_CAP = 16 * 1024 * 1024
BAD_LINES_CAP = 20
# Long enough for any machine; a scrape that blocks on the file never answers.
SCRAPE_TIMEOUT = 20.0


@pytest.fixture
def ids_path(tmp_path: Path) -> Path:
    return tmp_path / "ids.txt"


def scrape_text(exporter: Exporter) -> str:
    return support_scrape_text(exporter.url, SCRAPE_TIMEOUT)


def process_ids(proc: ExporterProcess) -> set[str]:
    status, text = proc.get("/metrics")
    assert status == 200, text
    return ids_in_every_series(text)


def warnings_about(caplog: pytest.LogCaptureFixture, path: Path) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and str(path) in r.getMessage()
    ]


def ids_file_warning_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == IDS_LOGGER and r.levelno == logging.WARNING]


def replace_file(path: Path, text: str) -> None:
    """Write as editors and Kubernetes do: a new file renamed over the old one."""
    fresh = path.with_name(path.name + ".new")
    fresh.write_text(text)
    fresh.replace(path)


def fifo_in_place_of(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


@contextmanager
def fifo_released(path: Path) -> Iterator[None]:
    """Whatever the test finds, let a reader stuck opening the FIFO go afterwards."""
    try:
        yield
    finally:
        # Succeeds only if a reader waits: it then gets an empty file and moves on.
        with suppress(OSError):
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def start_process(
    exporter_process: ExporterProcessFor, simulator: Simulator, *args: str, wait: bool = True
) -> ExporterProcess:
    return exporter_process(
        "--elevate.base-url",
        simulator.url,
        "--elevate.min-poll-interval",
        "0s",
        *args,
        env={"ELEVATE_API_KEY": SIM_KEY},
        wait=wait,
    )


def exit_status_within(proc: ExporterProcess, seconds: float, why: str) -> int:
    try:
        return proc.process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        pytest.fail(why)


# -- case 9: only regular files, never blocking --------------------------------------


def test_a_fifo_in_place_of_the_ids_file_does_not_block_scrapes_and_is_warned_about_once(
    simulator: Simulator,
    exporter_for: ExporterFor,
    ids_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    ids_path.write_text("1001\n1002\n")
    exporter = exporter_for(simulator.url, ids_file=str(ids_path))
    assert ids_in_every_series(scrape_text(exporter)) == {"1001", "1002"}

    fifo_in_place_of(ids_path)
    with fifo_released(ids_path):
        scrapes = [Scrape(scrape_text(exporter)) for _ in range(4)]

    for each in scrapes:
        assert ids_in_every_series(each.text) == {"1001", "1002"}
        assert each.value(TRACKED) == 2
        assert each.value("elevate_import_up") == 1
    warnings = warnings_about(caplog, ids_path)
    assert len(warnings) == 1, warnings
    assert "named pipe" in warnings[0]
    assert "keeping the last good set of 2 ids" in warnings[0]


def test_a_regular_file_back_in_place_of_the_fifo_is_read_again(
    simulator: Simulator,
    exporter_for: ExporterFor,
    ids_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    ids_path.write_text("1001\n")
    exporter = exporter_for(simulator.url, ids_file=str(ids_path))
    fifo_in_place_of(ids_path)
    with fifo_released(ids_path):
        assert ids_in_every_series(scrape_text(exporter)) == {"1001"}
    replace_file(ids_path, "1002\n")
    assert ids_in_every_series(scrape_text(exporter)) == {"1002"}
    assert any("readable again" in r.getMessage() for r in caplog.records)


def test_a_fifo_as_the_ids_file_at_start_up_exits_2_at_once_naming_it(
    exporter_process: ExporterProcessFor, simulator: Simulator, ids_path: Path
) -> None:
    os.mkfifo(ids_path)
    with fifo_released(ids_path):
        proc = start_process(
            exporter_process, simulator, "--elevate.import-ids-file", str(ids_path), wait=False
        )
        returncode = exit_status_within(
            proc, 15, "the exporter did not exit: it waits on the FIFO or started with it"
        )
    stderr = proc.stderr()
    assert returncode == 2, stderr
    assert str(ids_path) in stderr
    assert "not a regular file" in stderr
    assert "Traceback" not in stderr


def test_a_symlink_to_a_fifo_is_refused_at_start_up(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "ids.txt"
    link.symlink_to(fifo)
    with fifo_released(fifo), pytest.raises(IdsFileError, match="named pipe"):
        IdsFile(link)


def test_a_device_is_refused_at_start_up() -> None:
    with pytest.raises(IdsFileError, match="character device"):
        IdsFile(Path("/dev/null"))


def test_a_configmap_style_chain_of_symlinks_is_followed_and_its_swap_is_seen(
    tmp_path: Path,
) -> None:
    # How Kubernetes mounts a ConfigMap: ids.txt -> ..data/ids.txt, ..data -> ..<timestamp>;
    # an update writes a new timestamped folder and swaps ..data atomically.
    mount = tmp_path / "config"
    mount.mkdir()
    (mount / "..2024_01").mkdir()
    (mount / "..2024_01" / "ids.txt").write_text("1001\n")
    (mount / "..data").symlink_to("..2024_01")
    (mount / "ids.txt").symlink_to("..data/ids.txt")
    ids = IdsFile(mount / "ids.txt")
    assert ids.current() == ("1001",)

    (mount / "..2024_02").mkdir()
    (mount / "..2024_02" / "ids.txt").write_text("1002\n1003\n")
    (mount / "..data_tmp").symlink_to("..2024_02")
    (mount / "..data_tmp").replace(mount / "..data")
    assert ids.current() == ("1002", "1003")


def test_a_file_of_exactly_the_size_cap_is_read(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    head = b"1001\n1002\n"
    path.write_bytes(head + b"#" * (SIZE_CAP - len(head) - 1) + b"\n")
    assert path.stat().st_size == SIZE_CAP
    assert IdsFile(path).current() == ("1001", "1002")


def test_a_file_over_the_size_cap_is_refused_at_start_up(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    with path.open("wb") as file:
        file.write(b"1001\n")
        file.truncate(SIZE_CAP + 1)  # sparse: costs no disk
    with pytest.raises(IdsFileError, match="16 MiB") as refused:
        IdsFile(path)
    assert str(path) in str(refused.value)


def test_a_file_that_grows_over_the_size_cap_keeps_the_last_good_set_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    path = tmp_path / "ids.txt"
    path.write_text("1001\n")
    ids = IdsFile(path)
    with path.open("ab") as file:
        file.write(b"1002\n")
        file.truncate(SIZE_CAP + 1)
    for _ in range(5):
        assert ids.current() == ("1001",)
    warnings = warnings_about(caplog, path)
    assert len(warnings) == 1, warnings
    assert "16 MiB" in warnings[0]


def test_a_file_broken_in_a_new_way_is_warned_about_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    path = tmp_path / "ids.txt"
    path.write_text("1001\n")
    ids = IdsFile(path)
    path.unlink()
    ids.current()
    ids.current()
    os.mkfifo(path)
    with fifo_released(path):
        ids.current()
        ids.current()
    warnings = warnings_about(caplog, path)
    assert len(warnings) == 2, warnings
    assert "named pipe" in warnings[1]
    assert ids.current() == ("1001",)


# -- case 11: bad-line warnings capped per re-read ------------------------------------


def test_a_hundred_thousand_bad_lines_at_start_up_give_a_capped_warning_and_a_summary(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    path = tmp_path / "ids.txt"
    path.write_text("1001\n" + "not an id\n" * 100_000)
    ids = IdsFile(path)
    assert ids.current() == ("1001",)
    records = ids_file_warning_records(caplog)
    assert len(records) == BAD_LINES_CAP + 1
    assert "line 2 " in records[0].getMessage()
    assert "... and 99980 more bad lines" in records[-1].getMessage()
    assert str(path) in records[-1].getMessage()


def test_a_hundred_thousand_bad_lines_in_a_re_read_file_give_at_most_cap_plus_one_warnings(
    simulator: Simulator,
    exporter_for: ExporterFor,
    ids_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    ids_path.write_text("1001\n")
    exporter = exporter_for(simulator.url, ids_file=str(ids_path))
    scrape_text(exporter)
    caplog.clear()

    replace_file(ids_path, "x/y\n" * 100_000 + "1003\n")
    assert ids_in_every_series(scrape_text(exporter)) == {"1003"}
    records = ids_file_warning_records(caplog)
    assert len(records) <= BAD_LINES_CAP + 1
    assert "more bad lines" in records[-1].getMessage()

    # Each re-read has its own allowance: the next one warns again, no more than that.
    caplog.clear()
    replace_file(ids_path, "x/y\n" * 100_000 + "1004\n")
    assert ids_in_every_series(scrape_text(exporter)) == {"1004"}
    assert 1 <= len(ids_file_warning_records(caplog)) <= BAD_LINES_CAP + 1


def test_a_few_bad_lines_are_each_named_without_a_summary(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    path = tmp_path / "ids.txt"
    path.write_text("".join(f"bad id {n}\n" for n in range(BAD_LINES_CAP)))
    IdsFile(path)
    messages = [r.getMessage() for r in ids_file_warning_records(caplog)]
    assert len(messages) == BAD_LINES_CAP
    assert not any("more bad lines" in m for m in messages)
    assert f"line {BAD_LINES_CAP} " in messages[-1]


# -- case 12: reload and SIGHUP -------------------------------------------------------


def rewrite_keeping_size_time_and_inode(path: Path, text: str) -> None:
    before = path.stat()
    with path.open("r+", encoding="utf-8") as file:
        file.write(text)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    same = (after.st_ino, after.st_size, after.st_mtime_ns)
    assert same == (before.st_ino, before.st_size, before.st_mtime_ns)


def test_reload_reads_a_change_that_keeps_size_time_and_inode(ids_path: Path) -> None:
    ids_path.write_text("1001\n")
    ids = IdsFile(ids_path)
    rewrite_keeping_size_time_and_inode(ids_path, "1002\n")
    assert ids.current() == ("1001",)  # invisible to the cheap check
    ids.reload()
    assert ids.current() == ("1002",)


def test_reload_of_an_unchanged_file_keeps_the_same_tuple(ids_path: Path) -> None:
    ids_path.write_text("1001\n1002\n")
    ids = IdsFile(ids_path)
    first = ids.current()
    ids.reload()
    assert ids.current() is first


def test_sighup_re_reads_an_ids_file_whose_size_and_time_did_not_change(
    exporter_process: ExporterProcessFor, simulator: Simulator, ids_path: Path
) -> None:
    ids_path.write_text("1001\n")
    proc = start_process(exporter_process, simulator, "--elevate.import-ids-file", str(ids_path))
    assert process_ids(proc) == {"1001"}

    rewrite_keeping_size_time_and_inode(ids_path, "1002\n")
    assert process_ids(proc) == {"1001"}  # the change is only seen on request

    proc.process.send_signal(signal.SIGHUP)
    wait_until(lambda: process_ids(proc) == {"1002"}, timeout=15, what="1002 in /metrics")
    wait_until(
        lambda: "reloaded the id sources: 1 ids tracked" in proc.stderr(),
        timeout=15,
        what="a log line about the reload",
    )
    assert proc.process.poll() is None, proc.stderr()
    assert proc.get("/-/healthy")[0] == 200


def test_sighup_without_an_ids_file_keeps_the_exporter_running(
    exporter_process: ExporterProcessFor, simulator: Simulator
) -> None:
    proc = start_process(exporter_process, simulator, "--elevate.import-id", "1001")

    def reloads_logged(times: int) -> Callable[[], bool]:
        return lambda: proc.stderr().count("reloaded the id sources: 1 ids tracked") == times

    for times in range(1, 4):
        # One at a time: signals sent together may arrive as one.
        proc.process.send_signal(signal.SIGHUP)
        wait_until(reloads_logged(times), timeout=15, what=f"reload {times} logged")
    assert proc.process.poll() is None, proc.stderr()
    assert process_ids(proc) == {"1001"}
    assert "Traceback" not in proc.stderr()


# -- case 15: --imports.max-tracked ---------------------------------------------------


@pytest.fixture
def transport(simulator: Simulator) -> Iterator[Transport]:
    real = Transport(simulator.url, Secret(SIM_KEY), user_agent=f"test/{__version__}")
    yield real
    real.close()


def collect(poller: Poller, ids: TrackedIds) -> Scrape:
    registry = CollectorRegistry()
    registry.register(ImportCollector(poller, RequestStats(), ids))
    return Scrape(generate_latest(registry).decode("utf-8"))


def test_the_collector_publishes_the_refused_number_and_the_ids_per_source(
    transport: Transport,
) -> None:
    api = MemoryIds("api")
    ids = TrackedIds([FixedIds(["1001", "1002"]), api], max_tracked=3)
    poller = Poller(StatusApi(flavour_named("web-v2"), transport), ids, concurrency=2)
    try:
        scrape = collect(poller, ids)
        assert scrape.value(REFUSED) == 0
        assert scrape.series(BY_SOURCE) == {
            frozenset({("source", "flag")}): 2,
            frozenset({("source", "api")}): 0,
        }

        for import_id in ("1003", "1004", "1005"):
            api.add(import_id)
        poller.poll(10)
        scrape = collect(poller, ids)
        assert scrape.value(REFUSED) == 2
        assert scrape.value(BY_SOURCE, source="flag") == 2
        assert scrape.value(BY_SOURCE, source="api") == 1
        assert scrape.value(TRACKED) == 3
        assert ids_in_every_series(scrape.text) == {"1001", "1002", "1003"}
    finally:
        poller.close()


def test_a_collector_without_ids_publishes_no_source_families(transport: Transport) -> None:
    ids = TrackedIds([FixedIds(["1001"])])
    poller = Poller(StatusApi(flavour_named("web-v2"), transport), ids, concurrency=1)
    try:
        registry = CollectorRegistry()
        registry.register(ImportCollector(poller, RequestStats()))
        scrape = Scrape(generate_latest(registry).decode("utf-8"))
        assert scrape.value(TRACKED) == 1
        assert scrape.series(REFUSED) == {}
        assert scrape.series(BY_SOURCE) == {}
    finally:
        poller.close()


def test_ids_beyond_max_tracked_are_neither_queried_nor_exported_and_are_counted(
    simulator: Simulator,
    exporter_for: ExporterFor,
    ids_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Needs app.py to pass max_tracked to TrackedIds and the ids to ImportCollector."""
    caplog.set_level(logging.INFO)
    ids_path.write_text("1003\n1004\n1005\n")
    exporter = exporter_for(
        simulator.url, ["1001", "1002"], ids_file=str(ids_path), max_tracked="3"
    )
    scrape = Scrape(scrape_text(exporter))
    assert ids_in_every_series(scrape.text) == {"1001", "1002", "1003"}
    assert scrape.value(TRACKED) == 3
    assert scrape.value(REFUSED) == 2
    assert scrape.value(BY_SOURCE, source="flag") == 2
    assert scrape.value(BY_SOURCE, source="file") == 1
    assert simulator.requests_for("1004") == simulator.requests_for("1005") == 0

    refusals = [m for m in (r.getMessage() for r in caplog.records) if "max-tracked" in m]
    scrape_text(exporter)
    scrape_text(exporter)
    assert len([m for m in (r.getMessage() for r in caplog.records) if "max-tracked" in m]) == len(
        refusals
    ), "the refusal is logged again without a change"
    assert len(refusals) == 1, refusals

    with ids_path.open("a") as appended:
        appended.write("1006\n")
    assert Scrape(scrape_text(exporter)).value(REFUSED) == 3
    refusals = [m for m in (r.getMessage() for r in caplog.records) if "max-tracked" in m]
    assert len(refusals) == 2, refusals
