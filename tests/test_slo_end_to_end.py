"""The success SLO, the quiet feed and the routes by owner, end to end: a real Prometheus
scrapes a real exporter process that watches simulated imports registered with their
owner labels, evaluates the rules deploy/generate.py makes (with a short --quiet-after,
through --output-dir: no edited copy), and sends its alerts to a real Alertmanager with
the shipped routes, whose webhooks a receiver on loopback records.

The PRODUCTS feed of team catalog fails 4 imports out of 5: the recording rules read 0.8
and 0.2, the page fires, and each failure reaches the catalog webhook with its team. The
ADS feed of team merchandising succeeds once and stops: ElevateImportFeedQuiet fires once
the threshold has passed, not before. The SYNONYMS feed keeps succeeding and stays quiet.
"""

from __future__ import annotations

import calendar
import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from tests.alerting import running_alertmanager
from tests.support import answers_200, free_port, need_tool, post_json, stop_process, wait_until
from tests.test_rules_routing import Webhooks, alertmanager_config, receiving_webhooks

REPO = Path(__file__).resolve().parent.parent
GENERATOR = REPO / "deploy" / "generate.py"
JOB = "elevate-import-exporter"
CLUSTER = "prod"
API_KEY = "slo-key-7d21"
QUIET_AFTER = 20  # seconds: long against the scrape interval (1 s), short for a test
WAIT = 90.0
PRODUCTS = {"feed_name": "nightly", "team": "catalog"}
ADS = {"feed_name": "hourly-ads", "team": "merchandising"}
SYNONYMS = {"feed_name": "synonyms", "team": "search"}
FAILURES = 4


@dataclass
class Stack:
    prometheus: str
    exporter: str
    simulator: Simulator
    webhooks: Webhooks
    logs: list[Path]
    next_id: int = 5000

    def tails(self) -> str:
        logs = "\n".join(
            f"--- {p.name}:\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:])
            for p in self.logs
            if p.exists()
        )
        try:
            seen = self.query('{__name__=~"elevate_import:.+_ratio:rate5m|ALERTS"}')
        except OSError as exc:
            seen = [{"error": str(exc)}]
        return logs + "\n--- Prometheus:\n" + "\n".join(map(str, seen))

    def wait(self, probe: Any, what: str, timeout: float = WAIT) -> Any:
        try:
            return wait_until(probe, timeout=timeout, interval=0.5, what=what)
        except pytest.fail.Exception:
            pytest.fail(f"timed out waiting for {what}\n{self.tails()}")

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        result: list[dict[str, Any]] = _get_json(url)["data"]["result"]
        return result

    def firing(self, alertname: str, **labels: str) -> list[dict[str, Any]]:
        alerts = _get_json(f"{self.prometheus}/api/v1/alerts")["data"]["alerts"]
        return [
            a
            for a in alerts
            if a["state"] == "firing"
            and a["labels"]["alertname"] == alertname
            and all(a["labels"].get(k) == v for k, v in labels.items())
        ]

    def start_import(self, kind: str, labels: dict[str, str], final: str = "") -> str:
        """A new import in the simulator, registered with the exporter under its owner
        labels: WAITING until :meth:`finish` gives it ``final``, or for a second when
        ``final`` is given here."""
        import_id = str(self.next_id)
        self.next_id += 1
        steps = (Step("WAITING", seconds=1.0), Step(final)) if final else (Step("WAITING"),)
        self.simulator.add_import(ScriptedImport(import_id, steps, type=kind))
        register(self.exporter, import_id, kind, labels)
        return import_id

    def finish(self, import_id: str, kind: str, final: str) -> None:
        message = f"{final.lower()} on purpose"
        self.simulator.add_import(ScriptedImport(import_id, (Step(final, message=message),), kind))


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.load(answer)


def register(exporter: str, import_id: str, kind: str, labels: dict[str, str]) -> None:
    document = {"id": import_id, "type": kind, "labels": labels}
    status, _ = post_json(f"{exporter}/api/v1/imports", document, timeout=10)
    assert status in {200, 201}, status


def generated_rules(tmp: Path) -> Path:
    result = subprocess.run(
        [
            *(sys.executable, str(GENERATOR), "--output-dir", str(tmp)),
            *("--quiet-after", f"{QUIET_AFTER}s", "--metric-labels", "feed_name,team"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return tmp / "alerts.yml"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus_bin = need_tool("prometheus")
    tmp = tmp_path_factory.mktemp("slo")
    rules = generated_rules(tmp / "rules")
    exporter_address, prometheus_port = f"127.0.0.1:{free_port()}", free_port()
    logs = [tmp / "exporter.log", tmp / "prometheus.log", tmp / "am" / "alertmanager.log"]
    processes: list[subprocess.Popen[bytes]] = []
    with (
        Simulator(api_key=API_KEY) as simulator,
        receiving_webhooks() as webhooks,
        running_alertmanager(alertmanager_config(webhooks.url), tmp / "am") as alertmanager,
    ):
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith("ELEVATE_")}
            env |= {"ELEVATE_API_KEY": API_KEY}
            with logs[0].open("wb") as out:
                processes.append(
                    subprocess.Popen(
                        [
                            *(sys.executable, "-m", "elevate_import_exporter", "run"),
                            *("--elevate.base-url", simulator.url),
                            *("--elevate.min-poll-interval", "1s", "--elevate.retries", "0"),
                            *("--storage.path", str(tmp / "store")),
                            "--web.enable-registration",
                            *("--imports.metric-labels", "feed_name,team"),
                            *("--web.listen-address", exporter_address),
                        ],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        cwd=tmp,
                    )
                )
            config = {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(rules)],
                "alerting": {
                    "alertmanagers": [
                        {"static_configs": [{"targets": [alertmanager.removeprefix("http://")]}]}
                    ]
                },
                "scrape_configs": [
                    {
                        "job_name": JOB,
                        # The target label of several clusters (issue 24): every rule keeps it.
                        "static_configs": [
                            {"targets": [exporter_address], "labels": {"cluster": CLUSTER}}
                        ],
                    }
                ],
            }
            (tmp / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
            with logs[1].open("wb") as out:
                processes.append(
                    subprocess.Popen(
                        [
                            prometheus_bin,
                            f"--config.file={tmp / 'prometheus.yml'}",
                            f"--storage.tsdb.path={tmp / 'prom-data'}",
                            f"--web.listen-address=127.0.0.1:{prometheus_port}",
                            "--rules.alert.resend-delay=1s",
                        ],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        cwd=tmp,
                    )
                )
            ready = Stack(
                f"http://127.0.0.1:{prometheus_port}",
                f"http://{exporter_address}",
                simulator,
                webhooks,
                logs,
            )
            for url in (f"{ready.exporter}/-/ready", f"{ready.prometheus}/-/ready"):
                ready.wait(lambda url=url: answers_200(url), f"{url} ready", timeout=30)
            yield ready
        finally:
            for process in reversed(processes):
                stop_process(process)


@pytest.fixture(scope="module")
def storm(stack: Stack) -> dict[str, str]:
    """The PRODUCTS feed fails 4 imports of 5; the ADS feed succeeds once and stops."""
    ids = {"success": stack.start_import("PRODUCTS", PRODUCTS)}
    for n in range(FAILURES):
        ids[f"failure{n}"] = stack.start_import("PRODUCTS", PRODUCTS)
    ids["ads"] = stack.start_import("ADS", ADS)
    # rate() sees an increase only from a sample before it: the imports end once
    # Prometheus holds the counters of both types at 0 (every final status of each).
    stack.wait(
        lambda: len(stack.query('elevate_import_finished_total{type=~"PRODUCTS|ADS"} == 0')) == 8,
        "the counters of PRODUCTS and ADS at 0 in Prometheus",
    )
    stack.finish(ids["success"], "PRODUCTS", "SUCCESS")
    for n in range(FAILURES):
        stack.finish(ids[f"failure{n}"], "PRODUCTS", "FAILURE")
    stack.finish(ids["ads"], "ADS", "SUCCESS")
    return ids


def _value(result: list[dict[str, Any]]) -> float | None:
    return float(result[0]["value"][1]) if len(result) == 1 else None


def test_the_recording_rules_read_the_error_and_success_ratio_of_the_failing_type(
    stack: Stack, storm: dict[str, str]
) -> None:
    selector = f'{{cluster="{CLUSTER}",job="{JOB}",type="PRODUCTS"}}'
    # Finals land over a few scrapes: wait for all five.
    stack.wait(
        lambda: (
            _value(stack.query(f"elevate_import:error_ratio:rate5m{selector}"))
            == pytest.approx(0.8)
        ),
        "the 5m error ratio of PRODUCTS at 0.8",
    )
    (series,) = stack.query(f"elevate_import:error_ratio:rate5m{selector}")
    # By cluster, job and type: no instance, no owner label.
    assert set(series["metric"]) == {"__name__", "cluster", "job", "type"}
    for window in ("5m", "30m", "1h", "2h", "6h", "1d", "3d"):
        success = _value(stack.query(f"elevate_import:success_ratio:rate{window}{selector}"))
        assert success == pytest.approx(0.2), window
    # ADS has had no failure.
    stack.wait(
        lambda: _value(stack.query('elevate_import:error_ratio:rate5m{type="ADS"}')) == 0,
        "the 5m error ratio of ADS at 0",
    )


def test_most_imports_failing_fires_the_page_for_the_type_and_cluster(
    stack: Stack, storm: dict[str, str]
) -> None:
    (alert,) = stack.wait(
        lambda: stack.firing("ElevateImportErrorBudgetFastBurn", type="PRODUCTS"),
        "ElevateImportErrorBudgetFastBurn for PRODUCTS",
    )
    assert alert["labels"]["cluster"] == CLUSTER
    assert alert["labels"]["severity"] == "critical"
    assert "99% success objective" in alert["annotations"]["description"]
    assert stack.firing("ElevateImportErrorBudgetFastBurn", type="ADS") == []


def test_a_failed_import_reaches_the_webhook_of_its_team_with_its_owner_labels(
    stack: Stack, storm: dict[str, str]
) -> None:
    failed = {storm[f"failure{n}"] for n in range(FAILURES)}
    delivered = stack.wait(
        lambda: (
            {a["labels"]["id"] for a in stack.webhooks.firing("/catalog", "ElevateImportFailed")}
            >= failed
            and stack.webhooks.firing("/catalog", "ElevateImportFailed")
        ),
        "every ElevateImportFailed of PRODUCTS at the catalog webhook",
    )
    for alert in delivered:
        assert alert["labels"]["team"] == "catalog"
        assert alert["labels"]["feed_name"] == "nightly"
        assert alert["labels"]["cluster"] == CLUSTER
    # Nothing of team catalog went to another receiver.
    assert stack.webhooks.firing("/alerts", "ElevateImportFailed") == []


def test_a_feed_that_stops_fires_ElevateImportFeedQuiet_after_the_threshold_and_not_before(
    stack: Stack, storm: dict[str, str]
) -> None:
    # A feed that keeps succeeding, one import every few seconds, until the stopped one
    # has fired: it must stay quiet all along.
    last = 0.0

    def quiet_ads() -> list[dict[str, Any]]:
        nonlocal last
        if time.monotonic() - last > 4:
            stack.start_import("SYNONYMS", SYNONYMS, final="SUCCESS")
            last = time.monotonic()
        assert stack.firing("ElevateImportFeedQuiet", type="SYNONYMS") == []
        return stack.firing("ElevateImportFeedQuiet", type="ADS")

    (alert,) = stack.wait(quiet_ads, "ElevateImportFeedQuiet for the ADS feed")
    assert alert["labels"]["feed_name"] == "hourly-ads"
    assert alert["labels"]["team"] == "merchandising"
    assert alert["labels"]["cluster"] == CLUSTER
    assert f"threshold of {QUIET_AFTER}s" in alert["annotations"]["description"]
    # When it fired, the last ADS success was more than the threshold ago.
    (last_success,) = stack.query(
        'elevate_import_last_final_timestamp_seconds{type="ADS",status="SUCCESS"}'
    )
    # Whole seconds of the RFC 3339 time (Prometheus gives nanoseconds), in UTC.
    fired = calendar.timegm(time.strptime(alert["activeAt"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert fired - float(last_success["value"][1]) > QUIET_AFTER - 1
    stack.wait(
        lambda: stack.webhooks.firing("/merchandising", "ElevateImportFeedQuiet"),
        "ElevateImportFeedQuiet at the merchandising webhook",
    )
