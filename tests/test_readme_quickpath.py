"""The README's five-minute path, followed as a new user would: every command copy-pasted.

The commands are read from the README itself, from the fenced blocks after the markers
``<!-- quick-path: serve -->`` (a long-running command of its own terminal: the
simulator, the exporter) and ``<!-- quick-path: run -->`` (the feed job's terminal, run
in order in one shell). They run in a temporary folder with the installed entry point
first on PATH. The only change to them: the three well-known ports (10025 the exporter,
10026 the simulator, 10027 the import proxy) become free ones, written over in the text
and given to the two commands that take their port from a default, so that the test runs
beside other tests and a developer's own demo.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.conftest import REPO, exporter_env
from tests.support import free_port, missing, need_tool, stop_process, wait_until

README = REPO / "README.md"
BLOCK = re.compile(r"<!-- quick-path: (setup|serve|run) -->\n```sh\n(.*?)```", re.DOTALL)
EXPORTER, SIMULATOR, PROXY = "10025", "10026", "10027"
# Starting two processes and their first poll round, on a loaded 2-core machine.
START_TIMEOUT = 60.0
# The commands' own bound: the README's `status --wait --timeout 2m`, and a minute to spare.
RUN_TIMEOUT = 180.0


def blocks(kind: str) -> list[str]:
    return [text for found, text in BLOCK.findall(README.read_text("utf-8")) if found == kind]


def test_the_readme_marks_a_quick_path_from_setup_to_serving_to_a_feed() -> None:
    (setup,) = blocks("setup")
    serve, run = blocks("serve"), blocks("run")
    assert len(serve) == 2, "one block each: the simulator, then the exporter"
    assert "simulate" in serve[0]
    assert "elevate-import-exporter run" in serve[1]
    assert PROXY in serve[1]
    script = "\n".join(run)
    # The feed goes through the proxy with curl; another id is handed over with track.
    # One command: its further lines are indented, after a backslash or inside quotes.
    one_command = rf"^curl (?:[^\n]|\n(?=\s))*?localhost:{PROXY}/api/v2/import/"
    assert re.search(one_command, script, re.MULTILINE), script
    assert "elevate-import-exporter track" in script
    # The setup block's make target exists, and makes the .venv whose bin it activates.
    makefile = (REPO / "Makefile").read_text("utf-8")
    assert "make setup" in setup
    assert re.search(r"^setup:", makefile, re.MULTILINE)
    assert ". .venv/bin/activate" in setup
    assert re.search(r"^VENV \?= \.venv$", makefile, re.M)
    assert f"http://localhost:{EXPORTER}/" in README.read_text("utf-8")


def free_ports(text: str, ports: dict[str, int]) -> str:
    for default, port in ports.items():
        text = re.sub(rf"(?<=:){default}\b", str(port), text)
    return text


class Table(HTMLParser):
    """The rows of one table of the landing page, by its id, as header -> cell text."""

    def __init__(self, table_id: str) -> None:
        super().__init__()
        self._id = table_id
        self.header: list[str] = []
        self.rows: list[dict[str, str]] = []
        self._inside = False
        self._cells: list[str] | None = None
        self._text: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._inside = ("id", self._id) in attrs
        elif self._inside and tag == "tr":
            self._cells = []
        elif self._inside and tag in ("td", "th"):
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._inside = False
        elif self._inside and tag in ("td", "th") and self._cells is not None:
            self._cells.append("".join(self._text or []).strip())
            self._text = None
        elif self._inside and tag == "tr" and self._cells is not None:
            if not self.header:
                self.header = self._cells
            else:
                self.rows.append(dict(zip(self.header, self._cells, strict=False)))
            self._cells = None

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        return body.decode("utf-8")


@pytest.fixture
def ports() -> dict[str, int]:
    return {EXPORTER: free_port(), SIMULATOR: free_port(), PROXY: free_port()}


@pytest.fixture
def environment(ports: dict[str, int]) -> dict[str, str]:
    """A shell as a new user has it, with the installed entry point and python3 first."""
    entry_point = Path(sys.executable).parent / "elevate-import-exporter"
    if not entry_point.exists():
        missing(f"the entry point is not installed next to {sys.executable} (make setup)")
    need_tool("curl")
    env = exporter_env()
    # The README's command chooses the store; the test's fresh one would hide that.
    del env["ELEVATE_EXPORTER_STORAGE_PATH"]
    env["PATH"] = f"{entry_point.parent}:{env.get('PATH', '')}"
    # The two ports the README's commands leave at their defaults.
    env["ELEVATE_SIMULATOR_LISTEN_ADDRESS"] = f"127.0.0.1:{ports[SIMULATOR]}"
    env["ELEVATE_EXPORTER_LISTEN_ADDRESS"] = f"127.0.0.1:{ports[EXPORTER]}"
    env["NO_COLOR"] = "1"
    return env


@pytest.fixture
def served(tmp_path: Path, ports: dict[str, int], environment: dict[str, str]) -> Iterator[str]:
    """Terminals 1 and 2: the README's serving commands, until the exporter is ready."""
    processes: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for number, block in enumerate(blocks("serve"), start=1):
            output = tmp_path / f"terminal-{number}.out"
            with output.open("wb") as sink:
                processes.append(
                    (
                        subprocess.Popen(
                            ["bash", "-c", free_ports(block, ports)],
                            cwd=tmp_path,
                            env=environment,
                            stdin=subprocess.DEVNULL,
                            stdout=sink,
                            stderr=subprocess.STDOUT,
                        ),
                        output,
                    )
                )
        url = f"http://127.0.0.1:{ports[EXPORTER]}"

        def up() -> bool:
            for process, output in processes:
                if process.poll() is not None:
                    pytest.fail(f"exited with {process.returncode}:\n{output.read_text()}")
            try:
                get(url + "/-/ready")
                with socket.create_connection(("localhost", ports[PROXY]), timeout=5):
                    return True
            except (urllib.error.URLError, OSError):
                return False

        wait_until(up, timeout=START_TIMEOUT, interval=0.2, what="the simulator and exporter")
        yield url
    finally:
        for process, _ in processes:
            stop_process(process)


def test_a_feed_pushed_through_the_proxy_shows_up_as_success_on_the_page(
    tmp_path: Path, ports: dict[str, int], environment: dict[str, str], served: str
) -> None:
    script = "\n".join(free_ports(block, ports) for block in blocks("run"))
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=tmp_path,
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert " created" in done.stdout, done.stdout
    assert "succeeded" in done.stdout, done.stdout

    listed = json.loads(get(served + "/api/v1/imports"))["imports"]
    by_source = {item["source"]: item for item in listed}
    assert sorted(by_source) == ["api", "proxy"], listed
    proxied, tracked = by_source["proxy"], by_source["api"]
    assert proxied["labels"]["feed_name"] == "products-nightly", proxied
    assert (proxied["type"], tracked["type"]) == ("PRODUCTS", "SYNONYMS")

    page = get(served + "/")
    live, history = Table("tracked"), Table("history")
    live.feed(page)
    history.feed(page)
    statuses = {row["Id"]: row["Status"] for row in live.rows}
    assert statuses == {proxied["id"]: "SUCCESS", tracked["id"]: "SUCCESS"}, live.rows
    # "the history below the table says where each came from"
    sources = {row["Id"]: (row["Final status"], row["Source"]) for row in history.rows}
    assert sources == {proxied["id"]: ("SUCCESS", "proxy"), tracked["id"]: ("SUCCESS", "api")}
