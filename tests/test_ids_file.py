"""The ids file: followed while the exporter runs, bad lines skipped, a lost file survived."""

from __future__ import annotations

import logging
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from elevate_import_exporter.app import Application as Exporter
from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from tests.conftest import SIM_KEY, ExporterFor, ExporterProcessFor
from tests.support import Scrape, ids_in_every_series
from tests.support import scrape_text as support_scrape_text

TRACKED = "elevate_import_tracked_imports"
FIRST_SEEN = "elevate_import_first_seen_timestamp_seconds"


def replace_file(path: Path, text: str) -> None:
    """Write as editors and Kubernetes do: a new file renamed over the old one."""
    fresh = path.with_name(path.name + ".new")
    fresh.write_text(text)
    fresh.replace(path)


def scrape_text(exporter: Exporter) -> str:
    return support_scrape_text(exporter.url, 30)


def tracked(exporter: Exporter) -> Scrape:
    return Scrape(scrape_text(exporter))


def ids_file_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.fixture
def ids_path(tmp_path: Path) -> Path:
    return tmp_path / "ids.txt"


def test_ids_added_to_the_file_while_running_are_exported_at_the_next_scrape(
    simulator: Simulator, exporter_for: ExporterFor, ids_path: Path
) -> None:
    ids_path.write_text("1001\n")
    exporter = exporter_for(simulator.url, ids_file=str(ids_path))
    first = tracked(exporter)
    assert first.value(TRACKED) == 1
    seen_1001 = first.value(FIRST_SEEN, id="1001")

    with ids_path.open("a") as appended:
        appended.write("1002\n1003\n")
    second = tracked(exporter)

    assert second.value(TRACKED) == 3
    for import_id in ("1002", "1003"):
        assert second.value("elevate_import_poll_success", id=import_id) == 1
        assert second.current_status(import_id) == "NOT_FOUND"
        assert simulator.requests_for(import_id) == 1
    # The ids already tracked keep their state.
    assert second.value(FIRST_SEEN, id="1001") == seen_1001


def test_ids_removed_from_the_file_disappear_from_every_series_and_are_not_queried(
    simulator: Simulator, exporter_for: ExporterFor, ids_path: Path
) -> None:
    simulator.add_import(ScriptedImport("1001", (Step("IN_PROGRESS"),)))
    simulator.add_import(
        ScriptedImport("1002", (Step("BLOCKED", message="Waiting for 1001."),), type="ADS")
    )
    ids_path.write_text("1001\n1002\n")
    exporter = exporter_for(simulator.url, ids_file=str(ids_path))
    assert ids_in_every_series(scrape_text(exporter)) == {"1001", "1002"}
    asked = simulator.requests_for("1002")

    replace_file(ids_path, "1001\n")
    text = scrape_text(exporter)

    assert ids_in_every_series(text) == {"1001"}
    assert Scrape(text).value(TRACKED) == 1
    assert simulator.requests_for("1002") == asked
    with urllib.request.urlopen(exporter.url + "/", timeout=30) as page:
        assert ">1002<" not in page.read().decode()


def test_comments_and_blank_lines_are_ignored(
    simulator: Simulator, exporter_for: ExporterFor, ids_path: Path
) -> None:
    lines = [
        "# ids of the nightly product feed",
        "",
        "1001  # the big one",
        "   ",
        "\t1002\t\r",  # a line from a Windows editor
        "#1003",
        "1001",
    ]
    ids_path.write_text("\n".join(lines) + "\n")
    exporter = exporter_for(simulator.url, ids_file=str(ids_path))
    # The start-up round asked each id once, 1001 not twice for its two lines.
    assert (simulator.requests_for("1001"), simulator.requests_total) == (1, 2)
    simulator.reset_counts()
    text = scrape_text(exporter)
    assert ids_in_every_series(text) == {"1001", "1002"}
    assert Scrape(text).value(TRACKED) == 2
    assert simulator.requests_total == 2


def test_the_files_ids_come_after_the_flags_and_are_not_doubled(
    simulator: Simulator, exporter_for: ExporterFor, ids_path: Path
) -> None:
    ids_path.write_text("1002\n1001\n")
    exporter = exporter_for(simulator.url, ["1001", "1000"], ids_file=str(ids_path))
    assert simulator.requests_for("1001") == 1  # in the start-up round, once
    simulator.reset_counts()
    text = scrape_text(exporter)
    assert ids_in_every_series(text) == {"1000", "1001", "1002"}
    assert Scrape(text).value(TRACKED) == 3
    assert simulator.requests_for("1001") == 1
    # Series come in the order the ids are tracked: the flags', then the file's new ones.
    in_order = [
        sample.labels["id"]
        for family in text_string_to_metric_families(text)
        if family.name == "elevate_import_poll_success"
        for sample in family.samples
    ]
    assert in_order == ["1001", "1000", "1002"]


def test_a_bad_line_at_start_up_is_skipped_with_a_warning_naming_its_number(
    simulator: Simulator,
    exporter_for: ExporterFor,
    ids_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    ids_path.write_text("1001\n# fine\nnot/an/id\n1002\n")
    exporter = exporter_for(simulator.url, ids_file=str(ids_path))

    assert ids_in_every_series(scrape_text(exporter)) == {"1001", "1002"}
    warnings = ids_file_warnings(caplog)
    assert any("line 3" in w and str(ids_path) in w for w in warnings), warnings
    assert simulator.requests_for("not/an/id") == 0


def test_a_bad_line_in_a_re_read_file_is_skipped_and_the_other_ids_kept(
    simulator: Simulator,
    exporter_for: ExporterFor,
    ids_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    ids_path.write_text("1001\n")
    exporter = exporter_for(simulator.url, ids_file=str(ids_path))
    scrape_text(exporter)
    assert not ids_file_warnings(caplog)

    replace_file(ids_path, "1001\n" + "x" * 65 + "\n1003\n")
    text = scrape_text(exporter)

    assert ids_in_every_series(text) == {"1001", "1003"}
    warnings = ids_file_warnings(caplog)
    assert any("line 2" in w for w in warnings), warnings


def test_a_deleted_file_keeps_the_last_good_set_with_a_warning_until_it_is_restored(
    simulator: Simulator,
    exporter_for: ExporterFor,
    ids_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    ids_path.write_text("1001\n1002\n")
    exporter = exporter_for(simulator.url, ids_file=str(ids_path))
    assert ids_in_every_series(scrape_text(exporter)) == {"1001", "1002"}

    ids_path.unlink()
    kept = scrape_text(exporter)
    assert ids_in_every_series(kept) == {"1001", "1002"}
    assert Scrape(kept).value("elevate_import_up") == 1
    warnings = ids_file_warnings(caplog)
    assert any(str(ids_path) in w for w in warnings), warnings
    # Still gone at the next scrape: still the last good set.
    assert ids_in_every_series(scrape_text(exporter)) == {"1001", "1002"}

    ids_path.write_text("1002\n1003\n")
    assert ids_in_every_series(scrape_text(exporter)) == {"1002", "1003"}


def test_an_emptied_file_tracks_no_ids(
    simulator: Simulator, exporter_for: ExporterFor, ids_path: Path
) -> None:
    ids_path.write_text("1001\n")
    exporter = exporter_for(simulator.url, ids_file=str(ids_path))
    scrape_text(exporter)
    replace_file(ids_path, "# nothing to watch tonight\n")
    text = scrape_text(exporter)
    assert ids_in_every_series(text) == set()
    assert Scrape(text).value(TRACKED) == 0
    assert Scrape(text).value("elevate_import_up") == 1


def test_a_file_that_is_no_longer_text_keeps_the_last_good_set(
    simulator: Simulator,
    exporter_for: ExporterFor,
    ids_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    ids_path.write_text("1001\n")
    exporter = exporter_for(simulator.url, ids_file=str(ids_path))
    scrape_text(exporter)
    ids_path.write_bytes(b"\xff\xfe\x00garbage\n1002\n")
    assert ids_in_every_series(scrape_text(exporter)) == {"1001"}
    assert any(str(ids_path) in w for w in ids_file_warnings(caplog))


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_an_unreadable_ids_file_at_start_up_exits_2_naming_it(
    exporter_process: ExporterProcessFor, simulator: Simulator, tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "no-such-ids" if kind == "missing" else tmp_path
    proc = exporter_process(
        "--elevate.base-url",
        simulator.url,
        "--elevate.import-ids-file",
        str(path),
        env={"ELEVATE_API_KEY": SIM_KEY},
        wait=False,
    )
    proc.assert_setup_error(str(path))
