"""The example Alertmanager configuration routes by owner: a real Alertmanager with the
shipped routes sends each alert to the webhook of its `team`, and alerts without a team
(or with the exporter's overflow value `other`) to the default receiver.

Only the receivers' addresses (a webhook receiver on loopback) and the group timings are
changed in the copy the test runs; routes, matchers and inhibitions are the shipped ones.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.alerting import post_alerts, running_alertmanager
from tests.support import wait_until

REPO = Path(__file__).resolve().parent.parent
ALERTMANAGER_CONFIG = REPO / "prometheus" / "alertmanager.yml"
JOB = "elevate-import-exporter"


@dataclass
class Webhooks:
    """The notifications Alertmanager posted, by path, as parsed JSON."""

    url: str
    posted: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def alerts(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [alert for body in self.posted.get(path, []) for alert in body["alerts"]]

    def firing(self, path: str, alertname: str, **labels: str) -> list[dict[str, Any]]:
        return [
            a
            for a in self.alerts(path)
            if a["status"] == "firing"
            and a["labels"].get("alertname") == alertname
            and all(a["labels"].get(k) == v for k, v in labels.items())
        ]


@contextmanager
def receiving_webhooks() -> Iterator[Webhooks]:
    """A webhook receiver on a free loopback port, collecting what is posted to it."""
    hooks = Webhooks(url="")

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(min(length, 1 << 20)))
            with hooks.lock:
                hooks.posted.setdefault(self.path, []).append(body)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the test reads what was posted, not a log

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    hooks.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hooks
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def webhooks() -> Iterator[Webhooks]:
    with receiving_webhooks() as hooks:
        yield hooks


def alertmanager_config(webhook_base: str) -> dict[str, Any]:
    """The shipped configuration, its webhooks on ``webhook_base`` (same paths), and
    notifications sent at once instead of after 30 s."""
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook_base + urlsplit(hook["url"]).path
    config["route"] |= {"group_wait": "0s", "group_interval": "1s"}
    return config


@pytest.fixture(scope="module")
def alertmanager(webhooks: Webhooks, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("routing")
    with running_alertmanager(alertmanager_config(webhooks.url), tmp) as url:
        yield url


def _delivered(webhooks: Webhooks, path: str, alertname: str, **labels: str) -> list[Any]:
    return wait_until(
        lambda: webhooks.firing(path, alertname, **labels),
        timeout=30,
        interval=0.2,
        what=f"{alertname} {labels} posted to {path}",
    )


def test_a_failed_import_reaches_the_webhook_of_its_team_with_the_team_label(
    alertmanager: str, webhooks: Webhooks
) -> None:
    where = {"cluster": "prod", "job": JOB, "instance": "a:10025"}
    post_alerts(
        alertmanager,
        [
            {"alertname": "ElevateImportFailed", **where, "id": "101", "team": "catalog"},
            {"alertname": "ElevateImportFailed", **where, "id": "102"},
            {"alertname": "ElevateImportFailed", **where, "id": "103", "team": "other"},
        ],
    )
    (alert,) = _delivered(webhooks, "/catalog", "ElevateImportFailed", id="101")
    assert alert["labels"]["team"] == "catalog"
    assert alert["labels"]["cluster"] == "prod"
    _delivered(webhooks, "/alerts", "ElevateImportFailed", id="102")
    _delivered(webhooks, "/alerts", "ElevateImportFailed", id="103")
    # Each alert went to one receiver only: no route continues.
    assert {a["labels"]["id"] for a in webhooks.alerts("/catalog")} == {"101"}
    assert webhooks.firing("/merchandising", "ElevateImportFailed") == []


def test_a_quiet_feed_reaches_its_team_and_a_burning_budget_the_default_receiver(
    alertmanager: str, webhooks: Webhooks
) -> None:
    where = {"cluster": "prod", "job": JOB}
    post_alerts(
        alertmanager,
        [
            {
                "alertname": "ElevateImportFeedQuiet",
                **where,
                "type": "PANELS",
                "feed_name": "panels",
                "team": "merchandising",
            },
            {"alertname": "ElevateImportErrorBudgetFastBurn", **where, "type": "PANELS"},
        ],
    )
    (alert,) = _delivered(webhooks, "/merchandising", "ElevateImportFeedQuiet")
    assert alert["labels"]["feed_name"] == "panels"
    _delivered(webhooks, "/alerts", "ElevateImportErrorBudgetFastBurn", type="PANELS")
