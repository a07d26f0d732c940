"""A real Prometheus (Debian's) scrapes the exporter over mutual TLS with basic auth, using
the example web config (examples/web-config.yml) with certificates made here.

The exporter is an in-process Application given the web config as --web.config.file
would give it: TLS, client certificates and basic auth all come from that file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

import trustme
import yaml

from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from tests.conftest import ExporterFor
from tests.support import free_port, need_tool, stop_process, wait_until

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "web-config.yml"
PASSWORD = "example-password-change-me"  # the example file's documented password


def write_pki(folder: Path) -> None:
    """The example's file names; one CA signs the server's and Prometheus' certificates."""
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    client = ca.issue_cert("prometheus.example")
    ca.cert_pem.write_to_path(str(folder / "client-ca.crt"))
    server.cert_chain_pems[0].write_to_path(str(folder / "server.crt"))
    server.private_key_pem.write_to_path(str(folder / "server.key"))
    client.cert_chain_pems[0].write_to_path(str(folder / "prometheus.crt"))
    client.private_key_pem.write_to_path(str(folder / "prometheus.key"))


def job(name: str, target: str, folder: Path, *, cert: bool, password: str) -> dict[str, Any]:
    tls: dict[str, str] = {"ca_file": str(folder / "client-ca.crt")}
    if cert:
        tls |= {
            "cert_file": str(folder / "prometheus.crt"),
            "key_file": str(folder / "prometheus.key"),
        }
    return {
        "job_name": name,
        "scheme": "https",
        "tls_config": tls,
        "basic_auth": {"username": "prometheus", "password": password},
        "static_configs": [{"targets": [target]}],
    }


def query(prometheus_url: str, promql: str) -> list[dict[str, Any]]:
    url = f"{prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            body = json.load(answer)
    except OSError:
        return []
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def value(prometheus_url: str, promql: str) -> float | None:
    found = query(prometheus_url, promql)
    return float(found[0]["value"][1]) if len(found) == 1 else None


def scraped(prometheus_url: str, promql: str) -> bool:
    return value(prometheus_url, promql) is not None


def test_prometheus_scrapes_over_mutual_tls_with_basic_auth_using_the_example_config(
    simulator: Simulator, exporter_for: ExporterFor, tmp_path: Path
) -> None:
    prometheus = need_tool("prometheus")
    simulator.add_import(ScriptedImport("1001", (Step("IN_PROGRESS"),)))
    shutil.copy(EXAMPLE, tmp_path / "web-config.yml")
    write_pki(tmp_path)
    app = exporter_for(simulator.url, ["1001"], web_config_file=str(tmp_path / "web-config.yml"))
    assert app.url.startswith("https://")
    target = f"127.0.0.1:{app.port}"
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [
            job("mtls", target, tmp_path, cert=True, password=PASSWORD),
            job("no-client-cert", target, tmp_path, cert=False, password=PASSWORD),
            job("wrong-password", target, tmp_path, cert=True, password="wrong"),
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{free_port()}"
    with (tmp_path / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                prometheus,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address={url.removeprefix('http://')}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        for name, up in (("mtls", 1.0), ("no-client-cert", 0.0), ("wrong-password", 0.0)):
            promql = f'up{{job="{name}"}}'
            wait_until(partial(scraped, url, promql), timeout=60, what=f"a scrape of {name}")
            assert value(url, promql) == up, name
        metric = 'elevate_import_poll_success{job="mtls",id="1001"}'
        assert wait_until(lambda: value(url, metric), timeout=30, what=metric) == 1.0
    finally:
        stop_process(process)
