"""The systemd unit in deploy/systemd: systemd accepts it and rates its sandbox, it holds what
docs/deployment/systemd.md promises, and the exporter runs with its command line in what of
that sandbox a process can set up for itself.

Starting the unit under systemd itself needs systemd as PID 1, which CI's container does
not have; so the exporter runs here as the unit would start it (its ExecStart, Environment=
and EnvironmentFile=, a credentials directory and a state directory), with no new
privileges, no capabilities, umask 0077, memory never writable and executable (where the
kernel offers PR_SET_MDWE), and under strace to check the system calls, socket families and
writes against the unit's SystemCallFilter=, RestrictAddressFamilies= and ProtectSystem=.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from elevate_import_exporter.cli import cli
from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from elevate_import_exporter.site.web import DRAIN_SECONDS
from tests.conftest import EXPORTER_ENV, REPO, SIM_KEY
from tests.support import Scrape, free_port, need_tool, stop_process, wait_until

UNIT = REPO / "deploy" / "systemd" / "elevate-import-exporter.service"
ENV_EXAMPLE = REPO / "deploy" / "systemd" / "elevate-import-exporter.env"
# The standalone import proxy's unit (docs/feed-path.md), hardened as the exporter's.
PROXY_UNIT = REPO / "deploy" / "systemd" / "elevate-import-proxy.service"
PROXY_ENV_EXAMPLE = REPO / "deploy" / "systemd" / "elevate-import-proxy.env"
UNITS = [UNIT, PROXY_UNIT]
INSTALLED = "/opt/elevate-import-exporter/bin/elevate-import-exporter"
# `systemd-analyze security` on systemd 252 (Debian 12), 2026-11-28: 1.2 OK, offline and
# for the unit running under systemd.
EXPOSURE_LIMIT = 1.2
# The checks it may fail, and why they must stay open.
ACCEPTED_EXPOSURE = {
    "PrivateNetwork=": "it asks Elevate and serves Prometheus over the network",
    "IPAddressDeny=": "Elevate's addresses are not known in advance",
    "RestrictAddressFamilies=~AF_(INET|INET6)": "the same",
    "RestrictAddressFamilies=~AF_UNIX": "name resolution through nscd or systemd-resolved",
    "RootDirectory=/RootImage=": "a Python install on the host, not an image",
    "DeviceAllow=": "ProtectClock= itself allows reading the RTC",
    "PrivateUsers=": "next to ProtectProc=invisible, systemd 252 fails the start (217/USER)",
}
HARDENING = {
    "DynamicUser": "yes",
    "UMask": "0077",
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "DevicePolicy": "closed",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "ProtectProc": "invisible",
    "ProcSubset": "pid",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
}
# What a systemd service gets in its environment besides the unit's own variables.
SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"

# Runs argv[1:] in the part of the unit's sandbox a process can set up for itself.
LAUNCHER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def prctl(*args):
    if libc.prctl(*(ctypes.c_ulong(a) for a in args)) != 0:
        sys.exit(f"prctl{args}: {os.strerror(ctypes.get_errno())}")
prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
if os.geteuid() == 0:  # CapabilityBoundingSet= (empty): PR_CAPBSET_DROP each one
    for cap in range(int(open("/proc/sys/kernel/cap_last_cap").read()) + 1):
        prctl(24, cap, 0, 0, 0)
if os.environ.pop("SANDBOX_MDWE") == "1":
    prctl(65, 1, 0, 0, 0)  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
os.umask(0o077)
os.chdir("/")
os.execv(sys.argv[1], sys.argv[1:])
"""


def read_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Each section's ``(key, value)`` pairs in order; a key may come back several times."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        assert not line.endswith("\\"), f"keep directives on one line: {line}"
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def service(key: str, unit: Path = UNIT) -> list[str]:
    return [v for k, v in read_unit(unit.read_text())["Service"] if k == key]


def only(key: str, unit: Path = UNIT) -> str:
    values = service(key, unit)
    assert len(values) == 1, f"{key}= {values}"
    return values[0]


def environment_file(text: str) -> dict[str, str]:
    variables = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line and line[0] not in "#;":
            key, sep, value = line.partition("=")
            assert sep, line
            assert re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), line
            variables[key] = value
    return variables


@cache
def kernel_refuses_write_execute_memory() -> bool:
    """Whether this kernel has PR_GET_MDWE (Linux 6.3), so the launcher can set it."""
    probe = "import ctypes, sys; sys.exit(ctypes.CDLL(None).prctl(66, 0, 0, 0, 0) < 0)"
    return subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0


@dataclass
class Started:
    process: subprocess.Popen[bytes]
    url: str
    state_dir: Path
    ids_file: Path
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def exporter_pid(self) -> int:
        """The exporter's own process: the launcher's, or strace's child."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        found = children.read_text().split() if children.exists() else []
        return int(found[0]) if found else self.process.pid

    def get(self, path: str) -> tuple[int, str]:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return response.status, response.read().decode("utf-8")

    def ready(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"the exporter exited with {self.process.returncode}:\n{self.stderr()}")
        try:
            return self.get("/-/ready")[0] == 200
        except OSError:
            return False


StartAsUnit = Callable[..., Started]


@pytest.fixture
def as_the_unit(simulator: Simulator, tmp_path: Path) -> Iterator[StartAsUnit]:
    """``as_the_unit(*wrapper, **overrides)``: the unit's command line, started and ready."""
    simulator.add_import(ScriptedImport("1001", (Step("IN_PROGRESS"),)))
    started: list[Started] = []

    def start(*wrapper: str, **overrides: str) -> Started:
        credentials = tmp_path / "credentials"  # systemd's copy: 0400 in a 0500 folder
        credentials.mkdir()
        (credentials / "api-key").write_text(SIM_KEY + "\n")
        (credentials / "api-key").chmod(0o400)
        credentials.chmod(0o500)
        state_dir = tmp_path / "state" / only("StateDirectory")
        state_dir.mkdir(parents=True, mode=0o700)
        ids_file = tmp_path / "ids.txt"
        ids_file.write_text("1001\n")
        env = {"PATH": SERVICE_PATH, "HOME": "/", "CREDENTIALS_DIRECTORY": str(credentials)}
        env["STATE_DIRECTORY"] = str(state_dir)
        env["SANDBOX_MDWE"] = "1" if kernel_refuses_write_execute_memory() else "0"
        for assignment in service("Environment"):  # before the file, which overrides it
            key, _, value = assignment.partition("=")
            env[key] = value.replace("%S", str(tmp_path / "state"))
        env.update(environment_file(ENV_EXAMPLE.read_text()))
        address = f"127.0.0.1:{free_port()}"
        # The host's parts: Elevate, where the ids file is, and a port of its own.
        env.update(ELEVATE_BASE_URL=simulator.url, ELEVATE_IMPORT_IDS_FILE=str(ids_file))
        env.update(ELEVATE_EXPORTER_LISTEN_ADDRESS=address, **overrides)
        command = shlex.split(re.sub(r"\$\{(\w+)\}", lambda m: env[m[1]], only("ExecStart")))
        assert command[0] == INSTALLED
        argv = [*wrapper, sys.executable, "-m", "elevate_import_exporter", *command[1:]]
        stderr_path = tmp_path / "exporter.stderr"
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-c", LAUNCHER, *argv],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        run = Started(process, f"http://{address}", state_dir, ids_file, stderr_path)
        started.append(run)
        wait_until(run.ready, timeout=60, what="the exporter started as the unit to be ready")
        return run

    yield start
    for run in started:
        stop_process(run.process)
        (tmp_path / "credentials").chmod(0o700)


def reload_and_stop(run: Started) -> int:
    """``systemctl reload`` (the unit's ExecReload=), then ``systemctl stop``; the exit status."""
    pid = run.exporter_pid()
    run.ids_file.write_text("1001\n1002\n")
    subprocess.run(shlex.split(only("ExecReload").replace("$MAINPID", str(pid))), check=True)
    wait_until(lambda: "reloaded the id sources: 2 ids tracked" in run.stderr(), what="SIGHUP")
    os.kill(pid, signal.Signals[only("KillSignal")])
    return run.process.wait(timeout=float(only("TimeoutStopSec").removesuffix("s")))


@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.stem)
def test_systemd_analyze_verify_finds_nothing_to_say_about_the_unit(
    unit: Path, tmp_path: Path
) -> None:
    analyze = need_tool("systemd-analyze")
    # verify wants ExecStart= to exist: the same unit, running the installed console script.
    script = shutil.which("elevate-import-exporter", path=str(Path(sys.executable).parent))
    assert script is not None, "the package's console script is not installed"
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace(INSTALLED, script))
    verify = [analyze, "verify", "--man=no", str(copy)]
    result = subprocess.run(verify, capture_output=True, text=True, check=False)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    # A misspelt directive is only a warning, with exit status 0: the output must be empty.
    copy.write_text(copy.read_text().replace("ProtectHome=", "ProtectHomes="))
    result = subprocess.run(verify, capture_output=True, text=True, check=False)
    assert "Unknown key 'ProtectHomes'" in result.stderr


@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.stem)
def test_systemd_analyze_security_rates_the_unit_ok_and_no_worse_than_measured(
    unit: Path,
) -> None:
    analyze = need_tool("systemd-analyze")
    offline = [analyze, "security", "--offline=true", "--no-pager"]
    text = subprocess.run([*offline, str(unit)], capture_output=True, text=True, check=True)
    level = re.search(r"Overall exposure level for \S+: (\d+\.\d) (\w+)", text.stdout)
    assert level is not None, text.stdout
    assert float(level[1]) <= EXPOSURE_LIMIT, level[0]
    assert level[2] in {"OK", "SAFE", "PERFECT"}, level[0]
    checks = subprocess.run(
        [*offline, "--json=short", str(unit)], capture_output=True, text=True, check=True
    )
    open_checks = {c["name"] for c in json.loads(checks.stdout) if c["exposure"]}
    assert open_checks <= ACCEPTED_EXPOSURE.keys()


def test_the_unit_runs_the_documented_install_with_the_key_as_a_credential() -> None:
    assert INSTALLED in (REPO / "docs" / "deployment" / "systemd.md").read_text()
    assert only("ExecStart").split()[:2] == [INSTALLED, "run"]
    credential, _, path = only("LoadCredential").partition(":")
    assert path == "/etc/elevate-import-exporter/api-key"
    assert f"--elevate.api-key-file ${{CREDENTIALS_DIRECTORY}}/{credential}" in only("ExecStart")
    # The key never sits in the environment, where the unit's properties would show it.
    assert "ELEVATE_API_KEY" not in environment_file(ENV_EXAMPLE.read_text())
    assert not [e for e in service("Environment") if e.startswith("ELEVATE_API_KEY=")]


def test_the_store_is_in_the_state_directory_the_only_place_it_may_write() -> None:
    state = only("StateDirectory")
    assert state == "elevate-import-exporter"
    assert f"ELEVATE_EXPORTER_STORAGE_PATH=%S/{state}/elevate-import-exporter.db" in service(
        "Environment"
    )
    assert only("EnvironmentFile") == "/etc/elevate-import-exporter/elevate-import-exporter.env"
    assert ENV_EXAMPLE.read_text().splitlines()[0] == f"# {only('EnvironmentFile')}"


def test_the_unit_restarts_on_failure_but_not_after_a_configuration_error() -> None:
    assert only("Restart") == "on-failure"
    assert "2" in only("RestartPreventExitStatus").split()  # exit 2: configuration errors
    assert only("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert only("KillSignal") == "SIGTERM"
    # Before SIGKILL: the web server's drain, then the proxy's (given a second more), then
    # closing the store.
    assert float(only("TimeoutStopSec").removesuffix("s")) > 2 * DRAIN_SECONDS + 1


@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.stem)
def test_the_unit_sets_every_hardening_option(unit: Path) -> None:
    assert {key: only(key, unit) for key in HARDENING} == HARDENING
    assert service("SystemCallFilter", unit) == ["@system-service", "~@privileged @resources"]
    assert only("RestrictAddressFamilies", unit) == "AF_INET AF_INET6 AF_UNIX"
    assert only("SystemCallErrorNumber", unit) == "EPERM"
    assert not service("IPAddressDeny", unit), "the exporter and the proxy must reach Elevate"
    assert not service("PrivateUsers", unit), ACCEPTED_EXPOSURE["PrivateUsers="]


def test_the_proxys_unit_differs_from_the_exporters_only_where_the_proxy_needs_it() -> None:
    """Every directive of the exporter's unit, hardening or not, is the proxy's too, but for
    those the proxy has no use for (the key, the store, reloading the ids file) and those
    that name it."""
    exporter = read_unit(UNIT.read_text())["Service"]
    proxy = read_unit(PROXY_UNIT.read_text())["Service"]
    own = {"ExecStart", "EnvironmentFile", "StateDirectory", "TimeoutStopSec"}
    not_needed = {"LoadCredential", "Environment", "ExecReload"}
    assert {p for p in exporter if p[0] not in own | not_needed} == {
        p for p in proxy if p[0] not in own
    }


@cache
def proxy_options() -> dict[str, tuple[str | None, str | None]]:
    """Each flag of the ``proxy`` command with its variable and default (repeatable
    flags' defaults joined by commas, as their variables take them)."""
    options: dict[str, tuple[str | None, str | None]] = {}
    for param in cli.commands["proxy"].params:
        variable = param.envvar if isinstance(param.envvar, str) else None
        default = param.default
        if isinstance(default, tuple):
            default = ",".join(default)
        for flag in param.opts:
            options[flag] = (variable, default if isinstance(default, str) else None)
    return options


def seconds(timespan: str) -> float:
    """A systemd time span (``11min``, ``30s``) in seconds, as systemd reads it."""
    shown = subprocess.run(
        [need_tool("systemd-analyze"), "timespan", timespan],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = re.search(r"μs: (\d+)", shown)
    assert found, shown
    return int(found[1]) / 1e6


def test_the_proxys_unit_runs_the_proxy_with_its_spool_in_its_state_directory() -> None:
    command = only("ExecStart", PROXY_UNIT).split()
    assert command[:2] == [INSTALLED, "proxy"]
    flags = dict(zip(command[2::2], command[3::2], strict=True))
    state = only("StateDirectory", PROXY_UNIT)
    assert state == "elevate-import-proxy"
    assert only("StateDirectoryMode", PROXY_UNIT) == "0700"
    # %S is /var/lib for a system service: the spool lies in the one writable place.
    assert flags["--registration.spool"].startswith(f"%S/{state}/")
    assert set(flags) <= proxy_options().keys()
    # The feed jobs bring their own key: the proxy is given none.
    assert not service("LoadCredential", PROXY_UNIT)
    assert "ELEVATE_API_KEY" not in PROXY_ENV_EXAMPLE.read_text()
    environment_path = only("EnvironmentFile", PROXY_UNIT)
    assert environment_path == "/etc/elevate-import-proxy/elevate-import-proxy.env"
    assert PROXY_ENV_EXAMPLE.read_text().splitlines()[0] == f"# {environment_path}"


def test_the_proxys_unit_lets_the_drain_finish_before_sigkill() -> None:
    variable, default = proxy_options()["--proxy.drain-timeout"]
    assert default is not None, "the drain timeout's default is not shown"
    assert variable not in environment_file(PROXY_ENV_EXAMPLE.read_text()), "the default"
    drain = seconds(default)
    assert drain >= 600, "long enough for a big feed"
    assert only("KillSignal", PROXY_UNIT) == "SIGTERM"
    # The drain, then the queued ids handed over: at least half a minute for that.
    assert seconds(only("TimeoutStopSec", PROXY_UNIT)) >= drain + 30
    assert only("Restart", PROXY_UNIT) == "on-failure"
    assert "2" in only("RestartPreventExitStatus", PROXY_UNIT).split()


def test_the_proxys_unit_neither_needs_nor_waits_for_the_exporter() -> None:
    unit = read_unit(PROXY_UNIT.read_text())["Unit"]
    dependencies = {"Requires", "Requisite", "BindsTo", "PartOf", "Wants", "After", "Upholds"}
    named = " ".join(value for key, value in unit if key in dependencies)
    assert "network-online.target" in named
    assert "elevate-import-exporter" not in named


def test_the_proxys_environment_file_names_only_variables_the_proxy_reads() -> None:
    known = {variable for variable, _ in proxy_options().values() if variable}
    known |= {"HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE"}
    text = PROXY_ENV_EXAMPLE.read_text()
    named = re.findall(r"^#?([A-Z][A-Z0-9_]*)=", text, re.MULTILINE)
    assert len(named) > 5
    assert set(named) <= known
    # Required, so set in the example: the exporter the ids go to.
    set_here = environment_file(text)
    registration = proxy_options()["--registration.url"][0]
    assert registration in set_here
    assert set_here[registration].startswith("http")
    listen = proxy_options()["--web.listen-address"]
    assert listen[1] == ":10028", "the example's comment names the default"


def test_the_environment_file_example_names_only_variables_the_exporter_reads() -> None:
    known = {*EXPORTER_ENV, "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE"}
    named = re.findall(r"^#?([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.MULTILINE)
    assert named
    assert set(named) <= known
    ids_file = environment_file(ENV_EXAMPLE.read_text())["ELEVATE_IMPORT_IDS_FILE"]
    assert not ids_file.startswith(("/home/", "/root/", "/run/user/")), "ProtectHome= hides it"


def test_the_exporter_runs_with_the_units_command_line_in_its_sandbox(
    as_the_unit: StartAsUnit,
) -> None:
    run = as_the_unit()
    scrape = Scrape(run.get("/metrics")[1])
    assert scrape.value("elevate_import_up") == 1, "the key from the credential was refused"
    assert scrape.current_status("1001") == "IN_PROGRESS"
    status = dict(
        line.split(":\t", 1)
        for line in Path(f"/proc/{run.process.pid}/status").read_text().splitlines()
    )
    assert (status["NoNewPrivs"], int(status["CapEff"], 16), int(status["CapBnd"], 16)) == (
        "1",
        0,
        0,
    )
    assert reload_and_stop(run) == 0
    store = run.state_dir / "elevate-import-exporter.db"
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert SIM_KEY not in run.stderr()


# What the exporter's dependencies do beyond the test above: basic auth's bcrypt, the web
# configuration's YAML, TLS, SQLite; then a JIT's first step, which must be refused.
WITH_DEPENDENCIES = """
import bcrypt, sqlite3, ssl, yaml
assert bcrypt.checkpw(b"pw", bcrypt.hashpw(b"pw", bcrypt.gensalt(4)))
assert yaml.safe_load("a: [1]") == {"a": [1]}
ssl.create_default_context()
sqlite3.connect(":memory:").execute("select 1")
print("dependencies work")
import mmap
mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
"""


def test_memory_never_writable_and_executable_leaves_python_and_its_libraries_working() -> None:
    if not kernel_refuses_write_execute_memory():
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3): MemoryDenyWriteExecute untried")
    result = subprocess.run(
        [sys.executable, "-c", LAUNCHER, sys.executable, "-c", WITH_DEPENDENCIES],
        env={**os.environ, "SANDBOX_MDWE": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.stdout == "dependencies work\n", result.stderr
    assert result.stderr.rstrip().endswith("PermissionError: [Errno 13] Permission denied")


@cache
def syscall_groups() -> dict[str, list[str]]:
    listing = subprocess.run(
        [need_tool("systemd-analyze"), "syscall-filter", "--no-pager"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    groups: dict[str, list[str]] = {}
    for line in listing.splitlines():
        if line.startswith("@"):
            members = groups.setdefault(line.strip(), [])
        elif line.startswith("    ") and not line.strip().startswith("#"):
            members.append(line.strip())
    return groups


def syscalls(names: str) -> set[str]:
    """The system calls a SystemCallFilter= value names, groups expanded."""
    found: set[str] = set()
    for name in names.split():
        found |= syscalls(" ".join(syscall_groups()[name])) if name.startswith("@") else {name}
    return found


def allowed_syscalls() -> set[str]:
    allowed: set[str] = set()
    for value in service("SystemCallFilter"):
        if value.startswith("~"):
            allowed -= syscalls(value[1:])
        else:
            allowed |= syscalls(value)
    return allowed


# Made only because the test runs as root: SQLite gives its journal files the database's
# owner when geteuid() is 0. The unit's dynamic user is never root.
AS_ROOT_ONLY = {"fchown"}
# Calls that change the file system, when they succeed (for open: with a flag that writes).
CHANGES = re.compile(
    r"^(?:(?:open|openat)\(.*O_(?:WRONLY|RDWR|CREAT|TRUNC).*"
    r"|(?:creat|mkdir|mkdirat|rename|renameat|renameat2|unlink|unlinkat|rmdir|truncate"
    r"|link|linkat|symlink|symlinkat|chmod|fchmodat|mknod|mknodat)\(.*)\) += \d+$"
)


def traced(trace: Path) -> list[str]:
    """Every line strace -ff wrote, one file per thread, so no call is split in two."""
    return [
        line for f in trace.parent.glob(f"{trace.name}.*") for line in f.read_text().splitlines()
    ]


def paths_changed(lines: list[str]) -> set[str]:
    # The working directory is /, as a service's: a relative name is under it.
    changes = (line for line in lines if CHANGES.match(line))
    return {str(Path("/", name)) for line in changes for name in re.findall(r'"([^"]*)"', line)}


def test_the_exporter_keeps_to_the_units_system_calls_families_and_writable_paths(
    as_the_unit: StartAsUnit, tmp_path: Path
) -> None:
    strace = need_tool("strace")
    trace = tmp_path / "trace"
    # Every scrape polls, so that a round of status requests is traced besides start-up's.
    run = as_the_unit(strace, "-ff", "-qq", "-o", str(trace), ELEVATE_MIN_POLL_INTERVAL="0s")
    assert Scrape(run.get("/metrics")[1]).value("elevate_import_up") == 1
    assert reload_and_stop(run) == 0
    lines = traced(trace)
    used = {m[1] for line in lines if (m := re.match(r"([a-z0-9_]+)\(", line))}
    assert {"execve", "connect", "accept4"} <= used, "the trace misses the exporter's work"
    exempt = AS_ROOT_ONLY if os.geteuid() == 0 else set()
    assert used - allowed_syscalls() <= exempt
    families = {m[1] for line in lines if (m := re.match(r"socket(?:pair)?\((AF_\w+)", line))}
    assert families, "the trace shows no socket"
    assert families <= set(only("RestrictAddressFamilies").split())
    # ProtectSystem=strict: only the state directory is writable. A bytecode cache it
    # cannot write is skipped by Python (and pip compiled the installed package's).
    outside = {p for p in paths_changed(lines) if not p.startswith(f"{run.state_dir}/")}
    assert {p for p in outside if "/__pycache__/" not in p} == set()
