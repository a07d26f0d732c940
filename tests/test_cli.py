"""The command line: version, configuration errors, environment variables, start and stop."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import elevate_import_exporter
from elevate_import_exporter.cli import cli
from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from tests.conftest import EXPORTER_ENV, SIM_KEY, ExporterProcess, ExporterProcessFor
from tests.support import Scrape, free_port, wait_until

# The contract's table of `run` options: flag, environment variable, default.
CONTRACT_OPTIONS = (
    ("--elevate.cluster-id", "ELEVATE_CLUSTER_ID", None),
    ("--elevate.base-url", "ELEVATE_BASE_URL", None),
    ("--elevate.api-key-file", "ELEVATE_API_KEY_FILE", None),
    ("--elevate.import-id", "ELEVATE_IMPORT_IDS", None),
    ("--elevate.import-ids-file", "ELEVATE_IMPORT_IDS_FILE", None),
    ("--elevate.concurrency", "ELEVATE_CONCURRENCY", "8"),
    ("--elevate.timeout", "ELEVATE_TIMEOUT", "5"),
    ("--elevate.retries", "ELEVATE_RETRIES", "1"),
    ("--web.listen-address", "ELEVATE_EXPORTER_LISTEN_ADDRESS", ":10025"),
    ("--web.telemetry-path", "ELEVATE_EXPORTER_TELEMETRY_PATH", "/metrics"),
    ("--log.level", "ELEVATE_EXPORTER_LOG_LEVEL", "info"),
    ("--log.format", "ELEVATE_EXPORTER_LOG_FORMAT", "logfmt"),
)
# An address nothing listens on: the configuration errors below come before any request.
NOWHERE = "http://127.0.0.1:9"


def invoke(args: list[str], **env: str) -> Result:
    """``cli`` in-process with only the exporter variables given here set."""
    environment: dict[str, str | None] = dict.fromkeys(EXPORTER_ENV)
    environment.update(env)
    return CliRunner().invoke(cli, args, env=environment)


def assert_setup_error(result: Result, *named: str) -> None:
    """Exit status 2, one short line on stderr naming each of ``named``, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert len(lines[0]) < 300, lines[0]
    for name in named:
        assert name in lines[0]


def test_version_prints_the_package_version() -> None:
    result = invoke(["--version"])
    assert result.exit_code == 0
    assert elevate_import_exporter.__version__ in result.stdout


# -- configuration errors -----------------------------------------------------------------


def test_run_without_a_key_exits_2_naming_the_key_variable() -> None:
    result = invoke(["run", "--elevate.base-url", NOWHERE, "--elevate.import-id", "1001"])
    assert_setup_error(result, "ELEVATE_API_KEY")


def test_run_without_cluster_or_base_url_exits_2_naming_them() -> None:
    result = invoke(["run", "--elevate.import-id", "1001"], ELEVATE_API_KEY=SIM_KEY)
    assert_setup_error(result, "--elevate.cluster-id", "--elevate.base-url")


def test_run_with_a_bad_id_flag_exits_2_naming_the_id() -> None:
    args = ["run", "--elevate.base-url", NOWHERE, "--elevate.import-id", "1001"]
    result = invoke([*args, "--elevate.import-id", "12/34"], ELEVATE_API_KEY=SIM_KEY)
    assert_setup_error(result, "12/34")


def test_run_with_a_bad_id_in_ELEVATE_IMPORT_IDS_exits_2_naming_the_id() -> None:
    result = invoke(
        ["run", "--elevate.base-url", NOWHERE],
        ELEVATE_API_KEY=SIM_KEY,
        ELEVATE_IMPORT_IDS="1001, 1002,x" + "y" * 70,
    )
    assert_setup_error(result, "x" + "y" * 70)


@pytest.mark.parametrize("address", ["abc", ":99999", "1.2.3.4"])
def test_run_with_a_bad_listen_address_exits_2_naming_it(address: str) -> None:
    result = invoke(
        ["run", "--elevate.base-url", NOWHERE, "--web.listen-address", address],
        ELEVATE_API_KEY=SIM_KEY,
    )
    assert_setup_error(result, "--web.listen-address", address)


def test_run_with_a_missing_key_file_exits_2_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "no-such-key"
    result = invoke(["run", "--elevate.base-url", NOWHERE, "--elevate.api-key-file", str(path)])
    assert_setup_error(result, str(path))


def test_run_with_a_directory_as_key_file_exits_2_naming_it(tmp_path: Path) -> None:
    result = invoke(["run", "--elevate.base-url", NOWHERE, "--elevate.api-key-file", str(tmp_path)])
    assert_setup_error(result, str(tmp_path))


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--elevate.concurrency", "0"),
        ("--elevate.concurrency", "many"),
        ("--elevate.timeout", "-2"),
        ("--elevate.retries", "x"),
        ("--web.telemetry-path", "metrics"),
        ("--log.level", "loud"),
        ("--log.format", "xml"),
    ],
)
def test_run_with_a_bad_value_exits_2_naming_flag_and_value(flag: str, value: str) -> None:
    result = invoke(["run", "--elevate.base-url", NOWHERE, flag, value], ELEVATE_API_KEY=SIM_KEY)
    assert_setup_error(result, flag, value)


def test_no_flag_takes_the_key_itself() -> None:
    result = invoke(["run", "--help"])
    flags = set(re.findall(r"--[a-z][a-z.-]*", result.stdout))
    assert {f for f in flags if "key" in f} == {"--elevate.api-key-file"}
    refused = invoke(
        ["run", "--elevate.base-url", NOWHERE, "--elevate.api-key", SIM_KEY], ELEVATE_API_KEY="k"
    )
    assert refused.exit_code == 2
    assert "Traceback" not in refused.output


# -- every option reads its environment variable ------------------------------------------


def _help_blocks() -> dict[str, str]:
    """``run --help``: each option's text, whitespace folded, by its flag."""
    result = invoke(["run", "--help"])
    assert result.exit_code == 0
    blocks: dict[str, str] = {}
    flag = ""
    for line in result.stdout.splitlines():
        found = re.match(r"\s{1,4}(-\w, )?(--[\w.-]+)", line)
        if found:
            flag = found.group(2)
        if flag:
            blocks[flag] = " ".join(f"{blocks.get(flag, '')} {line}".split())
    return blocks


@pytest.mark.parametrize(("flag", "env", "default"), CONTRACT_OPTIONS)
def test_run_help_shows_each_contract_option_with_its_variable_and_default(
    flag: str, env: str, default: str | None
) -> None:
    block = _help_blocks().get(flag)
    assert block is not None, f"{flag} is not in `run --help`"
    assert re.search(rf"env var: {re.escape(env)}\b", block), block
    if default is not None:
        assert f"default: {default}" in block


# Each variable set to a bad value must produce the error of its option: proof it is read.
@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("ELEVATE_CLUSTER_ID", "not_a_label!", "--elevate.cluster-id"),
        ("ELEVATE_BASE_URL", "ftp://example.org", "--elevate.base-url"),
        ("ELEVATE_API_KEY_FILE", "/nonexistent/elevate/key", "/nonexistent/elevate/key"),
        ("ELEVATE_IMPORT_IDS", "1001 12/34", "12/34"),
        ("ELEVATE_CONCURRENCY", "0", "--elevate.concurrency"),
        ("ELEVATE_TIMEOUT", "0", "--elevate.timeout"),
        ("ELEVATE_RETRIES", "-1", "--elevate.retries"),
        ("ELEVATE_EXPORTER_LISTEN_ADDRESS", "abc", "--web.listen-address"),
        ("ELEVATE_EXPORTER_TELEMETRY_PATH", "nope", "--web.telemetry-path"),
        ("ELEVATE_EXPORTER_LOG_LEVEL", "loud", "--log.level"),
        ("ELEVATE_EXPORTER_LOG_FORMAT", "xml", "--log.format"),
    ],
)
def test_a_bad_value_in_an_environment_variable_is_refused_as_its_option(
    env: str, value: str, named: str
) -> None:
    given = {"ELEVATE_API_KEY": SIM_KEY, "ELEVATE_BASE_URL": NOWHERE}
    if env == "ELEVATE_CLUSTER_ID":
        del given["ELEVATE_BASE_URL"]  # the base URL would win over the cluster id
    if env == "ELEVATE_API_KEY_FILE":
        del given["ELEVATE_API_KEY"]
    given[env] = value
    assert_setup_error(invoke(["run"], **given), named)


def test_the_exporter_runs_from_environment_variables_alone(
    exporter_process: ExporterProcessFor, tmp_path: Path
) -> None:
    ids_file = tmp_path / "ids"
    ids_file.write_text("5005\n")
    imports = [ScriptedImport("1001", (Step("SUCCESS"),))]
    with Simulator(imports, api_key=SIM_KEY) as sim:
        proc = exporter_process(
            env={
                "ELEVATE_BASE_URL": sim.url,
                "ELEVATE_API_KEY": SIM_KEY,
                # Commas, spaces, both, a doubled comma, the newline a YAML block scalar ends with.
                "ELEVATE_IMPORT_IDS": "1001,2002 3003, 4004,,\n",
                "ELEVATE_IMPORT_IDS_FILE": str(ids_file),
                "ELEVATE_EXPORTER_LISTEN_ADDRESS": f"127.0.0.1:{free_port()}",
                "ELEVATE_EXPORTER_TELEMETRY_PATH": "/elevate-metrics",
                "ELEVATE_EXPORTER_LOG_LEVEL": "debug",
                "ELEVATE_EXPORTER_LOG_FORMAT": "json",
            }
        )
        status, text = proc.get("/elevate-metrics")
        assert status == 200
        got = Scrape(text)
        assert got.value("elevate_import_tracked_imports") == 5
        for import_id in ("1001", "2002", "3003", "4004", "5005"):
            assert got.value("elevate_import_poll_success", id=import_id) == 1, import_id
            assert sim.requests_for(import_id) == 1
        assert got.current_status("1001") == "SUCCESS"
        assert proc.get("/metrics")[0] == 404
        assert proc.stop() == 0

    lines = [line for line in proc.stderr().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is JSON
    assert any(record.get("level") == "debug" for record in records), lines


# -- a real process -----------------------------------------------------------------------


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_run_serves_metrics_and_exits_0_promptly_on_a_stop_signal(
    exporter_process: ExporterProcessFor, simulator: Simulator, stop_signal: signal.Signals
) -> None:
    proc = exporter_process(
        "--elevate.base-url",
        simulator.url,
        "--elevate.import-id",
        "1001",
        env={"ELEVATE_API_KEY": SIM_KEY},
    )
    status, text = proc.get("/metrics")
    assert status == 200
    assert Scrape(text).value("elevate_import_up") == 1

    proc.process.send_signal(stop_signal)
    assert proc.process.wait(timeout=10) == 0
    assert "Traceback" not in proc.stderr()


def test_a_listen_address_in_use_exits_2_naming_the_address(
    exporter_process: ExporterProcessFor,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        proc = exporter_process(
            "--elevate.base-url",
            NOWHERE,
            "--web.listen-address",
            address,
            env={"ELEVATE_API_KEY": SIM_KEY},
            wait=False,
        )
        try:
            returncode = proc.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the exporter kept running although {address} is taken")
    stderr = proc.stderr()
    assert returncode == 2, stderr
    assert address in stderr
    assert "Traceback" not in stderr


def test_a_stop_signal_is_obeyed_promptly_even_while_a_scrape_waits_for_elevate(
    exporter_process: ExporterProcessFor, simulator: Simulator
) -> None:
    simulator.hang_ids.add("1001")
    proc = exporter_process(
        "--elevate.base-url",
        simulator.url,
        "--elevate.import-id",
        "1001",
        "--elevate.timeout",
        "30",
        env={"ELEVATE_API_KEY": SIM_KEY},
    )

    def scrape() -> None:
        # The scrape loses its connection when the process ends: not what is tested.
        with contextlib.suppress(OSError):
            proc.get("/metrics")

    scraper = threading.Thread(target=scrape, daemon=True)
    scraper.start()
    wait_until(lambda: simulator.requests_for("1001") >= 1, what="the scrape to reach Elevate")

    proc.process.terminate()
    # The round's deadline is 10 s away: an exporter that waits for it is not stopping.
    try:
        returncode = proc.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail("the exporter still ran 5 s after SIGTERM, waiting for its poll round")
    assert returncode == 0
    assert "Traceback" not in proc.stderr()
    scraper.join(timeout=30)


def test_an_empty_import_id_flag_is_refused_not_ignored(
    exporter_process: ExporterProcessFor, simulator: Simulator
) -> None:
    # As `--elevate.import-id "$ID"` gives with ID unset: a script's mistake to report.
    proc = exporter_process(
        "--elevate.base-url",
        simulator.url,
        "--elevate.import-id",
        "1001",
        "--elevate.import-id",
        "",
        env={"ELEVATE_API_KEY": SIM_KEY},
        wait=False,
    )
    assert exit_status_or_serving(proc) == 2, proc.stderr()
    assert "Traceback" not in proc.stderr()


def exit_status_or_serving(proc: ExporterProcess) -> int | str:
    """The process' exit status, or "serving" once it answers /-/ready."""
    outcome: list[int | str] = []

    def settled() -> bool:
        if proc.process.poll() is not None:
            outcome.append(proc.process.returncode)
            return True
        try:
            if proc.get("/-/ready")[0] == 200:
                outcome.append("serving")
                return True
        except OSError:
            pass
        return False

    wait_until(settled, what="the exporter to exit or serve")
    return outcome[0]
