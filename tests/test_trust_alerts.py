"""Trust on the pager: the shipped rules and the example Alertmanager configuration, in a
real Prometheus and a real Alertmanager, scraping real exporter processes.

Exporter A watches an import that ends in FAILURE and an id that Elevate never answers
validly (a 5xx every time). Exporter B asks an API that is down (nothing listens on its
port). Only the rules' `for` durations are shortened; expressions, routes and inhibitions
are the shipped ones. Each verdict is read from Alertmanager's and Prometheus' APIs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from tests.support import answers_200, free_port, need_tool, stop_process, wait_until
from tests.test_prometheus_end_to_end import rules_with_short_for

REPO = Path(__file__).resolve().parent.parent
ALERTMANAGER_CONFIG = REPO / "prometheus" / "alertmanager.yml"
JOB = "elevate-import-exporter"
API_KEY = "trust-key-51c0"
FAILS, SILENT = "1002", "1010"
DOWN_IDS = ("2001", "2002")
WAIT = 60.0


@dataclass
class Pager:
    prometheus: str
    alertmanager: str
    a: str  # instance of the exporter with a failed import and a silent id
    b: str  # instance of the exporter whose API is down
    logs: list[Path]

    def tails(self) -> str:
        return "\n".join(
            f"--- {p.name}:\n" + "\n".join(p.read_text(errors="replace").splitlines()[-12:])
            for p in self.logs
        )

    def firing(self, alertname: str, **labels: str) -> list[dict[str, Any]]:
        data = _get_json(f"{self.prometheus}/api/v1/alerts")["data"]["alerts"]
        return [
            a
            for a in data
            if a["state"] == "firing"
            and a["labels"]["alertname"] == alertname
            and all(a["labels"].get(k) == v for k, v in labels.items())
        ]

    def received(self, alertname: str, **labels: str) -> list[dict[str, Any]]:
        """The alerts Alertmanager holds with these labels, with their status."""
        query = urllib.parse.urlencode({"filter": f'alertname="{alertname}"'})
        found = _get_json(f"{self.alertmanager}/api/v2/alerts?{query}")
        return [a for a in found if all(a["labels"].get(k) == v for k, v in labels.items())]

    def wait(self, probe: Any, what: str) -> Any:
        try:
            return wait_until(probe, timeout=WAIT, interval=0.5, what=what)
        except pytest.fail.Exception:
            pytest.fail(f"timed out waiting for {what}\n{self.tails()}")


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.load(answer)


def _exporter(
    base_url: str, ids: tuple[str, ...], address: str, log: Path, cwd: Path
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELEVATE_")}
    env |= {"ELEVATE_API_KEY": API_KEY}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "elevate_import_exporter", "run"]
            + ["--elevate.base-url", base_url, "--elevate.min-poll-interval", "1s"]
            + ["--elevate.retries", "0", "--storage.path", ""]
            + [f"--elevate.import-id={i}" for i in ids]
            + ["--web.listen-address", address],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )


@pytest.fixture(scope="module")
def pager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pager]:
    prometheus_bin = need_tool("prometheus")
    alertmanager_bin = need_tool("prometheus-alertmanager")
    tmp = tmp_path_factory.mktemp("pager")
    a, b = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    am_port, prom_port = free_port(), free_port()
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there: the API is down

    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    # The shipped routes and inhibitions; receivers without integrations, so nothing is sent.
    config["receivers"] = [{"name": r["name"]} for r in config["receivers"]]
    # Notifications are not under test: group_wait would only delay nothing.
    (tmp / "alertmanager.yml").write_text(yaml.safe_dump(config))
    prometheus_config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules_with_short_for(tmp))],
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]
        },
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [a, b]}]}],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config))

    imports = [
        ScriptedImport(FAILS, (Step("WAITING", seconds=1.0), Step("FAILURE", message="bad")))
    ]
    logs = [tmp / n for n in ("exporter-a.log", "exporter-b.log", "am.log", "prometheus.log")]
    processes: list[subprocess.Popen[bytes]] = []
    with Simulator(imports, api_key=API_KEY, fail_ids=[SILENT]) as sim:
        try:
            processes.append(_exporter(sim.url, (FAILS, SILENT), a, logs[0], tmp))
            processes.append(_exporter(nobody, DOWN_IDS, b, logs[1], tmp))
            with logs[2].open("wb") as out:
                processes.append(
                    subprocess.Popen(
                        [
                            alertmanager_bin,
                            f"--config.file={tmp / 'alertmanager.yml'}",
                            f"--storage.path={tmp / 'am-data'}",
                            f"--web.listen-address=127.0.0.1:{am_port}",
                            "--cluster.listen-address=",
                        ],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
            with logs[3].open("wb") as out:
                processes.append(
                    subprocess.Popen(
                        [
                            prometheus_bin,
                            f"--config.file={tmp / 'prometheus.yml'}",
                            f"--storage.tsdb.path={tmp / 'prom-data'}",
                            f"--web.listen-address=127.0.0.1:{prom_port}",
                            "--rules.alert.resend-delay=1s",
                        ],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        cwd=tmp,
                    )
                )
            ready = Pager(
                f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{am_port}", a, b, logs
            )
            for url in (
                f"http://{a}/-/ready",
                f"http://{b}/-/ready",
                f"{ready.alertmanager}/-/ready",
                f"{ready.prometheus}/-/ready",
            ):
                ready.wait(lambda url=url: answers_200(url), f"{url} ready")
            yield ready
        finally:
            for process in reversed(processes):
                stop_process(process)


def _active(alerts: list[dict[str, Any]]) -> bool:
    return bool(alerts) and all(
        a["status"]["state"] == "active" and not a["status"]["inhibitedBy"] for a in alerts
    )


def test_a_silent_id_does_not_hold_back_the_failure_of_another_import(pager: Pager) -> None:
    alerts = pager.wait(
        lambda: pager.received("ElevateImportFailed", instance=pager.a, id=FAILS),
        "ElevateImportFailed at Alertmanager",
    )
    # Held for a while so that an inhibition, were there one, had time to apply.
    pager.wait(
        lambda: pager.received("ElevateImportPollFailing", instance=pager.a, id=SILENT),
        "ElevateImportPollFailing at Alertmanager",
    )
    alerts = pager.received("ElevateImportFailed", instance=pager.a, id=FAILS)
    assert _active(alerts), alerts
    assert pager.firing("ElevateApiUnreachable", instance=pager.a) == []


def test_the_silent_id_fires_its_own_alert_naming_the_id_and_the_reason(pager: Pager) -> None:
    (alert,) = pager.wait(
        lambda: pager.firing("ElevateImportPollFailing", instance=pager.a, id=SILENT),
        "ElevateImportPollFailing firing",
    )
    assert "server_error" in alert["annotations"]["description"]
    assert SILENT in alert["annotations"]["description"]
    assert pager.firing("ElevateImportPollFailing", instance=pager.a, id=FAILS) == []
    received = pager.wait(
        lambda: pager.received("ElevateImportPollFailing", instance=pager.a, id=SILENT),
        "ElevateImportPollFailing at Alertmanager",
    )
    assert _active(received), received


def test_an_api_that_is_down_fires_ElevateApiUnreachable_and_holds_back_the_per_id_alerts(
    pager: Pager,
) -> None:
    (alert,) = pager.wait(
        lambda: pager.firing("ElevateApiUnreachable", instance=pager.b),
        "ElevateApiUnreachable for the exporter whose API is down",
    )
    assert alert["labels"]["job"] == JOB
    held = pager.wait(
        lambda: [
            a
            for a in pager.received("ElevateImportPollFailing", instance=pager.b)
            if a["status"]["inhibitedBy"]
        ],
        "the per-id alerts of the exporter whose API is down held back",
    )
    assert {a["labels"]["id"] for a in held} <= set(DOWN_IDS)
    # The other exporter's API answers: it stays quiet there.
    assert pager.firing("ElevateApiUnreachable", instance=pager.a) == []
