"""The ``demo`` and ``simulate`` commands as a newcomer and a benchmark run them: real processes."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from elevate_import_exporter.simulator import DEMO_UNKNOWN_ID, demo_imports
from tests.conftest import exporter_env
from tests.support import Scrape, free_port, scrape, stop_process, wait_until

FINAL = {"SUCCESS", "FAILURE", "ABORTED"}


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        stop_process(process)


def start(
    processes: list[subprocess.Popen[bytes]],
    output: Path,
    *args: str,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    # A file, not a pipe: nobody reads a pipe while the process runs, and a full one
    # would block it.
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "elevate_import_exporter", *args],
            env=exporter_env(**(env or {})),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    processes.append(process)
    return process


def get(url: str, key: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Api-Key": key} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


def test_the_demo_shows_imports_succeed_fail_stay_in_progress_and_stay_unknown(
    processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    exporter_port, simulator_port = free_port(), free_port()
    output = tmp_path / "demo.out"
    demo = start(
        processes,
        output,
        "demo",
        "--web.listen-address",
        f"127.0.0.1:{exporter_port}",
        "--simulator.listen-address",
        f"127.0.0.1:{simulator_port}",
    )
    url = f"http://127.0.0.1:{exporter_port}"
    wait_until(lambda: get(url + "/-/ready")[0] == 200, timeout=20, what="the demo to serve")

    scripted = {imp.id: imp.steps[-1].status for imp in demo_imports()}

    def every_import_ended() -> Scrape | None:
        result = scrape(url)
        ended = all(result.current_status(i) == s for i, s in scripted.items() if s in FINAL)
        return result if ended else None

    # Every demo script ends within about 16 s of the start.
    result = wait_until(every_import_ended, timeout=40, interval=0.5, what="the demo to play out")
    statuses = {result.current_status(i) for i in scripted}
    assert {"SUCCESS", "FAILURE", "IN_PROGRESS"} <= statuses
    assert result.current_status(DEMO_UNKNOWN_ID) == "NOT_FOUND"
    failed = [i for i, s in scripted.items() if s == "FAILURE"]
    messages = {
        dict(labels)["message"]
        for labels in result.series("elevate_import_info")
        if dict(labels)["id"] in failed
    }
    assert all(messages), "a failed demo import carries its message"
    assert result.value("elevate_import_up") == 1

    page = get(url + "/")[1].decode()
    assert all(import_id in page for import_id in [*scripted, DEMO_UNKNOWN_ID])

    assert stop_process(demo) == 0
    printed = output.read_text()
    # Both addresses are printed for the newcomer to open.
    assert f"127.0.0.1:{exporter_port}" in printed
    assert f"127.0.0.1:{simulator_port}" in printed


def test_simulate_serves_a_scenario_file_and_its_injected_failures(
    processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    scenario = tmp_path / "scenario.json"
    scenario.write_text(
        json.dumps(
            [
                {"id": "1", "type": "ADS", "steps": [{"status": "IN_PROGRESS"}]},
                {"id": "2", "steps": [{"status": "FAILURE", "message": "bad feed"}]},
            ]
        )
    )
    port = free_port()
    start(
        processes,
        tmp_path / "simulate.out",
        "simulate",
        "--web.listen-address",
        f"127.0.0.1:{port}",
        "--scenario",
        str(scenario),
        "--fail-id",
        "2",
        "--generate-imports",
        "3",
        env={"ELEVATE_API_KEY": "secret-1"},
    )
    base = f"http://127.0.0.1:{port}/api/v2/import/status/"
    wait_until(lambda: get(base + "1", "secret-1")[0] == 200, timeout=20, what="the simulator")

    status, body = get(base + "1", "secret-1")
    assert status == 200
    assert json.loads(body) == {"id": "1", "status": "IN_PROGRESS", "type": "ADS"}
    assert get(base + "2", "secret-1")[0] == 500
    assert json.loads(get(base + "7000000000000000002", "secret-1")[1])["status"] == "IN_PROGRESS"
    assert json.loads(get(base + "42", "secret-1")[1])["status"] == "NOT_FOUND"
    assert get(base + "1", "wrong")[0] == 403


def test_simulate_refuses_a_bad_scenario_with_exit_status_2_naming_the_file(
    tmp_path: Path,
) -> None:
    scenario = tmp_path / "broken.json"
    scenario.write_text('[{"id": "1", "steps": []}]')
    result = subprocess.run(
        [sys.executable, "-m", "elevate_import_exporter", "simulate", "--scenario", str(scenario)],
        env=exporter_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert str(scenario) in result.stderr
    assert "Traceback" not in result.stderr
