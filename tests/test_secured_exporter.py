"""The whole exporter behind its web configuration: a real `run` process serving HTTPS,
asking for basic auth and a client certificate, reloading the file on SIGHUP."""

from __future__ import annotations

import signal
import ssl
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import trustme

from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from tests.conftest import SIM_KEY, ExporterProcessFor
from tests.support import Scrape, free_port, wait_until

IMPORT = "5537431447739019570"
PASSWORD = "correct horse battery staple"


def config_text(users: dict[str, str], *, client_auth: str = "NoClientCert") -> str:
    lines = [
        "tls_server_config:",
        "  cert_file: server.pem",
        "  key_file: server.key",
        f"  client_auth_type: {client_auth}",
    ]
    if client_auth != "NoClientCert":
        lines.append("  client_ca_file: ca.pem")
    lines += ["http_server_config:", "  headers:", "    X-Frame-Options: deny"]
    lines += ["basic_auth_users:"] + [f"  {user}: '{hashed}'" for user, hashed in users.items()]
    return "\n".join(lines) + "\n"


def hashed(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    server.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    client = ca.issue_cert("prometheus.example")
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    client.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    return tmp_path


def client(folder: Path, *, certificate: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(folder / "ca.pem"))
    if certificate:
        context.load_cert_chain(folder / "client.pem", folder / "client.key")
    return context


def get(
    url: str, context: ssl.SSLContext, user: str | None = None, password: str = PASSWORD
) -> tuple[int, dict[str, str], str]:
    headers = {}
    if user is not None:
        headers["Authorization"] = "Basic " + b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as answer:
            return answer.status, dict(answer.headers), answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def answers(url: str, context: ssl.SSLContext, user: str | None = None) -> bool:
    """Whether ``url`` answers 200 yet (a process that is starting refuses connections)."""
    try:
        return get(url, context, user)[0] == 200
    except OSError:
        return False


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    with Simulator([ScriptedImport(IMPORT, (Step("FAILURE", message="No title"),))]) as sim:
        sim.api_key = SIM_KEY
        yield sim


def start(exporter_process: ExporterProcessFor, sim: Simulator, config: Path, *extra: str) -> str:
    address = f"127.0.0.1:{free_port()}"
    exporter_process(
        "--elevate.base-url",
        sim.url,
        "--elevate.import-id",
        IMPORT,
        "--web.listen-address",
        address,
        "--web.config.file",
        str(config),
        *extra,
        env={"ELEVATE_API_KEY": SIM_KEY},
        wait=False,
    )
    return f"https://{address}"


def test_run_serves_https_with_basic_auth_and_its_headers_from_the_web_config(
    exporter_process: ExporterProcessFor, simulator: Simulator, folder: Path
) -> None:
    config = folder / "web-config.yml"
    config.write_text(config_text({"prometheus": hashed(PASSWORD)}))
    url = start(exporter_process, simulator, config)
    context = client(folder)
    wait_until(
        lambda: answers(url + "/-/ready", context, "prometheus"),
        timeout=30,
        what="the exporter to be ready over HTTPS",
    )

    status, headers, text = get(url + "/metrics", context, "prometheus")
    assert status == 200
    assert Scrape(text).current_status(IMPORT) == "FAILURE"
    assert headers["X-Frame-Options"] == "deny"

    for user, password in (("prometheus", "wrong"), ("nobody", PASSWORD)):
        status, headers, _ = get(url + "/metrics", context, user, password)
        assert status == 401
        assert headers["WWW-Authenticate"].startswith("Basic ")
    assert get(url + "/", context)[0] == 401
    # Health needs credentials too, unless the operator exempts it.
    assert get(url + "/-/healthy", context)[0] == 401


def test_health_endpoints_answer_without_credentials_when_exempted(
    exporter_process: ExporterProcessFor, simulator: Simulator, folder: Path
) -> None:
    config = folder / "web-config.yml"
    config.write_text(config_text({"prometheus": hashed(PASSWORD)}))
    url = start(exporter_process, simulator, config, "--web.auth-exempt-health")
    context = client(folder)
    wait_until(
        lambda: answers(url + "/-/ready", context),
        timeout=30,
        what="readiness without credentials",
    )
    assert get(url + "/-/healthy", context)[0] == 200
    assert get(url + "/metrics", context)[0] == 401


def test_a_client_certificate_is_required_when_the_web_config_says_so(
    exporter_process: ExporterProcessFor, simulator: Simulator, folder: Path
) -> None:
    config = folder / "web-config.yml"
    config.write_text(
        config_text({"prometheus": hashed(PASSWORD)}, client_auth="RequireAndVerifyClientCert")
    )
    url = start(exporter_process, simulator, config)
    with_cert = client(folder, certificate=True)
    wait_until(
        lambda: answers(url + "/-/ready", with_cert, "prometheus"),
        timeout=30,
        what="the exporter to be ready over mutual TLS",
    )
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        get(url + "/-/healthy", client(folder), "prometheus")


def test_sighup_reloads_the_users_of_the_web_config(
    exporter_process: ExporterProcessFor, simulator: Simulator, folder: Path
) -> None:
    config = folder / "web-config.yml"
    config.write_text(config_text({"prometheus": hashed(PASSWORD)}))
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
    url, context = f"https://{address}", client(folder)
    wait_until(
        lambda: answers(url + "/-/ready", context, "prometheus"),
        timeout=30,
        what="the exporter to be ready",
    )
    config.write_text(config_text({"grafana": hashed(PASSWORD)}))
    proc.process.send_signal(signal.SIGHUP)
    wait_until(
        lambda: answers(url + "/-/healthy", context, "grafana"),
        timeout=30,
        what="the new user to be let in after SIGHUP",
    )
    assert get(url + "/-/healthy", context, "prometheus")[0] == 401
    assert proc.process.poll() is None
    assert "reloaded the web configuration" in proc.stderr()
