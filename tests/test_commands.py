"""The ``demo`` and ``simulate`` commands as a newcomer and a benchmark run them: real processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from elevate_import_exporter.simulator import SCENARIO_FORMAT
from tests.conftest import exporter_env
from tests.support import Scrape, free_port, scrape, stop_process, wait_until

# What the README promises of the demo: two imports that succeed, one that fails with a
# message, one that stays in progress, one that is aborted, and an id the cluster does
# not know.
DEMO_PROMISE = ["SUCCESS", "SUCCESS", "FAILURE", "IN_PROGRESS", "ABORTED", "NOT_FOUND"]


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

    def statuses(result: Scrape) -> dict[str, str | None]:
        ids = {dict(labels)["id"] for labels in result.series("elevate_import_poll_success")}
        return {i: result.current_status(i) for i in ids}

    def played_out() -> Scrape | None:
        result = scrape(url)
        ended = sorted(str(s) for s in statuses(result).values()) == sorted(DEMO_PROMISE)
        return result if ended else None

    # Every demo script ends within about 16 s of the start.
    result = wait_until(played_out, timeout=40, interval=0.5, what="the demo to play out")
    by_id = statuses(result)
    failed = [i for i, s in by_id.items() if s == "FAILURE"]
    messages = {
        dict(labels)["message"]
        for labels in result.series("elevate_import_info")
        if dict(labels)["id"] in failed
    }
    assert all(messages), "a failed demo import carries its message"
    assert result.value("elevate_import_up") == 1

    page = get(url + "/")[1].decode()
    assert all(import_id in page for import_id in by_id)

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


def run_simulate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``simulate`` that must fail at start-up; a timeout means it served instead."""
    return subprocess.run(
        [sys.executable, "-m", "elevate_import_exporter", "simulate", *args],
        env=exporter_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *named: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for name in named:
        assert name in lines[0]


def test_simulate_refuses_an_unknown_log_format_naming_it() -> None:
    port = str(free_port())
    result = run_simulate("--web.listen-address", f"127.0.0.1:{port}", "--log.format", "xml")
    assert_one_line_error(result, "--log.format", "xml")


@pytest.mark.parametrize("given_by", ["flag", "environment"])
def test_simulate_refuses_a_key_file_that_is_not_utf_8_in_one_line(
    tmp_path: Path, given_by: str
) -> None:
    key_file = tmp_path / "latin-1-key"
    key_file.write_bytes("clé-secrète\n".encode("latin-1"))
    args = ["--web.listen-address", f"127.0.0.1:{free_port()}"]
    env = {}
    if given_by == "flag":
        args += ["--elevate.api-key-file", str(key_file)]
    else:
        env["ELEVATE_API_KEY_FILE"] = str(key_file)
    assert_one_line_error(run_simulate(*args, env=env), str(key_file))


def test_simulate_help_shows_the_scenario_file_format() -> None:
    result = run_simulate("--help")
    assert result.returncode == 0, result.stderr
    # Kept as written (click indents an epilog by two spaces), the example's columns too.
    assert textwrap.indent(SCENARIO_FORMAT.strip("\n"), "  ") in result.stdout
