"""Errors a new user meets at start and in the first rounds, each read from a real process.

A base URL that cannot work is refused at start (exit 2, one line naming flag and value)
instead of failing every request later; a listen address the exporter would take twice is
refused before anything binds; a failed request says where it went and why; a key file
every user can read is named in a warning; the start-up line says what is served.
"""

from __future__ import annotations

import re
import socket
import ssl
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from elevate_import_exporter.settings.config import ConfigError, load_settings
from elevate_import_exporter.simulator import Simulator
from tests.conftest import REPO, SIM_KEY, ExporterProcess, ExporterProcessFor, exporter_env
from tests.support import free_port, wait_until
from tests.upstream import Send, Upstream, answer

ID = "5537431447739019570"
PATH = f"/api/v2/import/status/{ID}"
SECRET = "s3cr3t-PASS-word"


def only_line(proc: ExporterProcess) -> str:
    lines = [line for line in proc.stderr().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert len(lines[0]) < 300, lines[0]
    return lines[0]


def refused(exporter_process: ExporterProcessFor, *args: str) -> ExporterProcess:
    return exporter_process(*args, env={"ELEVATE_API_KEY": SIM_KEY}, wait=False)


# -- base URLs that cannot work ----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("http://[::1", "http://[::1"),
        ("http://127.0.0.1:99999", "99999"),
        ("http://elevate.example:65536", "65536"),
        ("http://127.0.0.1:0", "http://127.0.0.1:0"),
        ("http://127.0.0.1:x", "http://127.0.0.1:x"),
        ("http://127.0.0.1:+80", "+80"),
        ("ftp://elevate.example", "ftp://elevate.example"),
        ("elevate.example", "elevate.example"),
        ("http://elevate .example", "http://elevate .example"),
        ("https://w1a2b3.elevate-api.cloud/api/v2", "/api/v2"),
        ("https://w1a2b3.elevate-api.cloud/api/v4/", "/api/v4"),
        ("https://w1a2b3.elevate-api.cloud/api", "/api"),
    ],
)
def test_a_base_url_that_cannot_work_exits_2_at_start_naming_flag_and_value(
    exporter_process: ExporterProcessFor, url: str, named: str
) -> None:
    proc = refused(exporter_process, "--elevate.base-url", url)
    proc.assert_setup_error("--elevate.base-url", named)
    only_line(proc)


def test_a_base_url_with_the_apis_path_says_to_give_scheme_host_and_port_only(
    exporter_process: ExporterProcessFor,
) -> None:
    proc = refused(exporter_process, "--elevate.base-url", "http://elevate.example/api/v2")
    proc.assert_setup_error("scheme://host[:port]")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"https://feeds:{SECRET}@elevate.example", "https://***@elevate.example"),
        (f"https://elevate.example/?key={SECRET}", "https://elevate.example/?..."),
        (f"https://elevate.example/#{SECRET}", "https://elevate.example/#..."),
    ],
)
def test_a_base_url_with_credentials_a_query_or_a_fragment_is_named_without_them(
    exporter_process: ExporterProcessFor, url: str, shown: str
) -> None:
    proc = refused(exporter_process, "--elevate.base-url", url)
    proc.assert_setup_error("--elevate.base-url", shown)
    assert SECRET not in proc.stderr()


def test_a_bad_base_url_in_the_environment_is_refused_as_its_flag(
    exporter_process: ExporterProcessFor,
) -> None:
    proc = exporter_process(
        env={"ELEVATE_API_KEY": SIM_KEY, "ELEVATE_BASE_URL": "http://[::1"}, wait=False
    )
    proc.assert_setup_error("--elevate.base-url", "http://[::1")


def test_status_refuses_a_base_url_with_a_bad_port_with_exit_2() -> None:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "elevate_import_exporter", "status"),
            *("--elevate.base-url", "http://127.0.0.1:99999", ID),
        ],
        env=exporter_env(ELEVATE_API_KEY=SIM_KEY),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert b"99999" in done.stderr
    assert b"Traceback" not in done.stderr


@pytest.mark.parametrize(
    "url",
    [
        "https://gateway.example/elevate",
        "https://gateway.example/api/elevate",
        "http://[::1]:8080/prefix/",
        "HTTPS://W1A2B3.Elevate-Api.Cloud",
    ],
)
def test_a_base_url_under_a_path_prefix_of_a_gateway_is_still_accepted(url: str) -> None:
    settings = load_settings(base_url=url, api_key=SIM_KEY, storage_path="")
    scheme, rest = url.rstrip("/").split("://")
    assert settings.base_url == f"{scheme.lower()}://{rest}"


# -- listen addresses the exporter would take twice ------------------------------------


@pytest.mark.parametrize(
    ("web", "proxy"),
    [
        ("127.0.0.1:{port}", "127.0.0.1:{port}"),
        (":{port}", "127.0.0.1:{port}"),
        ("127.0.0.1:{port}", "0.0.0.0:{port}"),
        ("[::]:{port}", "127.0.0.1:{port}"),
        ("localhost:{port}", "LOCALHOST:{port}"),
    ],
)
def test_the_same_address_for_metrics_and_proxy_exits_2_naming_both_flags(
    exporter_process: ExporterProcessFor, web: str, proxy: str
) -> None:
    port = free_port()
    web, proxy = web.format(port=port), proxy.format(port=port)
    proc = refused(
        exporter_process,
        *("--elevate.base-url", "http://127.0.0.1:9"),
        *("--web.listen-address", web, "--proxy.listen-address", proxy),
    )
    proc.assert_setup_error("--web.listen-address", "--proxy.listen-address", web, proxy)
    assert "already in use" not in proc.stderr()


def test_a_proxy_address_given_twice_exits_2_naming_it(
    exporter_process: ExporterProcessFor,
) -> None:
    address = f"127.0.0.1:{free_port()}"
    proc = refused(
        exporter_process,
        *("--elevate.base-url", "http://127.0.0.1:9"),
        *("--proxy.listen-address", address, "--proxy.listen-address", address),
    )
    proc.assert_setup_error("--proxy.listen-address", address)


@pytest.mark.parametrize(
    ("web", "proxy"),
    [
        ("127.0.0.1:10025", "127.0.0.2:10025"),
        ("127.0.0.1:10025", "[::1]:10025"),
        ("127.0.0.1:0", "127.0.0.1:0"),
        ("0.0.0.0:10025", "[::1]:10025"),
    ],
)
def test_addresses_that_do_not_overlap_are_accepted(web: str, proxy: str) -> None:
    settings = load_settings(
        base_url="http://127.0.0.1:9",
        api_key=SIM_KEY,
        listen_address=web,
        proxy_listen_address=proxy,
        storage_path="",
    )
    assert len(settings.proxy_addresses) == 1


def test_the_same_address_twice_for_metrics_is_refused_however_it_is_written() -> None:
    with pytest.raises(ConfigError, match=r"--web.listen-address.*0\.0\.0\.0:10025"):
        load_settings(
            base_url="http://127.0.0.1:9",
            api_key=SIM_KEY,
            listen_address=["127.0.0.1:10025", "0.0.0.0:10025"],
            storage_path="",
        )


# -- failed requests say where they went and why ------------------------------------------


def warnings_of(proc: ExporterProcess) -> list[str]:
    return [line for line in proc.stderr().splitlines() if "level=warn" in line]


def start(exporter_process: ExporterProcessFor, base_url: str, **env: str) -> ExporterProcess:
    return exporter_process(
        *("--elevate.base-url", base_url, "--elevate.import-id", ID, "--elevate.retries", "0"),
        env={"ELEVATE_API_KEY": SIM_KEY, **env},
    )


def failure_line(proc: ExporterProcess) -> str:
    def found() -> str | None:
        return next((line for line in warnings_of(proc) if ID in line), None)

    return wait_until(found, timeout=30, what="the failed query's warning")


def test_a_refused_connection_names_host_port_and_that_it_was_refused(
    exporter_process: ExporterProcessFor,
) -> None:
    port = free_port()
    line = failure_line(start(exporter_process, f"http://127.0.0.1:{port}"))
    assert f"127.0.0.1:{port}" in line
    assert "refused" in line
    assert "ConnectionError" not in line


def test_a_host_name_that_does_not_resolve_is_named_as_such(
    exporter_process: ExporterProcessFor,
) -> None:
    line = failure_line(start(exporter_process, "http://no-such-host.invalid:8080"))
    assert "no-such-host.invalid:8080" in line
    assert "resolve" in line


def test_a_reset_connection_is_named_as_such(exporter_process: ExporterProcessFor) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    stop = threading.Event()

    def reset_every_connection() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            # Linger 0: close() sends a RST rather than a FIN.
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            connection.recv(65536)
            connection.close()

    thread = threading.Thread(target=reset_every_connection, daemon=True)
    thread.start()
    try:
        line = failure_line(start(exporter_process, f"http://{address}"))
    finally:
        stop.set()
        thread.join(10)
        listener.close()
    assert address in line
    assert "reset" in line


@pytest.fixture
def untrusted_https() -> Iterator[str]:
    """An HTTPS server whose certificate no CA the exporter trusts has issued."""
    leaf = trustme.CA().issue_cert("127.0.0.1")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(context)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connection.settimeout(10)
            try:
                with context.wrap_socket(connection, server_side=True) as tls:
                    tls.recv(1)
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(10)
    listener.close()


def test_a_certificate_nobody_vouches_for_is_named_with_what_to_set(
    exporter_process: ExporterProcessFor, untrusted_https: str
) -> None:
    line = failure_line(start(exporter_process, f"https://{untrusted_https}"))
    assert untrusted_https in line
    assert "certificate" in line
    assert "REQUESTS_CA_BUNDLE" in line


def test_https_to_a_plain_http_port_says_to_use_http(
    exporter_process: ExporterProcessFor, simulator: Simulator
) -> None:
    line = failure_line(start(exporter_process, simulator.url.replace("http://", "https://")))
    assert simulator.url.removeprefix("http://") in line
    assert "http://" in line


def test_a_404_names_the_url_that_was_asked(exporter_process: ExporterProcessFor) -> None:
    with Upstream() as upstream:
        upstream.on(PATH, [Send(answer(b'{"message": "no such cluster"}', 404))])
        line = failure_line(start(exporter_process, upstream.url))
    assert "reason=cluster_not_found" in line
    assert upstream.url + PATH in line
    assert SIM_KEY not in line


# -- the key file -------------------------------------------------------------------------


def key_file(tmp_path: Path, mode: int) -> Path:
    path = tmp_path / "api-key"
    path.write_text(SIM_KEY + "\n")
    path.chmod(mode)
    return path


def test_a_key_file_every_user_can_read_is_named_in_a_warning_with_its_mode(
    exporter_process: ExporterProcessFor, simulator: Simulator, tmp_path: Path
) -> None:
    path = key_file(tmp_path, 0o644)
    proc = exporter_process(
        *("--elevate.base-url", simulator.url, "--elevate.api-key-file", str(path))
    )
    lines = [line for line in warnings_of(proc) if "key file" in line]
    assert len(lines) == 1, proc.stderr()
    assert str(path) in lines[0]
    assert "0644" in lines[0]
    assert SIM_KEY not in proc.stderr()


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o440, 0o640])
def test_a_key_file_kept_from_other_users_gets_no_warning(
    exporter_process: ExporterProcessFor, simulator: Simulator, tmp_path: Path, mode: int
) -> None:
    path = key_file(tmp_path, mode)
    proc = exporter_process(
        *("--elevate.base-url", simulator.url, "--elevate.api-key-file", str(path))
    )
    assert not [line for line in warnings_of(proc) if "key file" in line], proc.stderr()


def test_status_warns_about_a_key_file_every_user_can_read(
    simulator: Simulator, tmp_path: Path
) -> None:
    path = key_file(tmp_path, 0o604)
    done = subprocess.run(
        [
            *(sys.executable, "-m", "elevate_import_exporter", "status"),
            *("--elevate.base-url", simulator.url, "--elevate.api-key-file", str(path), ID),
        ],
        env=exporter_env(),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        check=False,
    )
    stderr = done.stderr.decode()
    assert str(path) in stderr
    assert "0604" in stderr


# -- the start-up line --------------------------------------------------------------------


def test_the_start_up_line_names_the_proxy_address_and_that_registration_is_on(
    exporter_process: ExporterProcessFor, simulator: Simulator
) -> None:
    proxy = f"127.0.0.1:{free_port()}"
    proc = exporter_process(
        *("--elevate.base-url", simulator.url, "--proxy.listen-address", proxy),
        "--web.enable-registration",
        env={"ELEVATE_API_KEY": SIM_KEY},
    )
    line = next(line for line in proc.stderr().splitlines() if "serving metrics" in line)
    assert f"http://{proxy}" in line
    assert re.search(r"registration[^\"]*/api/v1/imports", line), line


def test_the_start_up_line_says_when_proxy_and_registration_are_off(
    exporter_process: ExporterProcessFor, simulator: Simulator
) -> None:
    proc = exporter_process("--elevate.base-url", simulator.url, env={"ELEVATE_API_KEY": SIM_KEY})
    line = next(line for line in proc.stderr().splitlines() if "serving metrics" in line)
    assert "proxy off" in line
    assert "registration off" in line


# -- track's --exporter: the same rule (needs cli/track.py to call parse_http_url) ---------


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("http://[::1", "http://[::1"),
        ("http://127.0.0.1:0", "'0'"),
        ("http://127.0.0.1:99999", "99999"),
        ("http://127.0.0.1:x", "'x'"),
    ],
)
def test_track_refuses_an_exporter_url_that_cannot_work_with_exit_2_naming_it(
    url: str, named: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "elevate_import_exporter", "track", "--exporter", url, "1001"],
        env=exporter_env(),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        check=False,
    )
    stderr = done.stderr.decode()
    assert done.returncode == 2, stderr
    assert "Traceback" not in stderr
    assert "--exporter" in stderr
    assert named in stderr


# -- status: what to check when the whole key or cluster is refused ----------------------


def run_status_against(simulator: Simulator, **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [
            *(sys.executable, "-m", "elevate_import_exporter", "status"),
            *("--elevate.base-url", simulator.url, "--elevate.retries", "0", ID),
        ],
        env=exporter_env(**{"ELEVATE_API_KEY": SIM_KEY, **env}),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_status_with_a_wrong_key_says_where_the_key_comes_from(simulator: Simulator) -> None:
    done = run_status_against(simulator, ELEVATE_API_KEY="not-the-key")
    assert done.returncode == 3
    stderr = done.stderr.decode()
    assert "--elevate.api-key-file" in stderr
    assert "ELEVATE_API_KEY" in stderr
    assert "not-the-key" not in stderr + done.stdout.decode()


def test_status_against_an_unknown_cluster_says_to_check_the_base_url(
    simulator: Simulator,
) -> None:
    simulator.cluster_missing = True
    done = run_status_against(simulator)
    assert done.returncode == 3
    stderr = done.stderr.decode()
    assert "--elevate.cluster-id" in stderr
    assert "--elevate.base-url" in stderr


def test_status_with_a_good_key_prints_no_hint(simulator: Simulator) -> None:
    from elevate_import_exporter.simulator import ScriptedImport, Step

    simulator.add_import(ScriptedImport(ID, (Step("SUCCESS"),), type="PRODUCTS"))
    done = run_status_against(simulator)
    assert done.returncode == 0
    assert "--elevate" not in done.stderr.decode()
