"""``elevate-import-exporter hash-password``: a bcrypt hash that the exporter's own basic auth
and a running exporter's web config accept, made from a password typed without echo or
piped in as a line, which never shows in what the command prints."""

from __future__ import annotations

import base64
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from elevate_import_exporter.cli import cli
from elevate_import_exporter.httpd.auth import BasicAuth, PasswordError, hash_password
from elevate_import_exporter.httpd.webconfig import load_web_config
from elevate_import_exporter.simulator import Simulator
from tests.conftest import REPO, SIM_KEY, ExporterProcessFor, exporter_env
from tests.support import need_tool

# A space, a quote, a backslash and letters beyond ASCII: what a shell or an encoder mangles.
PASSWORD = 'pä55 "wörd"\\ ok'
PROCESS_TIMEOUT = 60.0


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def hash_of(stdin: str, *args: str) -> str:
    result = CliRunner().invoke(cli, ["hash-password", *args], input=stdin.encode())
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def refused(stdin: bytes, *args: str) -> str:
    """The command's output when it must refuse: exit status 2, no traceback."""
    result = CliRunner().invoke(cli, ["hash-password", *args], input=stdin)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    return result.output


def command() -> list[str]:
    script = Path(sys.executable).parent / "elevate-import-exporter"
    if script.exists():
        return [str(script), "hash-password"]
    return [sys.executable, "-m", "elevate_import_exporter", "hash-password"]


def test_a_piped_line_gives_a_hash_the_exporters_basic_auth_accepts_for_that_password() -> None:
    hashed = hash_of(PASSWORD + "\n")
    auth = BasicAuth({"prometheus": hashed})
    assert auth.check(basic("prometheus", PASSWORD))
    assert not auth.check(basic("prometheus", PASSWORD + "\n"))
    assert not auth.check(basic("prometheus", PASSWORD[:-1]))


def test_only_the_hash_goes_to_stdout_and_the_password_nowhere() -> None:
    result = CliRunner().invoke(cli, ["hash-password"], input=(PASSWORD + "\n").encode())
    assert result.exit_code == 0, result.output
    [line] = result.stdout.splitlines()
    assert line.startswith("$2b$10$")
    assert len(line) == 60
    assert PASSWORD not in result.output


@pytest.mark.parametrize("ending", ["\n", "\r\n", ""])
def test_the_line_break_of_a_piped_line_is_not_part_of_the_password(ending: str) -> None:
    hashed = hash_of(PASSWORD + ending + "a second line is not read\n")
    assert BasicAuth({"u": hashed}).check(basic("u", PASSWORD)) == (ending != "")
    if ending == "":
        # Without a line break the whole input is the one line.
        assert BasicAuth({"u": hashed}).check(basic("u", PASSWORD + "a second line is not read"))


@pytest.mark.parametrize("cost", ["4", "12"])
def test_the_cost_flag_sets_the_cost_of_the_hash(cost: str) -> None:
    hashed = hash_of("pw\n", "--cost", cost)
    assert hashed.startswith(f"$2b${int(cost):02d}$")
    assert BasicAuth({"u": hashed}).check(basic("u", "pw"))


@pytest.mark.parametrize("cost", ["3", "32", "-1", "ten", "10.5"])
def test_a_cost_outside_4_to_31_exits_2_naming_the_flag_and_value(cost: str) -> None:
    output = refused(b"pw\n", "--cost", cost)
    assert "--cost" in output
    assert cost in output


@pytest.mark.parametrize(
    ("stdin", "says"),
    [
        (b"", "no password on stdin"),
        (b"\n", "the password is empty"),
        ("ü".encode() * 37 + b"\n", "74 bytes long"),
        (b"x" * 100_000, "over 72 bytes"),
        (b"\xff\xfe secret\n", "not UTF-8"),
    ],
    ids=["nothing", "an empty line", "over 72 bytes", "a line without end", "not utf-8"],
)
def test_a_password_bcrypt_cannot_take_exits_2_without_showing_it(stdin: bytes, says: str) -> None:
    output = refused(stdin)
    assert says in output
    assert "ü" not in output
    assert "secret" not in output
    assert "xxxx" not in output


def test_a_hash_from_the_command_as_a_process_opens_a_running_exporter(
    tmp_path: Path, exporter_process: ExporterProcessFor
) -> None:
    made = subprocess.run(
        [*command(), "--cost", "5"],
        input=(PASSWORD + "\n").encode(),
        env=exporter_env(),
        cwd=REPO,
        capture_output=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    assert PASSWORD.encode() not in made.stdout + made.stderr
    hashed = made.stdout.decode().strip()
    config = tmp_path / "web-config.yml"
    config.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n", encoding="utf-8")
    with Simulator(api_key=SIM_KEY) as sim:
        exporter = exporter_process(
            "--elevate.base-url",
            sim.url,
            "--web.config.file",
            str(config),
            "--web.auth-exempt-health",
            "--storage.path",
            "",
            env={"ELEVATE_API_KEY": SIM_KEY},
        )
        right = exporter.get("/metrics", Authorization=basic("prometheus", PASSWORD))
        wrong = exporter.get("/metrics", Authorization=basic("prometheus", PASSWORD + "x"))
    assert right[0] == 200
    assert "elevate_import_up" in right[1]
    assert wrong[0] == 401


class Terminal:
    """The command as a process whose stdin and stderr are a terminal (a pty), as a person
    typing sees it: what the pty shows is what would be on the screen.

    Type only once the prompt's trailing space shows: getpass writes it after turning echo
    off and flushing what was typed before; click writes "Password:" earlier.
    """

    def __init__(self, *args: str) -> None:
        self.master, slave = pty.openpty()
        # A session of its own: no controlling terminal, so the prompt reads the pty on stdin.
        self.process = subprocess.Popen(
            [*command(), *args],
            env=exporter_env(),
            cwd=REPO,
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=slave,
            start_new_session=True,
        )
        os.close(slave)
        self.shown = b""
        self.seen = 0

    def wait_for(self, text: bytes) -> None:
        """Until ``text`` shows after what earlier waits saw."""
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while text not in self.shown[self.seen :]:
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r} on the terminal; it shows {self.shown!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # the process has ended and closed the pty
                    chunk = b""
                assert chunk, f"the terminal closed before {text!r}; it shows {self.shown!r}"
                self.shown += chunk
        self.seen = self.shown.index(text, self.seen) + len(text)

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def finish(self) -> tuple[int, bytes]:
        try:
            stdout, _ = self.process.communicate(timeout=PROCESS_TIMEOUT)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            os.close(self.master)
        return self.process.returncode, stdout


def test_at_a_terminal_the_password_is_asked_twice_without_echo() -> None:
    terminal = Terminal("--cost", "4")
    terminal.wait_for(b"Password: ")
    terminal.type(PASSWORD)
    terminal.wait_for(b"Again: ")
    terminal.type(PASSWORD)
    returncode, stdout = terminal.finish()
    assert returncode == 0, terminal.shown
    assert BasicAuth({"u": stdout.decode().strip()}).check(basic("u", PASSWORD))
    assert PASSWORD.encode() not in terminal.shown + stdout


def test_at_a_terminal_two_different_entries_are_asked_again_and_neither_shown() -> None:
    terminal = Terminal("--cost", "4")
    terminal.wait_for(b"Password: ")
    terminal.type("first-try")
    terminal.wait_for(b"Again: ")
    terminal.type("second-try")
    terminal.wait_for(b"do not match")
    terminal.wait_for(b"Password: ")
    terminal.type(PASSWORD)
    terminal.wait_for(b"Again: ")
    terminal.type(PASSWORD)
    returncode, stdout = terminal.finish()
    assert returncode == 0, terminal.shown
    assert BasicAuth({"u": stdout.decode().strip()}).check(basic("u", PASSWORD))
    for secret in (b"first-try", b"second-try", PASSWORD.encode()):
        assert secret not in terminal.shown + stdout


def test_an_htpasswd_bcrypt_hash_is_accepted_by_the_web_config_and_basic_auth(
    tmp_path: Path,
) -> None:
    # The documented way to make a hash without the exporter's venv (apache2-utils).
    htpasswd = need_tool("htpasswd")
    made = subprocess.run(
        [htpasswd, "-nbBC", "10", "prometheus", PASSWORD],
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        check=True,
    )
    user, _, hashed = made.stdout.strip().partition(":")
    config = tmp_path / "web-config.yml"
    config.write_text(f"basic_auth_users:\n  {user}: '{hashed}'\n", encoding="utf-8")
    users = load_web_config(config).basic_auth_users
    assert BasicAuth(users).check(basic("prometheus", PASSWORD))
    assert not BasicAuth(users).check(basic("prometheus", PASSWORD + "x"))


def test_a_2y_hash_as_htpasswd_writes_it_is_accepted_without_htpasswd(tmp_path: Path) -> None:
    # htpasswd -B writes the $2y$ prefix; its hashes are bcrypt's, so one made here with
    # that prefix stands for it where apache2-utils is not installed.
    hashed = "$2y$" + hash_of(PASSWORD + "\n", "--cost", "4")[4:]
    config = tmp_path / "web-config.yml"
    config.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n", encoding="utf-8")
    users = load_web_config(config).basic_auth_users
    assert BasicAuth(users).check(basic("prometheus", PASSWORD))


@pytest.mark.parametrize("cost", [3, 32])
def test_the_hashing_function_refuses_a_cost_outside_4_to_31(cost: int) -> None:
    with pytest.raises(PasswordError, match=f"got {cost}"):
        hash_password(b"pw", cost)
