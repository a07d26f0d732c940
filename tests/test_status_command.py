"""``status``: what a deploy pipeline sees, from real processes against the simulated API.

Exit statuses, ``--wait``, the timeout, JSON, the live view on a real pseudo-terminal,
plain lines into a pipe, Ctrl-C, and the key kept out of every output. CliRunner only
for the quick usage errors.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from elevate_import_exporter.cli import cli
from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from tests.conftest import EXPORTER_ENV, REPO, SIM_KEY, exporter_env
from tests.support import free_port, stop_process, wait_until

SGR = re.compile(r"\x1b\[[0-9;]*m")
CURSOR_UP = re.compile(r"\x1b\[\d+A")
PROCESS_TIMEOUT = 60.0
# An address nothing listens on: usage errors come before any request.
NOWHERE = "http://127.0.0.1:9"


@dataclass
class Finished:
    code: int
    stdout: str
    stderr: str


def status_env(**overrides: str) -> dict[str, str]:
    env = exporter_env(**{"ELEVATE_API_KEY": SIM_KEY, **overrides})
    if "NO_COLOR" not in overrides:
        env.pop("NO_COLOR", None)
    return env


def status_argv(base_url: str, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "elevate_import_exporter",
        "status",
        "--elevate.base-url",
        base_url,
        *args,
    ]


def run_status(base_url: str, *args: str, **env: str) -> Finished:
    """``status`` as a process with stdout and stderr into pipes; waits for its end."""
    done = subprocess.run(
        status_argv(base_url, *args),
        env=status_env(**env),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )
    return Finished(done.returncode, done.stdout.decode(), done.stderr.decode())


def invoke(args: list[str], **env: str) -> Result:
    environment: dict[str, str | None] = dict.fromkeys(EXPORTER_ENV)
    environment.update(env)
    return CliRunner().invoke(cli, args, env=environment)


def add(simulator: Simulator, import_id: str, *steps: Step, kind: str = "PRODUCTS") -> None:
    simulator.add_import(ScriptedImport(import_id, steps, type=kind))


# -- exit statuses ------------------------------------------------------------------------


def test_an_import_that_succeeded_exits_0_and_is_printed_once(simulator: Simulator) -> None:
    add(simulator, "1001", Step("SUCCESS"))
    done = run_status(simulator.url, "1001")
    assert done.code == 0, done.stderr
    assert done.stdout.split() == ["1001", "SUCCESS", "PRODUCTS"]


@pytest.mark.parametrize("final", ["FAILURE", "ABORTED"])
def test_an_import_that_failed_or_was_aborted_exits_1_with_its_message(
    simulator: Simulator, final: str
) -> None:
    add(simulator, "1001", Step("SUCCESS"))
    add(simulator, "1002", Step(final, message="Missing title on 3 products"))
    done = run_status(simulator.url, "1001", "1002", "--wait")
    assert done.code == 1, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("1002"))
    assert line.split()[1] == final
    assert "Missing title on 3 products" in line
    assert done.stdout.splitlines()[-1].startswith("failed: 1 of 2")


def test_an_id_the_cluster_does_not_know_exits_1_also_after_waiting(
    simulator: Simulator,
) -> None:
    assert run_status(simulator.url, "4242").code == 1
    simulator.reset_counts()
    waited = run_status(simulator.url, "4242", "--wait", "--timeout", "2s", "--interval", "1s")
    assert waited.code == 1, waited.stdout
    # Asked more than once: an import started a moment ago may not be known yet.
    assert simulator.requests_for("4242") >= 2


def test_an_id_unknown_at_first_is_waited_for_until_the_cluster_knows_it(
    simulator: Simulator,
) -> None:
    add(simulator, "1001", Step("NOT_FOUND", seconds=1.5), Step("SUCCESS"))
    done = run_status(simulator.url, "1001", "--wait", "--interval", "1s")
    assert done.code == 0, done.stdout
    assert [line.split()[1] for line in done.stdout.splitlines()[:-1]] == [
        "NOT_FOUND",
        "SUCCESS",
    ]


def test_a_wrong_key_exits_3_at_once_even_with_a_long_wait(simulator: Simulator) -> None:
    add(simulator, "1001", Step("IN_PROGRESS"))
    # Ending at all (the process would otherwise wait 10 minutes) shows it gave up at once.
    done = run_status(
        simulator.url, "1001", "--wait", "--timeout", "10m", ELEVATE_API_KEY="not-the-key"
    )
    assert done.code == 3, done.stdout
    assert "forbidden" in done.stdout
    assert simulator.requests_for("1001") == 1


def test_a_cluster_that_is_not_found_exits_3_at_once(simulator: Simulator) -> None:
    simulator.cluster_missing = True
    done = run_status(simulator.url, "1001", "1002", "--wait", "--timeout", "10m")
    assert done.code == 3, done.stdout
    assert "cluster_not_found" in done.stdout


def test_server_errors_until_the_timeout_exit_3(simulator: Simulator) -> None:
    add(simulator, "1001", Step("SUCCESS"))
    add(simulator, "1002", Step("IN_PROGRESS"))
    simulator.fail_ids.add("1002")
    done = run_status(
        simulator.url,
        *("1001", "1002", "--wait", "--timeout", "3s", "--interval", "1s"),
        *("--elevate.retries", "0"),
    )
    assert done.code == 3, done.stdout
    assert "server_error" in done.stdout
    assert simulator.requests_for("1002") >= 2, "it did not keep trying until the timeout"
    # A final status is never asked for again.
    assert simulator.requests_for("1001") == 1


def test_an_import_still_in_progress_at_the_timeout_exits_4(simulator: Simulator) -> None:
    add(simulator, "1001", Step("IN_PROGRESS"))
    done = run_status(simulator.url, "1001", "--wait", "--timeout", "2s", "--interval", "1s")
    assert done.code == 4, done.stdout
    assert done.stdout.splitlines()[-1].startswith("timed out after 2s: 1 of 1 still")


def test_without_wait_an_import_on_its_way_exits_4_after_one_question(
    simulator: Simulator,
) -> None:
    add(simulator, "1001", Step("WAITING"))
    done = run_status(simulator.url, "1001")
    assert done.code == 4
    assert done.stdout.split()[:2] == ["1001", "WAITING"]
    assert simulator.requests_for("1001") == 1


def test_wait_sees_an_import_move_from_waiting_to_success(simulator: Simulator) -> None:
    add(
        simulator,
        "1001",
        *(Step("WAITING", seconds=1.2), Step("IN_PROGRESS", seconds=1.2), Step("SUCCESS")),
    )
    add(simulator, "1002", Step("SUCCESS"))
    done = run_status(simulator.url, "1001", "1002", "--wait", "--interval", "1s")
    assert done.code == 0, done.stdout
    seen = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("1001")]
    # A line per change, not per poll: each status once, in the order they came.
    assert seen == ["WAITING", "IN_PROGRESS", "SUCCESS"][: len(seen)]
    assert seen[0] == "WAITING"
    assert seen[-1] == "SUCCESS"
    assert done.stdout.splitlines()[-1].startswith("succeeded: 2 of 2 SUCCESS")


# -- usage and configuration errors: exit 2 ---------------------------------------------------


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["12/34"], "12/34"),
        (["1001", "--timeout", "5minutes"], "--timeout"),
        (["1001", "--timeout", "0s"], "--timeout"),
        (["1001", "--interval", "0s"], "--interval"),
        (["1001", "--interval", "1.5s"], "--interval"),
        (["1001", "--elevate.concurrency", "0"], "--elevate.concurrency"),
        (["1001", "--elevate.api", "web-v9"], "--elevate.api"),
        (["not-digits", "--elevate.api", "admin-v4"], "not-digits"),
    ],
)
def test_a_bad_id_or_value_exits_2_with_one_line_naming_it(args: list[str], named: str) -> None:
    result = invoke(["status", "--elevate.base-url", NOWHERE, *args], ELEVATE_API_KEY="k")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]
    assert result.stdout == ""


def test_no_key_exits_2_naming_the_key_variable() -> None:
    result = invoke(["status", "--elevate.base-url", NOWHERE, "1001"])
    assert result.exit_code == 2
    assert "ELEVATE_API_KEY" in result.stderr


def test_no_id_at_all_is_a_usage_error() -> None:
    result = invoke(["status", "--elevate.base-url", NOWHERE], ELEVATE_API_KEY="k")
    assert result.exit_code == 2
    assert "ID..." in result.stderr


def test_the_help_lists_every_exit_status() -> None:
    text = " ".join(invoke(["status", "--help"]).stdout.split())
    for code in ("0", "1", "2", "3", "4", "130"):
        assert re.search(rf"\b{code} [a-z]", text), code


# -- JSON -----------------------------------------------------------------------------------


def check_document(doc: Any) -> None:
    """The document's shape, as docs/ids.md (In a pipeline) promises it."""
    assert set(doc) == {"outcome", "exit_code", "elapsed_seconds", "imports"}
    outcomes = {"succeeded": 0, "failed": 1, "api_failing": 3, "unfinished": 4}
    assert outcomes[doc["outcome"]] == doc["exit_code"]
    assert isinstance(doc["elapsed_seconds"], float | int)
    for imp in doc["imports"]:
        assert set(imp) == {"id", "status", "type", "message", "final", "error"}
        assert isinstance(imp["id"], str)
        assert isinstance(imp["final"], bool)
        for key in ("status", "type", "message"):
            assert imp[key] is None or isinstance(imp[key], str)
        if imp["error"] is not None:
            assert set(imp["error"]) == {"reason", "code", "detail"}


def test_json_output_is_one_document_with_every_import_and_the_outcome(
    simulator: Simulator,
) -> None:
    add(simulator, "1001", Step("SUCCESS"))
    add(simulator, "1002", Step("FAILURE", message="Bad feed"), kind="PANELS")
    add(simulator, "1003", Step("IN_PROGRESS"))
    simulator.fail_ids.add("1003")
    done = run_status(
        simulator.url,
        *("1001", "1002", "1003", "1004", "--output", "json", "--elevate.retries", "0"),
    )
    doc = json.loads(done.stdout)
    check_document(doc)
    assert doc["exit_code"] == done.code == 1
    by_id = {imp["id"]: imp for imp in doc["imports"]}
    assert list(by_id) == ["1001", "1002", "1003", "1004"]
    assert by_id["1001"] == {
        "id": "1001",
        "status": "SUCCESS",
        "type": "PRODUCTS",
        "message": "",
        "final": True,
        "error": None,
    }
    assert by_id["1002"]["message"] == "Bad feed"
    assert by_id["1002"]["type"] == "PANELS"
    assert by_id["1003"]["status"] is None
    assert by_id["1003"]["error"]["reason"] == "server_error"
    assert by_id["1003"]["error"]["code"] == "500"
    assert by_id["1004"]["status"] == "NOT_FOUND"
    assert by_id["1004"]["final"] is False


def test_json_output_after_waiting_reports_the_timeout(simulator: Simulator) -> None:
    add(simulator, "1001", Step("BLOCKED"))
    done = run_status(
        simulator.url, "1001", "--wait", "--timeout", "1s", "--interval", "1s", "--output", "json"
    )
    doc = json.loads(done.stdout)
    check_document(doc)
    assert (doc["outcome"], done.code) == ("unfinished", 4)
    assert doc["imports"][0]["status"] == "BLOCKED"


# -- where the output goes: a terminal, a pipe ------------------------------------------------


class Screen:
    """Just enough of a terminal to replay what the live view writes: text, CR, LF,
    cursor up (CSI n A), clear line (CSI 2 K); colours and cursor visibility ignored."""

    def __init__(self) -> None:
        self.lines: list[str] = [""]
        self.row = self.col = 0

    def feed(self, text: str) -> None:
        for token in re.findall(r"\x1b\[[?0-9;]*[A-Za-z]|\r|\n|[^\x1b\r\n]+", text):
            if token == "\r":
                self.col = 0
            elif token == "\n":
                self.row, self.col = self.row + 1, 0
            elif token.startswith("\x1b["):
                self._control(token)
            else:
                self._put(token)
            while len(self.lines) <= self.row:
                self.lines.append("")

    def _control(self, token: str) -> None:
        if token.endswith("A"):
            self.row = max(0, self.row - int(token[2:-1] or 1))
        elif token == "\x1b[2K":
            self.lines[self.row] = ""

    def _put(self, text: str) -> None:
        line = self.lines[self.row].ljust(self.col)
        self.lines[self.row] = line[: self.col] + text + line[self.col + len(text) :]
        self.col += len(text)

    def text(self) -> list[str]:
        return [line for line in self.lines if line.strip()]


@contextlib.contextmanager
def on_a_terminal(
    base_url: str, *args: str, stderr_too: bool = False, **env: str
) -> Iterator[tuple[subprocess.Popen[bytes], list[bytes]]]:
    """``status`` with its stdout (and with ``stderr_too`` its stderr) on a real
    pseudo-terminal of 40 rows and 120 columns; yields the process and what it has
    written so far (read from the terminal's master side by a thread)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(
        status_argv(base_url, *args),
        env=status_env(TERM="xterm-256color", **env),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave if stderr_too else subprocess.PIPE,
    )
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                if process.poll() is not None:
                    return
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield process, chunks
        process.wait(timeout=PROCESS_TIMEOUT)
        reader.join(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)


def test_on_a_terminal_the_lines_are_updated_in_place_in_colour(simulator: Simulator) -> None:
    add(simulator, "1001", Step("WAITING", seconds=1.2), Step("SUCCESS"))
    add(simulator, "1002", Step("IN_PROGRESS", seconds=1.2), Step("FAILURE", message="No title"))
    with on_a_terminal(simulator.url, "1001", "1002", "--wait", "--interval", "1s") as (
        process,
        chunks,
    ):
        pass
    assert process.returncode == 1
    raw = b"".join(chunks).decode()
    assert CURSOR_UP.search(raw), "no cursor movement: the lines were not redrawn in place"
    assert "\x1b[2K" in raw
    assert "\x1b[32mSUCCESS" in raw
    assert "\x1b[1;31mFAILURE" in raw
    assert raw.endswith("\x1b[?25h"), "the cursor is hidden for good"
    screen = Screen()
    screen.feed(raw)
    shown = [SGR.sub("", line).split() for line in screen.text()]
    # Redrawn, not appended: one line per id and the footer, however many updates.
    assert [line[:2] for line in shown[:2]] == [["1001", "SUCCESS"], ["1002", "FAILURE"]]
    assert shown[1][2:] == ["PRODUCTS", "No", "title"]
    assert shown[2][0] == "failed:"
    assert len(shown) == 3
    assert raw.count("WAITING") >= 1


def test_NO_COLOR_keeps_the_live_view_but_drops_the_colours(simulator: Simulator) -> None:
    add(simulator, "1001", Step("WAITING", seconds=1.2), Step("SUCCESS"))
    with on_a_terminal(simulator.url, "1001", "--wait", "--interval", "1s", NO_COLOR="1") as (
        process,
        chunks,
    ):
        pass
    assert process.returncode == 0
    raw = b"".join(chunks).decode()
    assert CURSOR_UP.search(raw)
    assert SGR.search(raw) is None, repr(raw)


def test_log_lines_wait_until_the_live_view_on_the_same_terminal_has_ended() -> None:
    # A 503 with Retry-After holds back the whole API, which is logged as a warning.
    with (
        recording_server(busy_answers=1, retry_after=1) as server,
        on_a_terminal(
            server.url,
            "1001",
            "--wait",
            "--interval",
            "1s",
            "--elevate.retries",
            "0",
            stderr_too=True,
        ) as (process, chunks),
    ):
        pass
    assert process.returncode == 0
    screen = Screen()
    screen.feed(b"".join(chunks).decode().replace("\n", "\r\n"))
    shown = [SGR.sub("", line) for line in screen.text()]
    assert shown[0].split()[:2] == ["1001", "SUCCESS"]
    assert shown[1].startswith("succeeded: 1 of 1")
    assert "Retry-After" in shown[2]
    assert len(shown) == 3


def test_into_a_pipe_the_lines_are_plain_without_escape_sequences(simulator: Simulator) -> None:
    add(simulator, "1001", Step("WAITING", seconds=1.2), Step("SUCCESS"))
    done = run_status(simulator.url, "1001", "--wait", "--interval", "1s", TERM="xterm")
    assert done.code == 0
    assert "\x1b" not in done.stdout + done.stderr
    assert [line.split()[:2] for line in done.stdout.splitlines()[:-1]] == [
        ["1001", "WAITING"],
        ["1001", "SUCCESS"],
    ]


def test_a_message_with_line_breaks_stays_on_its_line(simulator: Simulator) -> None:
    add(simulator, "1001", Step("FAILURE", message="line one\nline two\n\tthree"))
    done = run_status(simulator.url, "1001")
    assert done.stdout.splitlines() == ["1001  FAILURE      PRODUCTS  line one line two three"]


# -- Ctrl-C ---------------------------------------------------------------------------------


def test_ctrl_c_ends_the_wait_at_once_with_130_and_no_traceback(
    simulator: Simulator, tmp_path: Path
) -> None:
    add(simulator, "1001", Step("IN_PROGRESS"))
    add(simulator, "1002", Step("IN_PROGRESS"))
    # 1002's answer hangs for a minute: Ctrl-C must not wait for it.
    simulator.hang_seconds = 60
    simulator.hang_ids.add("1002")
    out = tmp_path / "status.out"
    with out.open("wb") as sink:
        process = subprocess.Popen(
            status_argv(simulator.url, "1001", "1002", "--wait", "--elevate.timeout", "60"),
            env=status_env(),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: simulator.requests_for("1002") >= 1, what="the hanging request")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = out.read_text()
    assert "Traceback" not in text
    assert "KeyboardInterrupt" not in text


def test_ctrl_c_on_a_terminal_gives_the_cursor_back(simulator: Simulator) -> None:
    add(simulator, "1001", Step("IN_PROGRESS"))
    with on_a_terminal(simulator.url, "1001", "--wait") as (process, chunks):
        wait_until(lambda: b"IN_PROGRESS" in b"".join(chunks), what="the live view")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 130
    raw = b"".join(chunks).decode()
    assert raw.endswith("\x1b[?25h")
    assert process.stderr is not None
    assert b"Traceback" not in process.stderr.read()


# -- the key --------------------------------------------------------------------------------


def test_the_key_never_appears_in_any_output(simulator: Simulator) -> None:
    key = "s3cr3t-Key-0123456789"
    simulator.api_key = key
    add(simulator, "1001", Step("FAILURE", message=f"rejected key {key} for feed"))
    outputs = []
    for args in (("--wait",), ("--output", "json"), ("--log.level", "debug")):
        done = run_status(simulator.url, "1001", *args, ELEVATE_API_KEY=key)
        assert done.code == 1, done.stderr
        outputs.append(done.stdout + done.stderr)
    simulator.api_key = "another"
    denied = run_status(simulator.url, "1001", "--log.level", "debug", ELEVATE_API_KEY=key)
    assert denied.code == 3
    outputs.append(denied.stdout + denied.stderr)
    assert all(key not in output for output in outputs)
    assert "rejected key <redacted> for feed" in outputs[0]


# -- respecting the API ---------------------------------------------------------------------


class Recording(BaseHTTPRequestHandler):
    """Answers every status query SUCCESS after holding it a while; counts what is in flight."""

    server: RecordingServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        server = self.server
        with server.lock:
            server.in_flight += 1
            server.most_in_flight = max(server.most_in_flight, server.in_flight)
            server.times.append(time.monotonic())
            busy = server.busy_answers > 0
            server.busy_answers -= busy
        time.sleep(server.hold)
        with server.lock:
            server.in_flight -= 1
        import_id = self.path.rsplit("/", 1)[-1]
        if busy:
            body = b'{"message": "busy"}'
            self.send_response(503)
            self.send_header("Retry-After", str(server.retry_after))
        else:
            body = json.dumps({"id": import_id, "status": "SUCCESS", "type": "ADS"}).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class RecordingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hold: float = 0.0, busy_answers: int = 0, retry_after: int = 0) -> None:
        super().__init__(("127.0.0.1", 0), Recording)
        self.lock = threading.Lock()
        self.in_flight = self.most_in_flight = 0
        self.times: list[float] = []
        self.hold, self.busy_answers, self.retry_after = hold, busy_answers, retry_after

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextlib.contextmanager
def recording_server(**options: Any) -> Iterator[RecordingServer]:
    server = RecordingServer(**options)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_no_more_requests_are_in_flight_than_the_concurrency_allows() -> None:
    ids = [f"id-{n}" for n in range(8)]
    with recording_server(hold=0.3) as server:
        done = run_status(server.url, *ids, "--elevate.concurrency", "2")
    assert done.code == 0, done.stdout + done.stderr
    assert len(server.times) == len(ids)
    assert 1 <= server.most_in_flight <= 2


def test_a_retry_after_is_waited_for_before_asking_again() -> None:
    with recording_server(busy_answers=1, retry_after=3) as server:
        done = run_status(
            server.url, "1001", "--wait", "--interval", "1s", "--elevate.retries", "0"
        )
    assert done.code == 0, done.stdout + done.stderr
    assert len(server.times) == 2
    assert server.times[1] - server.times[0] >= 3.0


# -- Elevate 4 ------------------------------------------------------------------------------

# Beyond 2**53: a client that read it as a float would ask for, or report, another id.
BIG_ID = "5537431447739019570123"


@pytest.mark.parametrize("flavour", ["admin-v4", "admin-v3"])
def test_status_speaks_the_admin_flavours_with_ids_beyond_2_to_the_53(flavour: str) -> None:
    imports = [
        ScriptedImport(BIG_ID, (Step("IN_PROGRESS", seconds=1.2), Step("SUCCESS"))),
        ScriptedImport("1002", (Step("FAILURE", message="No title"),)),
    ]
    with Simulator(imports, api_key=SIM_KEY, api=flavour) as sim:
        args = (BIG_ID, "1002", "--elevate.api", flavour, "--wait", "--interval", "1s")
        done = run_status(sim.url, *args, "--output", "json")
        assert sim.requests_for(BIG_ID) >= 2
    doc = json.loads(done.stdout)
    check_document(doc)
    assert done.code == 1
    by_id = {imp["id"]: imp for imp in doc["imports"]}
    assert by_id[BIG_ID]["status"] == "SUCCESS"
    assert by_id["1002"]["message"] == "No title"


def test_status_against_simulate_api_admin_v4_processes(tmp_path: Path) -> None:
    waiting = {"status": "WAITING", "seconds": 1.2}
    scenario = tmp_path / "scenario.json"
    scenario.write_text(
        json.dumps(
            [
                {"id": BIG_ID, "steps": [waiting, {"status": "SUCCESS"}]},
                {"id": "1002", "type": None, "steps": [{"status": "SUCCESS"}]},
            ]
        )
    )
    port = free_port()
    out = tmp_path / "simulate.out"
    with out.open("wb") as sink:
        simulator = subprocess.Popen(
            [
                *(sys.executable, "-m", "elevate_import_exporter", "simulate"),
                *("--api", "admin-v4", "--scenario", str(scenario)),
                *("--web.listen-address", f"127.0.0.1:{port}"),
            ],
            env=status_env(),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: "admin-v4" in out.read_text(), what="the simulator to serve")
        url = f"http://127.0.0.1:{port}"
        args = (BIG_ID, "1002", "--elevate.api", "admin-v4", "--wait", "--interval", "1s")
        done = run_status(url, *args)
        # The same id asked the Web API v2 way is refused: the simulator speaks v4.
        v2 = run_status(url, BIG_ID, "--output", "json")
    finally:
        stop_process(simulator)
    assert done.code == 0, done.stdout + done.stderr
    lines = [line.split() for line in done.stdout.splitlines()[:-1]]
    assert {line[0]: line[1] for line in lines} == {BIG_ID: "SUCCESS", "1002": "SUCCESS"}
    assert [line[1] for line in lines if line[0] == BIG_ID] == ["WAITING", "SUCCESS"]
    assert v2.code == 3, v2.stdout
    assert json.loads(v2.stdout)["imports"][0]["error"]["code"] == "404"


def test_simulate_refuses_an_api_flavour_it_does_not_know() -> None:
    result = invoke(["simulate", "--api", "web-v9"])
    assert result.exit_code == 2
    assert "web-v9" in result.stderr
