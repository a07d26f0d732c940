"""Fixtures shared by the tests: a simulated Elevate API and exporters pointed at it.

``exporter_for`` runs the exporter in-process (fast, for HTTP-level checks);
``exporter_process`` runs ``python -m elevate_import_exporter run`` as a real process, for what
only a process shows: exit status, signals, stderr, environment variables.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from elevate_import_exporter.app import Application as Exporter
from elevate_import_exporter.settings.config import LOG_OPTIONS, RUN_OPTIONS
from elevate_import_exporter.settings.options import PROXY_OPTIONS, REGISTRATION_PASSWORD_ENV
from elevate_import_exporter.simulator import Simulator
from tests.support import (
    Exporters,
    free_port,
    fresh_store_path,
    post_json,
    stop_process,
    wait_until,
)

SIM_KEY = "sim-key"
REPO = Path(__file__).resolve().parent.parent

# schemathesis' Hypothesis keeps its database in the working folder unless told otherwise.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", tempfile.mkdtemp(prefix="hypothesis-"))
# What tools (not tests) keep in the work tree; anything else new after the run is a test
# writing where it must not.
_TOOL_FOLDERS = frozenset({".git", ".venv", ".mypy_cache", ".ruff_cache", "__pycache__"})


def _work_tree() -> set[str]:
    found: set[str] = set()
    for folder, subfolders, files in os.walk(REPO):
        subfolders[:] = [
            d for d in subfolders if d not in _TOOL_FOLDERS and not d.endswith(".egg-info")
        ]
        where = Path(folder).relative_to(REPO)
        found.update(str(where / name) for name in (*subfolders, *files))
    return found


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_BEFORE] = _work_tree()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = session.config.stash.get(_BEFORE, None)
    if before is None:
        return
    # A test file being written meanwhile is no test's doing.
    left = sorted(p for p in _work_tree() - before if not p.endswith(".py"))
    if left:
        session.config.get_terminal_writer().line(
            "the tests left files in the work tree (they must write under tmp_path): "
            + ", ".join(left[:20]),
            red=True,
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_BEFORE = pytest.StashKey[set[str]]()

# track's: where the exporter is, and how to show who is registering.
TRACK_VARIABLES = (
    "ELEVATE_EXPORTER_URL",
    "ELEVATE_EXPORTER_USERNAME",
    "ELEVATE_EXPORTER_PASSWORD",
    "ELEVATE_EXPORTER_PASSWORD_FILE",
    "ELEVATE_EXPORTER_CA_FILE",
    "ELEVATE_EXPORTER_CERT_FILE",
    "ELEVATE_EXPORTER_KEY_FILE",
)
# Every environment variable the exporter reads: a test starts from none of them,
# whatever the shell that runs pytest has set. Taken from the option table, so a new
# option is covered the day it is added; plus the key, which no flag takes, and the
# simulator's address of `demo` and `simulate`.
EXPORTER_ENV = (
    *(option.env for option in (*RUN_OPTIONS, *LOG_OPTIONS, *PROXY_OPTIONS)),
    REGISTRATION_PASSWORD_ENV,
    "ELEVATE_API_KEY",
    "ELEVATE_SIMULATOR_LISTEN_ADDRESS",
    *TRACK_VARIABLES,
)

ExporterFor = Callable[..., Exporter]


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    """A running simulated API with no scripted imports (add them with ``add_import``)."""
    with Simulator(api_key=SIM_KEY) as sim:
        yield sim


@pytest.fixture
def exporter_for() -> Iterator[ExporterFor]:
    """``exporter_for(base_url, ids=(), **load_settings options)``: a started in-process exporter.

    The key defaults to the simulator's, the address to a free loopback port, and
    ``min_poll_interval`` to ``"0s"`` (every scrape runs a round) unless a test gives its
    own. It returns once the exporter's first poll round, which it runs by itself at
    start-up, has ended: by then the upstream has been asked once for every tracked id,
    so a test that counts requests counts from that point (``Simulator.reset_counts``,
    ``httpserver.clear_log``), and the first one-shot answer of pytest-httpserver is
    gone. Every exporter started is stopped after the test.
    """
    exporters = Exporters()
    yield exporters.start
    exporters.stop_all()


def exporter_env(**overrides: str) -> dict[str, str]:
    """The test process' environment without any exporter variable, plus ``overrides``.

    Each call gets a store of its own in a new temporary folder (unless ``overrides``
    names one): exporters started side by side must not find each other's lock.
    """
    env = {k: v for k, v in os.environ.items() if k not in EXPORTER_ENV}
    env["ELEVATE_EXPORTER_STORAGE_PATH"] = fresh_store_path()
    env.update(overrides)
    return env


@dataclass
class ExporterProcess:
    """``run`` in a child process; stderr goes to a file, read at will."""

    process: subprocess.Popen[bytes]
    url: str
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def get(self, path: str, **headers: str) -> tuple[int, str]:
        request = urllib.request.Request(self.url + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read().decode("utf-8")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode("utf-8", "replace")

    def post_json(self, path: str, document: object) -> tuple[int, str]:
        return post_json(self.url + path, document)

    def wait_ready(self, timeout: float = 15.0) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"the exporter exited with {self.process.returncode}:\n{self.stderr()}")
            try:
                return self.get("/-/ready")[0] == 200
            except OSError:
                return False

        wait_until(ready, timeout=timeout, what=f"the exporter at {self.url} to be ready")

    def stop(self) -> int:
        return stop_process(self.process)

    def assert_setup_error(self, *named: str, timeout: float = 15.0) -> None:
        """The process ends by itself with exit status 2, naming each of ``named``."""
        try:
            returncode = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the exporter kept running; expected exit 2 naming {named}")
        stderr = self.stderr()
        assert returncode == 2, stderr
        for name in named:
            assert name in stderr
        assert "Traceback" not in stderr


ExporterProcessFor = Callable[..., ExporterProcess]


@pytest.fixture
def exporter_process(tmp_path: Path) -> Iterator[ExporterProcessFor]:
    """``exporter_process(*run_args, env={...}, wait=True, reach_at=None)``: ``run`` as a process.

    ``env`` holds the exporter variables to set (the key among them); no other exporter
    variable of the test's own environment reaches the process. Without a listen address
    in the arguments or ``env`` the process gets a free loopback port, unless ``reach_at``
    (``host:port``) says where the exporter listens by its own default. With ``wait``
    it returns once ``/-/ready`` answers 200, that is after the exporter's first poll
    round. The process runs with its own defaults otherwise: ``--elevate.min-poll-interval``
    10s among them, so a scrape right after start-up is answered from that first round.
    """
    started: list[ExporterProcess] = []

    def start(
        *args: str,
        env: Mapping[str, str] | None = None,
        wait: bool = True,
        reach_at: str | None = None,
    ) -> ExporterProcess:
        argv = list(args)
        variables = dict(env or {})
        if "--web.listen-address" in argv:
            address = argv[argv.index("--web.listen-address") + 1]
        elif "ELEVATE_EXPORTER_LISTEN_ADDRESS" in variables:
            address = variables["ELEVATE_EXPORTER_LISTEN_ADDRESS"]
        elif reach_at is not None:
            address = reach_at
        else:
            address = f"127.0.0.1:{free_port()}"
            argv += ["--web.listen-address", address]
        stderr_path = tmp_path / f"exporter-{len(started)}.stderr"
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "elevate_import_exporter", "run", *argv],
                env=exporter_env(**variables),
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        proc = ExporterProcess(process, f"http://{address}", stderr_path)
        started.append(proc)
        if wait:
            proc.wait_ready()
        return proc

    yield start
    for proc in started:
        proc.stop()
