"""The command line: version, configuration errors, environment variables, start and stop."""

from __future__ import annotations

import contextlib
import errno
import importlib.metadata
import json
import re
import select
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from elevate_import_exporter.cli import cli
from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from elevate_import_exporter.site.web import DRAIN_SECONDS
from tests.conftest import EXPORTER_ENV, SIM_KEY, ExporterProcess, ExporterProcessFor
from tests.support import Scrape, free_port, fresh_store_path, wait_until

# What pip installed, not the package's own constant: the two must agree.
INSTALLED_VERSION = importlib.metadata.version("elevate-import-exporter")
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
    # The second wave's, as the contract names them.
    ("--elevate.min-poll-interval", "ELEVATE_MIN_POLL_INTERVAL", "10s"),
    ("--imports.max-tracked", "ELEVATE_EXPORTER_IMPORTS_MAX_TRACKED", "10000"),
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
    environment["ELEVATE_EXPORTER_STORAGE_PATH"] = fresh_store_path()
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
    assert INSTALLED_VERSION in result.stdout


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


def test_run_with_a_bad_second_listen_address_exits_2_naming_it() -> None:
    args = ["run", "--elevate.base-url", NOWHERE, "--web.listen-address", "127.0.0.1:9"]
    result = invoke([*args, "--web.listen-address", "1.2.3.4"], ELEVATE_API_KEY=SIM_KEY)
    assert_setup_error(result, "--web.listen-address", "1.2.3.4")


@pytest.mark.parametrize(
    ("flags", "variable"),
    [
        (["--web.listen-address", "127.0.0.1:9", "--web.listen-address", "127.0.0.1:9"], None),
        ([], "127.0.0.1:9,127.0.0.1:9"),
        ([], "127.0.0.1:9, [::1]:9 127.0.0.1:9"),
    ],
)
def test_a_listen_address_given_twice_exits_2_naming_it(
    flags: list[str], variable: str | None
) -> None:
    env = {"ELEVATE_API_KEY": SIM_KEY}
    if variable is not None:
        env["ELEVATE_EXPORTER_LISTEN_ADDRESS"] = variable
    result = invoke(["run", "--elevate.base-url", NOWHERE, *flags], **env)
    assert_setup_error(result, "--web.listen-address", "127.0.0.1:9", "more than once")


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
        ("--elevate.min-poll-interval", "25h"),
        ("--elevate.min-poll-interval", "1.5s"),
        ("--imports.max-tracked", "-1"),
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
        ("ELEVATE_MIN_POLL_INTERVAL", "10", "--elevate.min-poll-interval"),
        ("ELEVATE_EXPORTER_IMPORTS_MAX_TRACKED", "0", "--imports.max-tracked"),
        ("ELEVATE_EXPORTER_LISTEN_ADDRESS", "abc", "--web.listen-address"),
        ("ELEVATE_EXPORTER_TELEMETRY_PATH", "nope", "--web.telemetry-path"),
        ("ELEVATE_EXPORTER_LOG_LEVEL", "loud", "--log.level"),
        ("ELEVATE_EXPORTER_LOG_FORMAT", "xml", "--log.format"),
        ("ELEVATE_EXPORTER_IMPORTS_RETENTION", "0s", "--imports.retention"),
        ("ELEVATE_EXPORTER_STORAGE_HISTORY", "forever", "--storage.history"),
        ("ELEVATE_EXPORTER_PROXY_LISTEN_ADDRESS", ":99999", "--proxy.listen-address"),
        ("ELEVATE_EXPORTER_PROXY_TIMEOUT", "2d", "--proxy.timeout"),
        ("ELEVATE_EXPORTER_PROXY_LABEL_HEADER", "Api-Key", "--proxy.label-header"),
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


def test_the_tests_clear_every_environment_variable_a_command_reads() -> None:
    # EXPORTER_ENV keeps the shell's settings away from the exporters the tests start.
    read = {
        name
        for command in cli.commands.values()
        for param in command.params
        for name in ([param.envvar] if isinstance(param.envvar, str) else param.envvar or [])
    }
    not_flags = {
        "ELEVATE_API_KEY",
        "ELEVATE_EXPORTER_PASSWORD",
        "ELEVATE_EXPORTER_REGISTRATION_PASSWORD",
    }
    assert read | not_flags == set(EXPORTER_ENV)


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
            # Asked in the start-up round; the scrape right after is answered from it.
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
        proc.assert_setup_error(address)


def test_a_stop_signal_is_obeyed_promptly_even_while_a_scrape_waits_for_elevate(
    exporter_process: ExporterProcessFor, simulator: Simulator
) -> None:
    proc = exporter_process(
        "--elevate.base-url",
        simulator.url,
        "--elevate.import-id",
        "1001",
        "--elevate.timeout",
        "30",
        "--elevate.min-poll-interval",
        "0s",
        env={"ELEVATE_API_KEY": SIM_KEY},
    )
    # After the start-up round, so that it is the scrape that waits.
    simulator.hang_ids.add("1001")
    simulator.reset_counts()

    def scrape() -> None:
        # The scrape loses its connection when the process ends: not what is tested.
        with contextlib.suppress(OSError):
            proc.get("/metrics", **{"X-Prometheus-Scrape-Timeout-Seconds": "30"})

    scraper = threading.Thread(target=scrape, daemon=True)
    scraper.start()
    wait_until(lambda: simulator.requests_for("1001") >= 1, what="the scrape to reach Elevate")

    proc.process.terminate()
    # The round's deadline is 30 s away: an exporter that waits for it, rather than for
    # the drain time at most, is not stopping.
    limit = DRAIN_SECONDS + 5
    try:
        returncode = proc.process.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the exporter still ran {limit} s after SIGTERM, waiting for its poll round")
    assert returncode == 0
    assert "Traceback" not in proc.stderr()
    scraper.join(timeout=30)


def test_a_stop_signal_is_obeyed_promptly_while_the_start_up_round_waits_for_elevate(
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
        wait=False,
    )
    wait_until(lambda: simulator.requests_for("1001") >= 1, what="the start-up round to ask")

    def ready_status() -> int | None:
        try:
            return proc.get("/-/ready")[0]
        except OSError:  # not serving yet
            return None

    # Not ready while the first round runs: a probe must not send scrapes yet.
    assert wait_until(ready_status, what="the exporter to answer /-/ready") == 503

    proc.process.terminate()
    try:
        returncode = proc.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail("the exporter still ran 5 s after SIGTERM, waiting for its start-up round")
    assert returncode == 0
    assert "Traceback" not in proc.stderr()


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


# -- `run` with no optional flag: the documented defaults, seen from outside ----------------

STATUS_PATH = "/api/v2/import/status/"
BUSY = "busy"  # answered 503 every time
HANG = "hang"  # its first request is never answered
FILLERS = [f"f{n:02d}" for n in range(16)]
# What the contract promises for `run` without its optional flags.
CONCURRENCY = 8
TIMEOUT = 5.0


class _Upstream(ThreadingHTTPServer):
    """Elevate as the defaults test needs it: it measures the exporter's own limits.

    A filler id is answered once ``CONCURRENCY`` requests are in flight at once (or
    after a few seconds without), and a moment later still, so that a ninth request
    sent alongside would be seen in flight too. The first request for ``HANG`` is held
    until the client gives up on it, and how long that took is kept. It records when
    each request arrived.
    """

    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _UpstreamHandler)
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.arrivals: dict[str, list[float]] = {}
        self.enough_in_flight = threading.Event()
        self.hang_given_up_after: float | None = None
        self.stopping = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def requests_total(self) -> int:
        with self.lock:
            return sum(len(times) for times in self.arrivals.values())

    def arrived(self, import_id: str) -> int:
        with self.lock:
            times = self.arrivals.setdefault(import_id, [])
            times.append(time.monotonic())
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            if self.in_flight >= CONCURRENCY:
                self.enough_in_flight.set()
            return len(times)

    def left(self) -> None:
        with self.lock:
            self.in_flight -= 1


class _UpstreamHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Upstream

    def do_GET(self) -> None:
        import_id = self.path.removeprefix(STATUS_PATH)
        nth = self.server.arrived(import_id)
        # No longer in flight before the answer leaves: the client's next request may
        # arrive on another connection the moment it has this answer.
        try:
            if import_id == HANG and nth == 1:
                self._wait_for_the_client_to_leave()
                return
            if import_id == BUSY:
                status, body = 503, b'{"error": "busy"}'
            else:
                if import_id != HANG:
                    self.server.enough_in_flight.wait(3)
                    self.server.stopping.wait(0.3)
                status, body = 200, json.dumps({"id": import_id, "status": "IN_PROGRESS"}).encode()
        finally:
            self.server.left()
        self._answer(status, body)

    def _wait_for_the_client_to_leave(self) -> None:
        arrived = time.monotonic()
        while not self.server.stopping.is_set():
            # The client sends nothing more on this connection: readable means closed.
            readable, _, _ = select.select([self.connection], [], [], 0.05)
            if readable:
                self.server.hang_given_up_after = time.monotonic() - arrived
                return

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[_Upstream]:
    server = _Upstream()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.stopping.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def own_samples(scraped: Scrape) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {k: v for k, v in scraped.samples.items() if k[0].startswith("elevate_import_")}


LOGFMT_VALUE = r'(?:"(?:[^"\\]|\\.)*"|[^\s"=\\]+)'
LOGFMT_LINE = re.compile(rf"\w+={LOGFMT_VALUE}(?: \w+={LOGFMT_VALUE})*")


def test_run_without_optional_flags_polls_with_the_documented_defaults(
    exporter_process: ExporterProcessFor, upstream: _Upstream
) -> None:
    ids = [BUSY, HANG, *FILLERS]
    # Only the required settings. The fixture adds a free port to listen on: the default
    # port has a test of its own, which skips when something else holds that port.
    proc = exporter_process(
        "--elevate.base-url",
        upstream.url,
        *(arg for i in ids for arg in ("--elevate.import-id", i)),
        env={"ELEVATE_API_KEY": SIM_KEY},
        wait=False,
    )
    # The start-up round: the hanging id's first try takes the whole request timeout.
    proc.wait_ready(timeout=30)
    asked = upstream.requests_total()

    # --web.telemetry-path /metrics
    status, text = proc.get("/metrics")
    assert status == 200
    scraped, again = Scrape(text), Scrape(proc.get("/metrics")[1])
    # --elevate.min-poll-interval 10s: scrapes right after a round ask Elevate nothing,
    # and show that round.
    assert upstream.requests_total() == asked
    assert own_samples(again) == own_samples(scraped)

    # --elevate.concurrency 8: eight requests in flight at once, never a ninth.
    assert upstream.most_in_flight == CONCURRENCY
    # --elevate.retries 1: a 503 is tried twice.
    assert len(upstream.arrivals[BUSY]) == 2
    assert scraped.value("elevate_import_api_requests_total", code="503") == 2
    # --elevate.timeout 5: the hanging try is given up after 5 s, and its retry answered.
    given_up = upstream.hang_given_up_after
    assert given_up is not None
    assert TIMEOUT - 0.5 <= given_up < TIMEOUT + 1.5
    assert len(upstream.arrivals[HANG]) == 2
    assert scraped.value("elevate_import_api_requests_total", code="timeout") == 1
    assert scraped.value("elevate_import_poll_success", id=HANG) == 1
    assert all(scraped.value("elevate_import_poll_success", id=i) == 1 for i in FILLERS)

    assert proc.stop() == 0
    # --log.format logfmt and --log.level info: every line is logfmt, none is debug.
    lines = [line for line in proc.stderr().splitlines() if line.strip()]
    assert lines
    for line in lines:
        assert LOGFMT_LINE.fullmatch(line), line
        assert re.match(r"ts=\S+ level=(info|warning|error) ", line), line
    assert any(" level=info " in line for line in lines), lines


def port_is_free(port: int) -> bool:
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind((host, port))
            except OSError as error:
                if family == socket.AF_INET6 and error.errno == errno.EADDRNOTAVAIL:
                    continue  # no IPv6 on this machine
                return False
    return True


def test_run_without_a_listen_address_serves_on_port_10025_of_every_address(
    exporter_process: ExporterProcessFor, simulator: Simulator
) -> None:
    if not port_is_free(10025):
        pytest.skip("port 10025 is in use on this machine: the default cannot be tried")
    simulator.add_import(ScriptedImport("1001", (Step("WAITING"),)))
    proc = exporter_process(
        "--elevate.base-url",
        simulator.url,
        "--elevate.import-id",
        "1001",
        env={"ELEVATE_API_KEY": SIM_KEY},
        reach_at="127.0.0.1:10025",
    )
    status, text = proc.get("/metrics")
    assert status == 200
    assert Scrape(text).current_status("1001") == "WAITING"
    if ipv6_loopback():
        with urllib.request.urlopen("http://[::1]:10025/-/healthy", timeout=10) as answer:
            assert answer.status == 200
    assert proc.stop() == 0


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_a_non_numeric_id_with_the_admin_api_from_the_environment_exits_2_naming_it() -> None:
    result = invoke(
        ["run", "--elevate.base-url", NOWHERE],
        ELEVATE_API_KEY=SIM_KEY,
        ELEVATE_API="admin-v4",
        ELEVATE_IMPORT_IDS="5537431447739019570,feed-7",
    )
    assert_setup_error(result, "'feed-7'", "admin-v4")
