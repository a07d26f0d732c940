"""The container image: built from the repository's Dockerfile and run for real.

Every container uses the host's network (``--network host``): the exporter and the
simulated Elevate API listen on free loopback ports of this machine, and no traffic
goes to a Docker bridge address. The image is built once per module.
"""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

import elevate_import_exporter
from elevate_import_exporter.simulator import DEMO_UNKNOWN_ID, demo_imports
from tests.support import free_port, missing, need_tool, wait_until

REPO = Path(__file__).resolve().parent.parent
IMAGE = "elevate-import-exporter:test"
BASE_IMAGE = "python:3.12-slim"
UID = 10001
KEY_IN_CONTAINER = "/run/secrets/elevate_api_key"
WEB_IN_CONTAINER = "/etc/elevate-import-exporter"
WEB_USER, WEB_PASSWORD = "prometheus", "docker-test-password"
# Unlike the simulator's built-in default, so a key that fails to arrive shows as 403s.
API_KEY = "docker-test-key-5f1c0b7e"
# A cold build downloads the dependencies from PyPI (10 to 30 s here); stay under
# pytest-timeout's 180 s per test, so a hung build fails with its own output.
BUILD_TIMEOUT = 170
# Loopback only: never through an HTTP(S)_PROXY the environment may set for PyPI.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def checked(*args: str, timeout: float = 60) -> str:
    result = docker(*args, timeout=timeout)
    assert result.returncode == 0, (
        f"docker {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
    )
    return result.stdout


def run_once(*args: str, timeout: float = 60) -> str:
    """``docker run --rm`` that also removes its container when the CLI times out."""
    name = f"eie-test-once-{uuid.uuid4().hex[:10]}"
    try:
        return checked("run", "--rm", "--name", name, "--network", "host", *args, timeout=timeout)
    finally:
        # A killed CLI leaves the container running; --rm has removed it otherwise.
        docker("rm", "--force", name)


def http_get(url: str) -> tuple[int, str] | None:
    """Status and body of a GET, or None while nothing answers."""
    try:
        with DIRECT.open(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return None


def current_statuses(metrics_url: str) -> dict[str, str]:
    """Each import id's current status, as the exporter's elevate_import_status says."""
    answer = http_get(metrics_url)
    if answer is None or answer[0] != 200:
        return {}
    statuses: dict[str, str] = {}
    for family in text_string_to_metric_families(answer[1]):
        if family.name != "elevate_import_status":
            continue
        for sample in family.samples:
            if sample.value == 1:
                statuses[sample.labels["id"]] = sample.labels["status"]
    return statuses


@dataclass
class Containers:
    """Starts containers from the test image and removes every one of them at the end."""

    image: str
    names: list[str] = field(default_factory=list)

    def run(self, *args: str, image_args: tuple[str, ...] = ()) -> str:
        name = f"eie-test-{uuid.uuid4().hex[:10]}"
        self.names.append(name)
        checked(
            "run", "--detach", "--name", name, "--network", "host", *args, self.image, *image_args
        )
        return name

    def remove_all(self) -> None:
        if self.names:
            docker("rm", "--force", "--volumes", *self.names)


@dataclass(frozen=True)
class ExporterContainer:
    name: str
    port: int

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"


def wait_serving(name: str, url: str, *, timeout: float = 30) -> None:
    """Wait until ``url`` answers 200; fail at once, with the logs, if ``name`` exits."""

    def probe() -> bool:
        answer = http_get(url)
        if answer is not None and answer[0] == 200:
            return True
        if not is_running(name):
            logs = docker("logs", "--tail", "40", name)
            pytest.fail(f"container {name} exited:\n{logs.stdout}{logs.stderr}")
        return False

    wait_until(probe, timeout=timeout, interval=0.1, what=f"{url} in container {name}")


def health_status(name: str) -> str:
    return checked("inspect", "--format", "{{.State.Health.Status}}", name).strip()


def is_running(name: str) -> bool:
    return checked("inspect", "--format", "{{.State.Running}}", name).strip() == "true"


@pytest.fixture(scope="module")
def image() -> str:
    need_tool("docker")
    info = docker("info", "--format", "{{.ServerVersion}}")
    if info.returncode != 0:
        missing(f"no Docker daemon reachable: {info.stderr.strip() or info.stdout.strip()}")
    try:
        build = docker(
            "build", "--network", "host", "--tag", IMAGE, str(REPO), timeout=BUILD_TIMEOUT
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode()
        pytest.fail(f"docker build took over {BUILD_TIMEOUT}s:\n{out[-4000:]}")
    if build.returncode != 0:
        pytest.fail(f"docker build failed:\n{build.stdout[-4000:]}{build.stderr[-4000:]}")
    return IMAGE


@pytest.fixture(scope="module")
def containers(image: str) -> Iterator[Containers]:
    started = Containers(image)
    try:
        yield started
    finally:
        started.remove_all()


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("secrets") / "elevate_api_key"
    # The way a secret usually arrives: with a trailing newline.
    path.write_text(API_KEY + "\n")
    # A bind-mounted file keeps its host owner and mode: the container's UID 10001
    # must be allowed to read it.
    path.chmod(0o644)
    return path


@pytest.fixture(scope="module")
def simulator_url(containers: Containers, key_file: Path) -> str:
    """The image's own ``simulate`` serving the demo imports, the key read from a file."""
    port = free_port()
    name = containers.run(
        "--volume",
        f"{key_file}:{KEY_IN_CONTAINER}:ro",
        image_args=(
            "simulate",
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--elevate.api-key-file",
            KEY_IN_CONTAINER,
        ),
    )
    url = f"http://127.0.0.1:{port}"
    wait_serving(name, f"{url}/-/healthy")
    return url


def tracked_ids() -> list[str]:
    return [imp.id for imp in demo_imports()] + [DEMO_UNKNOWN_ID]


def start_exporter(
    containers: Containers, simulator_url: str, key_file: Path, *extra: str
) -> ExporterContainer:
    """The exporter with the image's default command, configured only by env and a file.

    The listen address goes in the environment, not on the command line, because that
    is where the image's HEALTHCHECK looks for the port.
    """
    port = free_port()
    name = containers.run(
        "--volume",
        f"{key_file}:{KEY_IN_CONTAINER}:ro",
        "--env",
        f"ELEVATE_API_KEY_FILE={KEY_IN_CONTAINER}",
        "--env",
        f"ELEVATE_BASE_URL={simulator_url}",
        "--env",
        f"ELEVATE_IMPORT_IDS={','.join(tracked_ids())}",
        "--env",
        f"ELEVATE_EXPORTER_LISTEN_ADDRESS=127.0.0.1:{port}",
        # The hardening docs/deployment/docker.md recommends must not break anything.
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        # The image's own health check command, run every second instead of every 30 s.
        "--health-interval",
        "1s",
        *extra,
    )
    wait_serving(name, f"http://127.0.0.1:{port}/-/ready")
    return ExporterContainer(name, port)


@pytest.fixture(scope="module")
def exporter_container(
    containers: Containers, simulator_url: str, key_file: Path
) -> ExporterContainer:
    return start_exporter(containers, simulator_url, key_file)


def test_the_image_carries_OCI_labels_with_the_package_version(image: str) -> None:
    config = json.loads(checked("image", "inspect", "--format", "{{json .Config}}", image))
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "elevate-import-exporter"
    assert "Elevate" in labels["org.opencontainers.image.description"]
    assert labels["org.opencontainers.image.version"] == elevate_import_exporter.__version__
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert config["Entrypoint"] == ["elevate-import-exporter"]
    assert config["Cmd"] == ["run"]
    assert config["User"] == f"{UID}:{UID}"
    assert "10025/tcp" in config["ExposedPorts"]


def test_docker_run_IMAGE_version_prints_the_package_version(image: str) -> None:
    out = run_once(image, "--version")
    assert elevate_import_exporter.__version__ in out.split()


def test_docker_run_IMAGE_help_lists_run_demo_and_simulate(image: str) -> None:
    out = run_once(image, "--help")
    for command in ("run", "demo", "simulate"):
        assert f"\n  {command} " in out, out


def test_the_exporter_container_exports_the_imports_statuses_read_with_the_key_from_a_file(
    exporter_container: ExporterContainer,
) -> None:
    # The demo imports reach their last step within ~20 s of the simulator's start.
    expected = {imp.id: imp.steps[-1].status for imp in demo_imports()}
    expected[DEMO_UNKNOWN_ID] = "NOT_FOUND"
    seen: dict[str, str] = {}

    def all_there() -> bool:
        seen.clear()
        seen.update(current_statuses(exporter_container.metrics_url))
        return seen == expected

    try:
        wait_until(all_there, timeout=60, interval=0.5, what="the demo imports' last statuses")
    except pytest.fail.Exception:
        pytest.fail(f"expected statuses {expected}, last scrape showed {seen}")

    answer = http_get(exporter_container.metrics_url)
    assert answer is not None
    assert "\nelevate_import_up 1.0\n" in answer[1]
    assert 'elevate_import_api_errors_total{reason="forbidden"} 0.0' in answer[1]


def test_the_key_given_as_a_file_shows_neither_in_the_container_config_nor_in_its_logs(
    exporter_container: ExporterContainer,
) -> None:
    # At least one poll round, so that the key has been read and sent.
    wait_until(
        lambda: current_statuses(exporter_container.metrics_url),
        timeout=30,
        what="a first poll round",
    )
    config = checked("inspect", exporter_container.name)
    logs = docker("logs", exporter_container.name)
    assert API_KEY not in config
    assert API_KEY not in logs.stdout + logs.stderr


def test_the_exporter_process_runs_as_uid_10001_without_capabilities(
    exporter_container: ExporterContainer,
) -> None:
    # PID 1 of the container is the exporter itself; its status holds the uids the
    # kernel enforces, not what the image config merely asks for.
    cmdline = checked("exec", exporter_container.name, "cat", "/proc/1/cmdline")
    assert "elevate-import-exporter" in cmdline.replace("\0", " ")
    status = checked("exec", exporter_container.name, "cat", "/proc/1/status")
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["Uid"].split() == [str(UID)] * 4
    assert fields["Gid"].split() == [str(UID)] * 4
    assert int(fields["CapEff"].strip(), 16) == 0


def test_the_image_healthcheck_reports_the_running_exporter_healthy(
    exporter_container: ExporterContainer,
) -> None:
    # The exporter listens on a port other than 10025: healthy proves the check
    # follows ELEVATE_EXPORTER_LISTEN_ADDRESS.
    assert exporter_container.port != 10025
    wait_until(
        lambda: health_status(exporter_container.name) == "healthy",
        timeout=60,
        interval=0.5,
        what="the health check to report healthy",
    )


def test_the_image_healthcheck_reports_unhealthy_when_nothing_serves_on_its_port(
    containers: Containers,
) -> None:
    port = free_port()
    name = containers.run(
        "--env",
        f"ELEVATE_EXPORTER_LISTEN_ADDRESS=127.0.0.1:{port}",
        "--health-interval",
        "1s",
        "--health-retries",
        "1",
        # 0 would mean "the image's 10 s", during which failures do not count.
        "--health-start-period",
        "1ms",
        "--entrypoint",
        "python",
        image_args=("-c", "import time; time.sleep(120)"),
    )
    wait_until(
        lambda: health_status(name) == "unhealthy",
        timeout=60,
        interval=0.5,
        what="the health check to report unhealthy",
    )
    log = json.loads(checked("inspect", "--format", "{{json .State.Health.Log}}", name))
    # A one-line reason naming the address it asked, not a traceback.
    assert log[-1]["Output"].startswith(f"http://127.0.0.1:{port}/-/healthy: "), log[-1]


@dataclass(frozen=True)
class WebFolder:
    """A folder as an operator mounts it: web-config.yml beside its certificate and key."""

    path: Path

    def client(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.path / "ca.pem"))


@pytest.fixture(scope="module")
def web_folder(tmp_path_factory: pytest.TempPathFactory) -> WebFolder:
    folder = tmp_path_factory.mktemp("web")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(str(folder / "server.pem"))
    server.private_key_pem.write_to_path(str(folder / "server.key"))
    hashed = bcrypt.hashpw(WEB_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    # Relative names: the exporter looks for them next to the file, wherever it is mounted.
    (folder / "web-config.yml").write_text(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
        f"basic_auth_users:\n  {WEB_USER}: '{hashed}'\n"
    )
    # A bind mount keeps the host's owner and modes: UID 10001 must be able to read them.
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)
    return WebFolder(folder)


def https_get(url: str, context: ssl.SSLContext, *, auth: bool) -> tuple[int, str] | None:
    """Like ``http_get``, over TLS verified by ``context``, with the credentials or none."""
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    headers = {}
    if auth:
        token = base64.b64encode(f"{WEB_USER}:{WEB_PASSWORD}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return None


def test_the_image_serves_tls_and_basic_auth_from_a_mounted_web_config_and_stays_healthy(
    containers: Containers, simulator_url: str, key_file: Path, web_folder: WebFolder
) -> None:
    port = free_port()
    name = containers.run(
        "--volume",
        f"{key_file}:{KEY_IN_CONTAINER}:ro",
        "--volume",
        f"{web_folder.path}:{WEB_IN_CONTAINER}:ro",
        "--env",
        f"ELEVATE_API_KEY_FILE={KEY_IN_CONTAINER}",
        "--env",
        f"ELEVATE_BASE_URL={simulator_url}",
        "--env",
        f"ELEVATE_IMPORT_IDS={','.join(tracked_ids())}",
        "--env",
        f"ELEVATE_EXPORTER_LISTEN_ADDRESS=127.0.0.1:{port}",
        "--env",
        f"ELEVATE_EXPORTER_WEB_CONFIG_FILE={WEB_IN_CONTAINER}/web-config.yml",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--health-interval",
        "1s",
    )
    metrics = f"https://127.0.0.1:{port}/metrics"

    def scraped() -> str | None:
        answer = https_get(metrics, web_folder.client(), auth=True)
        if answer is None and not is_running(name):
            logs = docker("logs", "--tail", "40", name)
            pytest.fail(f"container {name} exited:\n{logs.stdout}{logs.stderr}")
        return answer[1] if answer is not None and answer[0] == 200 else None

    body = wait_until(scraped, timeout=30, interval=0.2, what="a scrape over https with auth")
    assert "elevate_import_status{" in body
    assert "\nelevate_import_up 1.0\n" in body
    # The credentials are what let the scrape in; plain HTTP is not served, only told so.
    assert https_get(metrics, web_folder.client(), auth=False) == (401, "Unauthorized.\n")
    assert http_get(f"http://127.0.0.1:{port}/metrics") == (
        400,
        "Client sent an HTTP request to an HTTPS server.\n",
    )
    # The image's health check gets past TLS and basic auth without the CA or a password.
    wait_until(
        lambda: health_status(name) == "healthy",
        timeout=60,
        interval=0.5,
        what="the health check to report healthy",
    )


def test_docker_stop_ends_the_exporter_within_the_grace_period_with_status_0_or_143(
    containers: Containers, simulator_url: str, key_file: Path
) -> None:
    exp = start_exporter(containers, simulator_url, key_file)
    grace = 10
    began = time.monotonic()
    checked("stop", "--time", str(grace), exp.name, timeout=grace + 30)
    took = time.monotonic() - began
    state = json.loads(checked("inspect", "--format", "{{json .State}}", exp.name))
    # An exporter that ignored SIGTERM would be SIGKILLed after the grace period: 137.
    assert state["ExitCode"] in (0, 143), state
    assert not state["OOMKilled"]
    assert took < grace, f"docker stop took {took:.1f}s: SIGTERM was not acted on"


def test_the_demo_command_runs_in_a_container(containers: Containers) -> None:
    port, sim_port = free_port(), free_port()
    name = containers.run(
        image_args=(
            "demo",
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--simulator.listen-address",
            f"127.0.0.1:{sim_port}",
        ),
    )
    demo_ids = {imp.id for imp in demo_imports()}
    wait_serving(name, f"http://127.0.0.1:{port}/-/ready")
    statuses = wait_until(
        lambda: current_statuses(f"http://127.0.0.1:{port}/metrics"),
        timeout=30,
        what="the demo's metrics",
    )
    assert demo_ids <= set(statuses), statuses
    assert is_running(name)


def first_seen(metrics_url: str) -> dict[str, float]:
    answer = http_get(metrics_url)
    assert answer is not None
    return {
        sample.labels["id"]: sample.value
        for family in text_string_to_metric_families(answer[1])
        if family.name == "elevate_import_first_seen_timestamp_seconds"
        for sample in family.samples
    }


def test_the_store_in_the_data_volume_outlives_the_container(
    containers: Containers, simulator_url: str, key_file: Path
) -> None:
    volume = f"eie-test-data-{uuid.uuid4().hex[:10]}"
    mount = ("--volume", f"{volume}:/data")
    users: list[str] = []
    try:
        first = start_exporter(containers, simulator_url, key_file, *mount)
        users.append(first.name)
        before = first_seen(first.metrics_url)
        assert set(before) == set(tracked_ids())
        docker("rm", "--force", first.name)

        second = start_exporter(containers, simulator_url, key_file, *mount)
        users.append(second.name)
        assert first_seen(second.metrics_url) == before
        listing = run_once(*mount, "--entrypoint", "ls", containers.image, "/data")
        assert "elevate-import-exporter.db" in listing.split()
    finally:
        docker("rm", "--force", *users)
        docker("volume", "rm", "--force", volume)


def test_the_final_image_holds_no_sources_wheels_pip_or_compilers(image: str) -> None:
    suspects = [
        "/src",
        "/wheels",
        "/root/.cache",
        "/venv/bin/pip",
        "/venv/bin/pip3",
        "/usr/bin/gcc",
        "/usr/bin/cc",
        "/usr/bin/make",
        "/tests",
    ]
    # Besides the named paths: pip inside the venv, and any pyproject.toml or copy of the
    # exporter's sources anywhere outside the kernel's pseudo file systems.
    probe = (
        "import glob, os, sys; "
        "found = [p for p in sys.argv[1:] if os.path.lexists(p)]; "
        "found += glob.glob('/venv/lib/python3*/site-packages/pip'); "
        "tops = [t for t in os.listdir('/') if t not in ('proc', 'sys', 'dev')]; "
        "found += [os.path.join(d, f) for t in tops for d, _, fs in os.walk('/' + t) "
        "for f in fs if f == 'pyproject.toml' "
        "or (f == 'cli.py' and d.endswith('/elevate_import_exporter') "
        "and not d.startswith('/venv/'))]; "
        "print('\\n'.join(found))"
    )
    out = run_once("--entrypoint", "python", image, "-c", probe, *suspects)
    assert out.strip() == "", f"found in the final image:\n{out}"
    # The package is installed from the wheel into the venv, not run from sources.
    where = run_once(
        "--entrypoint",
        "python",
        image,
        "-c",
        "import elevate_import_exporter as p; print(p.__file__)",
    )
    assert where.strip().startswith("/venv/lib/"), where


def test_the_image_adds_only_a_small_virtualenv_to_its_base(image: str) -> None:
    def size(ref: str) -> int:
        return int(checked("image", "inspect", "--format", "{{.Size}}", ref))

    added = size(image) - size(BASE_IMAGE)
    assert added < 40 * 1024 * 1024, f"the image adds {added / 1e6:.1f} MB to its base"


def test_the_build_context_holds_only_what_the_wheel_needs(image: str) -> None:
    # A throw-away image that copies the whole build context, as .dockerignore lets
    # it through, and lists it.
    probe = f"eie-context-probe-{uuid.uuid4().hex[:10]}"
    dockerfile = f"FROM {BASE_IMAGE}\nCOPY . /context\n"
    build = subprocess.run(
        ["docker", "build", "--network", "host", "--tag", probe, "--file", "-", str(REPO)],
        input=dockerfile,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    try:
        listing = run_once("--workdir", "/context", probe, "find", ".")
    finally:
        docker("image", "rm", "--force", probe)
    files = {line.removeprefix("./") for line in listing.split()}
    assert {
        "pyproject.toml",
        "README.md",
        "exporter/elevate_import_exporter/__init__.py",
        "exporter/elevate_import_exporter/cli/__init__.py",
    } <= files
    leaked = sorted(
        f
        for f in files
        if f.startswith(("tests", ".git", ".venv", "bench", "docs"))
        or "__pycache__" in f
        or f.endswith(".pyc")
    )
    assert leaked == []


def hadolint_path() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    if beside_python.exists():
        return str(beside_python)
    return need_tool("hadolint")


def test_the_Dockerfile_is_hadolint_clean() -> None:
    result = subprocess.run(
        [hadolint_path(), str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""
