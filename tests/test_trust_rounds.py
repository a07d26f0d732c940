"""A scrape shows what is already known, a round keeps to its deadline, and a wrong key
says what to do: through real exporter processes against the simulator."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import pytest

from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from tests.conftest import SIM_KEY, ExporterProcess, ExporterProcessFor
from tests.support import Scrape, wait_until

TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"
QUICK, SLOW = "3001", "3002"


@pytest.fixture
def hanging() -> Iterator[Simulator]:
    """A simulator where SLOW answers only after 30 s (the exporter's timeout is longer)."""
    imports = [ScriptedImport(QUICK, (Step("WAITING", queries=1), Step("IN_PROGRESS")))]
    with Simulator(imports, api_key=SIM_KEY, hang_ids=[SLOW], hang_seconds=30.0) as sim:
        yield sim


def _start(
    exporter_process: ExporterProcessFor, sim: Simulator, *more: str, wait: bool = True
) -> ExporterProcess:
    return exporter_process(
        "--elevate.base-url",
        sim.url,
        f"--elevate.import-id={QUICK}",
        f"--elevate.import-id={SLOW}",
        "--elevate.timeout",
        "60",
        *more,
        env={"ELEVATE_API_KEY": SIM_KEY},
        wait=wait,
    )


def test_a_scrape_during_the_long_first_round_shows_the_answer_that_already_arrived(
    hanging: Simulator, exporter_process: ExporterProcessFor
) -> None:
    running = _start(exporter_process, hanging, wait=False)
    # The first round starts with the process; QUICK is answered at once, SLOW hangs.
    wait_until(lambda: hanging.requests_for(QUICK) >= 1, timeout=30, what="QUICK asked")
    wait_until(lambda: _healthy(running), timeout=30, what="the exporter serving")
    status, text = running.get("/metrics", **{TIMEOUT_HEADER: "3"})
    assert status == 200
    scrape = Scrape(text)
    assert scrape.value("elevate_import_poll_success", id=QUICK) == 1, text
    assert scrape.current_status(QUICK) == "WAITING"
    # SLOW has no answer yet, and the round that asks it is still running.
    assert scrape.current_status(SLOW) is None
    assert hanging.requests_for(SLOW) == 1


def test_a_scrape_that_joins_a_running_round_shows_the_answers_of_that_round(
    hanging: Simulator, exporter_process: ExporterProcessFor
) -> None:
    running = _start(exporter_process, hanging, "--elevate.min-poll-interval", "0s")
    # Ready: the first round has ended (cut at its deadline while SLOW hung), QUICK WAITING.
    asked = hanging.requests_for(QUICK)
    assert asked == 1
    long_scrape = threading.Thread(target=_scrape_ignoring_the_end, args=(running,), daemon=True)
    long_scrape.start()
    # That scrape's round has asked QUICK again (now IN_PROGRESS) and waits for SLOW.
    wait_until(lambda: hanging.requests_for(QUICK) > asked, timeout=30, what="a new round")
    status, text = running.get("/metrics", **{TIMEOUT_HEADER: "3"})
    assert status == 200
    assert Scrape(text).current_status(QUICK) == "IN_PROGRESS", text


def test_a_rejected_key_is_one_warning_a_round_that_says_where_the_key_comes_from(
    exporter_process: ExporterProcessFor,
) -> None:
    ids = [str(4000 + n) for n in range(40)]
    with Simulator(api_key="the-right-key") as sim:
        running = exporter_process(
            "--elevate.base-url",
            sim.url,
            *(f"--elevate.import-id={i}" for i in ids),
            env={"ELEVATE_API_KEY": "a-wrong-key"},
        )
        stderr = running.stderr()
    lines = [line for line in stderr.splitlines() if "forbidden" in line]
    hints = [line for line in lines if "--elevate.api-key-file" in line]
    assert len(hints) == 1, stderr
    assert "ELEVATE_API_KEY" in hints[0]
    # No line per id: the warning, then the round's summary that explains not_sent.
    assert not [line for line in lines if "status query failed" in line], stderr
    summary = [line for line in stderr.splitlines() if "poll round:" in line]
    assert len(summary) == 1, stderr
    assert "not_sent: not asked" in summary[0]
    assert "a-wrong-key" not in stderr


def _scrape_ignoring_the_end(running: ExporterProcess) -> None:
    # Its round outlives the test: the process is stopped under it.
    with contextlib.suppress(OSError):
        running.get("/metrics", **{TIMEOUT_HEADER: "25"})


def _healthy(running: ExporterProcess) -> bool:
    try:
        return running.get("/-/healthy")[0] == 200
    except OSError:
        return False
