"""The web config rewritten under a running `run` process: in place (truncated, half-written,
empty, invalid on the way), renamed over, stripped of its users on purpose, given or
stripped of TLS. Basic auth never opens by accident, and a change that needs a restart
says so instead of claiming to be applied."""

from __future__ import annotations

import http.client
import os
import signal
import ssl
import threading
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import bcrypt
import pytest
import trustme

from elevate_import_exporter.simulator import Simulator
from tests.conftest import SIM_KEY, ExporterProcess, ExporterProcessFor
from tests.support import free_port, wait_until

PASSWORD = "correct horse"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
HEADERS = "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
WITH_USER = HEADERS + f"basic_auth_users:\n  prom: '{HASH}'\n"


def basic(user: str, password: str = PASSWORD) -> str:
    return "Basic " + b64encode(f"{user}:{password}".encode()).decode()


def status(
    url: str, authorization: str | None = None, context: ssl.SSLContext | None = None
) -> int:
    headers = {"Authorization": authorization} if authorization else {}
    request = urllib.request.Request(url + "/-/healthy", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def start(
    exporter_process: ExporterProcessFor, simulator: Simulator, config: Path
) -> tuple[ExporterProcess, str]:
    address = f"127.0.0.1:{free_port()}"
    proc = exporter_process(
        "--elevate.base-url",
        simulator.url,
        "--web.listen-address",
        address,
        "--web.config.file",
        str(config),
        env={"ELEVATE_API_KEY": SIM_KEY},
        wait=False,
    )
    return proc, f"http://{address}"


def wait_serving(url: str, authorization: str | None) -> None:
    def up() -> bool:
        try:
            return status(url, authorization) == 200
        except OSError:
            return False

    wait_until(up, timeout=30, what=f"{url} to answer 200")


def write_in_place(path: Path, *parts: str, pause: float) -> None:
    """Truncate ``path`` and write ``parts`` into it, pausing before each: as an editor or a
    configuration tool that rewrites the file it has open."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        for part in parts:
            time.sleep(pause)
            os.write(fd, part.encode())
    finally:
        os.close(fd)


def half(text: str) -> tuple[str, str]:
    """``text`` cut where the first part is valid YAML without any user."""
    cut = text.index("basic_auth_users:")
    return text[:cut], text[cut:]


def invalid_half(text: str) -> tuple[str, str]:
    """``text`` cut inside the user's hash: the first part is not a valid config."""
    cut = text.index(HASH) + 20
    return text[:cut], text[cut:]


REWRITES: dict[str, Callable[[Path], None]] = {
    "truncated, then written": lambda p: write_in_place(p, WITH_USER, pause=0.02),
    "written in two halves": lambda p: write_in_place(p, *half(WITH_USER), pause=0.02),
    "invalid half-way": lambda p: write_in_place(p, *invalid_half(WITH_USER), pause=0.02),
    "written in three steps": lambda p: write_in_place(p, "", *half(WITH_USER), pause=0.01),
}


@pytest.mark.parametrize("rewrite", list(REWRITES))
def test_rewriting_the_web_config_in_place_never_lets_a_request_in_without_credentials(
    exporter_process: ExporterProcessFor, simulator: Simulator, tmp_path: Path, rewrite: str
) -> None:
    config = tmp_path / "web-config.yml"
    config.write_text(WITH_USER)
    proc, url = start(exporter_process, simulator, config)
    wait_serving(url, basic("prom"))
    host, port = url.removeprefix("http://").split(":")
    seen: Counter[int] = Counter()
    stop = threading.Event()

    def hammer() -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        while not stop.is_set():
            connection.request("GET", "/-/healthy")
            answer = connection.getresponse()
            answer.read()
            seen[answer.status] += 1
        connection.close()

    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    rewrites = 0
    until = time.monotonic() + 5.0  # several looks at the file (one a second at most)
    while time.monotonic() < until:
        REWRITES[rewrite](config)
        rewrites += 1
    stop.set()
    for thread in threads:
        thread.join(30)
    assert seen[200] == 0, (rewrites, seen)
    assert seen[401] > 100, seen
    assert status(url, basic("prom")) == 200
    assert proc.process.poll() is None


def test_a_new_file_renamed_over_the_old_one_is_applied(
    exporter_process: ExporterProcessFor, simulator: Simulator, tmp_path: Path
) -> None:
    config = tmp_path / "web-config.yml"
    config.write_text(WITH_USER)
    _proc, url = start(exporter_process, simulator, config)
    wait_serving(url, basic("prom"))
    new = tmp_path / "web-config.yml.new"
    new.write_text(HEADERS + f"basic_auth_users:\n  grafana: '{HASH}'\n")
    new.replace(config)
    wait_serving(url, basic("grafana"))
    assert status(url, basic("prom")) == 401
    assert status(url) == 401


@pytest.mark.parametrize(
    "without_users",
    [HEADERS, "", "basic_auth_users:\n", "basic_auth_users: {}\n"],
    ids=["headers only", "empty", "an empty key", "an empty mapping"],
)
def test_users_removed_on_purpose_are_removed_once_the_file_stays_so_with_a_warning(
    exporter_process: ExporterProcessFor,
    simulator: Simulator,
    tmp_path: Path,
    without_users: str,
) -> None:
    config = tmp_path / "web-config.yml"
    config.write_text(WITH_USER)
    proc, url = start(exporter_process, simulator, config)
    wait_serving(url, basic("prom"))
    new = tmp_path / "web-config.yml.new"
    new.write_text(without_users)
    new.replace(config)
    wait_serving(url, None)
    lines = [line for line in proc.stderr().splitlines() if "basic auth" in line]
    assert any("level=warning" in line and "off" in line for line in lines), proc.stderr()


# -- TLS changes need a restart --------------------------------------------------------------


@pytest.fixture
def certificates(tmp_path: Path) -> trustme.CA:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server = ca.issue_cert("127.0.0.1")
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    server.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    return ca


TLS = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"


@pytest.mark.parametrize("signalled", [True, False], ids=["SIGHUP", "noticed by itself"])
def test_tls_added_at_runtime_is_said_to_need_a_restart_and_not_claimed_as_reloaded(
    exporter_process: ExporterProcessFor,
    simulator: Simulator,
    tmp_path: Path,
    certificates: trustme.CA,
    signalled: bool,
) -> None:
    config = tmp_path / "web-config.yml"
    config.write_text(WITH_USER)
    proc, url = start(exporter_process, simulator, config)
    wait_serving(url, basic("prom"))
    config.write_text(TLS + HEADERS + f"basic_auth_users:\n  grafana: '{HASH}'\n")
    if signalled:
        proc.process.send_signal(signal.SIGHUP)

    def warned() -> bool:
        status(url, basic("grafana"))  # a request makes the exporter look at the file
        return "restart" in proc.stderr()

    wait_until(warned, timeout=30, what="a warning that TLS needs a restart")
    lines = [line for line in proc.stderr().splitlines() if "restart" in line]
    assert len(lines) == 1, lines
    assert "level=warning" in lines[0]
    assert "tls_server_config" in lines[0]
    assert "reloaded the web configuration" not in proc.stderr()
    # Still plain HTTP; the rest of the file (its users) is in force.
    assert status(url, basic("grafana")) == 200
    assert status(url, basic("prom")) == 401


def test_tls_removed_at_runtime_stays_on_until_a_restart_with_a_warning(
    exporter_process: ExporterProcessFor,
    simulator: Simulator,
    tmp_path: Path,
    certificates: trustme.CA,
) -> None:
    config = tmp_path / "web-config.yml"
    config.write_text(TLS + WITH_USER)
    proc, url = start(exporter_process, simulator, config)
    url = url.replace("http://", "https://", 1)
    context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))

    def https_up() -> bool:
        try:
            return status(url, basic("prom"), context) == 200
        except OSError:
            return False

    wait_until(https_up, timeout=30, what="the TLS exporter")
    config.write_text(WITH_USER)
    proc.process.send_signal(signal.SIGHUP)

    def warned() -> bool:
        status(url, basic("prom"), context)
        return "restart" in proc.stderr()

    wait_until(warned, timeout=30, what="a warning that TLS stays on until a restart")
    assert "reloaded the web configuration" not in proc.stderr()
    assert status(url, basic("prom"), context) == 200  # still TLS, still the user
    assert status(url, None, context) == 401


def test_client_certificates_dropped_from_the_file_are_held_like_users(
    tmp_path: Path, certificates: trustme.CA
) -> None:
    from elevate_import_exporter.httpd.webconfig import WebConfigWatcher

    strict = TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n"
    config = tmp_path / "web-config.yml"
    config.write_text(strict + WITH_USER)
    watcher = WebConfigWatcher(config, check_interval=0, hold_seconds=3600)
    first = watcher.current()
    config.write_text(TLS + WITH_USER)  # the client_auth_type lines not written yet
    assert watcher.current() is first
    assert watcher.unapplied is not None
    assert "client_auth_type" in watcher.unapplied
    config.write_text(strict + HEADERS + f"basic_auth_users:\n  grafana: '{HASH}'\n")
    assert list(watcher.current().basic_auth_users) == ["grafana"]  # not a weakening: at once
    assert watcher.unapplied is None
