"""The dashboard and the alert rules against a real Prometheus scraping the real exporter.

The simulated Elevate API (in process) serves three scripted imports: one
succeeds, one fails with a message, one stays in progress. The exporter runs as
its own process, polls the simulator, and a real Prometheus (Debian's 2.42)
scrapes it every second with the shipped rules loaded. Only the rules' `for`
durations are shortened, so the alerts fire within seconds; their expressions
are the shipped ones. Everything is checked through Prometheus' HTTP API.

The tests share one stack and run in file order; the last one makes the
simulator reject the key.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from tests.support import free_port, need_tool, scrape, stop_process, wait_until
from tests.test_dashboard import (
    AGE_PANEL,
    FAILED_TABLE,
    PROMETHEUS_LABELS,
    TARGET_LABELS,
    Query,
    annotation_queries,
    load_dashboard,
    panel_queries,
    panel_titled,
    query_variables,
    read_promql,
    substitute,
    variable_query,
)

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "prometheus" / "alerts.yml"
JOB = "elevate-import-exporter"
API_KEY = "e2e-key-8d2f"
MESSAGE = "Import failed: attribute 'price' is not a number on line 17."
# Grafana's $__rate_interval is at least four scrape intervals; the scrapes here are 1 s apart.
RATE_INTERVAL = "10s"
# The dashboard's time range: longer than the whole test run.
RANGE = "1h"
SHORT_FOR = "1s"
WAIT = 30.0

SUCCEEDS, FAILS, STAYS = "1001", "1002", "1003"
# Panels that list only imports in some statuses: which of the scenario's imports each
# shows once the scripts have ended. For the others they must stay empty.
LISTED_BY = {FAILED_TABLE: {FAILS}, AGE_PANEL: {STAYS}}


def scripted_imports() -> list[ScriptedImport]:
    return [
        ScriptedImport(SUCCEEDS, (Step("IN_PROGRESS", queries=2), Step("SUCCESS"))),
        ScriptedImport(
            FAILS,
            (Step("WAITING", seconds=1.0), Step("FAILURE", message=MESSAGE)),
            type="PRODUCTS",
        ),
        ScriptedImport(STAYS, (Step("IN_PROGRESS"),), type="ADS"),
    ]


@dataclass
class Stack:
    sim: Simulator
    exporter_address: str
    prometheus_url: str
    logs: dict[str, Path]

    def log_tails(self) -> str:
        tails = []
        for name, path in self.logs.items():
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
            tails.append(f"--- last lines of the {name} log ({path}):\n" + "\n".join(lines))
        return "\n".join(tails)

    def wait(
        self,
        probe: Callable[[], T | None],
        what: str,
        explain: Callable[[], str] = str,
        timeout: float = WAIT,
    ) -> T:
        """wait_until, with ``explain()`` and the processes' logs in the failure message."""
        try:
            return wait_until(probe, timeout=timeout, interval=0.25, what=what)
        except pytest.fail.Exception:
            pytest.fail(
                f"timed out after {timeout}s waiting for {what}\n{explain()}\n{self.log_tails()}"
            )

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.prometheus_url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                body = json.load(answer)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{url}: {exc.code} {exc.read().decode()}") from exc
        assert body["status"] == "success", body
        return body["data"]

    def alerts(self, alertname: str, state: str = "firing") -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return [a for a in found if a["labels"]["alertname"] == alertname and a["state"] == state]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def rules_with_short_for(tmp: Path) -> Path:
    """The shipped rules with every `for` shortened; the expressions are left alone."""
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = SHORT_FOR
    path = tmp / "alerts.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = need_tool("prometheus")
    tmp = tmp_path_factory.mktemp("e2e")
    logs = {"exporter": tmp / "exporter.log", "prometheus": tmp / "prometheus.log"}
    exporter_port, prometheus_port = free_port(), free_port()
    exporter_address = f"127.0.0.1:{exporter_port}"
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules_with_short_for(tmp))],
        "scrape_configs": [
            {"job_name": JOB, "static_configs": [{"targets": [exporter_address]}]},
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))

    processes: list[subprocess.Popen[bytes]] = []
    with Simulator(scripted_imports(), api_key=API_KEY) as sim:
        try:
            # Only the settings given here: none of the caller's ELEVATE_* variables.
            env = {k: v for k, v in os.environ.items() if not k.startswith("ELEVATE_")}
            env |= {"ELEVATE_API_KEY": API_KEY}
            with logs["exporter"].open("wb") as log:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "elevate_import_exporter", "run"]
                        + ["--elevate.base-url", sim.url]
                        + [f"--elevate.import-id={i}" for i in (SUCCEEDS, FAILS, STAYS)]
                        + ["--web.listen-address", exporter_address],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        cwd=tmp,
                    )
                )
            with logs["prometheus"].open("wb") as log:
                processes.append(
                    subprocess.Popen(
                        [
                            prometheus,
                            f"--config.file={tmp / 'prometheus.yml'}",
                            f"--storage.tsdb.path={tmp / 'data'}",
                            f"--web.listen-address=127.0.0.1:{prometheus_port}",
                        ],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        cwd=tmp,
                    )
                )
            ready = Stack(sim, exporter_address, f"http://127.0.0.1:{prometheus_port}", logs)
            ready.wait(lambda: _answers(f"http://{exporter_address}/-/ready"), "exporter ready")
            ready.wait(lambda: _answers(f"{ready.prometheus_url}/-/ready"), "Prometheus ready")
            yield ready
        finally:
            for process in reversed(processes):
                stop_process(process)


# -- helpers over the dashboard -------------------------------------------------------


def grafana_regex_escape(value: str) -> str:
    """How Grafana writes one selected value into a regex matcher of a PromQL string."""
    escaped = value.replace("\\", "\\\\\\\\")
    for char in "$^*{}[]'+?.()|":
        escaped = escaped.replace(char, "\\\\" + char)
    return escaped


ALL_SELECTED = {"job": ".+", "instance": ".+", "type": ".*", "id": ".+"}


def query_values(chosen: Mapping[str, str]) -> dict[str, str]:
    return {
        "datasource": "prometheus",
        "__rate_interval": RATE_INTERVAL,
        "__range": RANGE,
        **chosen,
    }


def series_values(stack: Stack, selector: str, label: str) -> set[str]:
    """What Grafana's label_values(selector, label) offers."""
    series = stack.api("series", **{"match[]": selector})
    return {s[label] for s in series if s.get(label)}


def offers(stack: Stack, selector: str, label: str, expected: set[str]) -> bool:
    return series_values(stack, selector, label) == expected


def returns_data(stack: Stack, query: Query, values: Mapping[str, str]) -> bool:
    result = stack.api("query", query=substitute(query.expr, values))["result"]
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


def queries_without_data(stack: Stack, values: Mapping[str, str]) -> list[str]:
    dashboard = load_dashboard()
    queries = panel_queries(dashboard) + annotation_queries(dashboard)
    return [q.where for q in queries if not returns_data(stack, q, values)]


def queries_of_panels_not_listing(import_id: str) -> list[str]:
    """The queries that must find nothing when only ``import_id`` is selected."""
    return [
        q.where
        for title, listed in LISTED_BY.items()
        if import_id not in listed
        for q in panel_queries({"panels": [panel_titled(load_dashboard(), title)]})
    ]


# -- the tests -------------------------------------------------------------------------


def test_prometheus_scrapes_the_exporter_and_loads_every_shipped_rule_unchanged(
    stack: Stack,
) -> None:
    def target_up() -> bool:
        targets = stack.api("targets")["activeTargets"]
        return any(t["labels"]["job"] == JOB and t["health"] == "up" for t in targets)

    stack.wait(target_up, "the exporter's target to be up")
    loaded = {
        rule["name"]: rule for group in stack.api("rules")["groups"] for rule in group["rules"]
    }
    shipped = {
        rule["alert"]: rule
        for group in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
    }
    assert set(loaded) == set(shipped)
    for name, rule in loaded.items():
        # Prometheus shows the expression as it parsed it: compare what it reads.
        metrics = {sel.metric for sel in read_promql(rule["query"]).selectors}
        assert metrics == {sel.metric for sel in read_promql(shipped[name]["expr"]).selectors}
        assert rule["labels"] == shipped[name]["labels"], name
        assert rule["annotations"] == shipped[name]["annotations"], name
        assert rule["duration"] == (1 if "for" in shipped[name] else 0), name


def test_a_failed_import_fires_ElevateImportFailed_with_its_id_type_and_message(
    stack: Stack,
) -> None:
    firing = stack.wait(lambda: stack.alerts("ElevateImportFailed"), "ElevateImportFailed")
    (alert,) = firing
    assert alert["labels"]["id"] == FAILS
    assert alert["labels"]["type"] == "PRODUCTS"
    assert alert["labels"]["instance"] == stack.exporter_address
    assert alert["labels"]["severity"] == "critical"
    description = alert["annotations"]["description"]
    assert description == (
        f"Elevate import {FAILS} (type PRODUCTS) ended with status FAILURE. Message: {MESSAGE}"
    )
    # The import that succeeded and the one still running fire nothing.
    succeeded = f'elevate_import_status{{id="{SUCCEEDS}", status="SUCCESS"}} == 1'
    stack.wait(lambda: stack.api("query", query=succeeded)["result"], f"{SUCCEEDS} to succeed")
    quiet = [
        a["labels"]["alertname"]
        for a in stack.api("alerts")["alerts"]
        if a["labels"].get("id") in {SUCCEEDS, STAYS}
    ]
    assert quiet == []


def test_a_status_transition_moves_last_change_but_not_the_stuck_clock(stack: Stack) -> None:
    # ElevateImportStuck counts from first_seen because the exporter never moves it.
    moved = f'changes(elevate_import_last_status_change_timestamp_seconds{{id="{SUCCEEDS}"}}[5m])'
    stack.wait(
        lambda: [s for s in stack.api("query", query=moved)["result"] if s["value"][1] != "0"],
        f"the exporter to report {SUCCEEDS}'s move to SUCCESS",
    )
    kept = f'changes(elevate_import_first_seen_timestamp_seconds{{id="{SUCCEEDS}"}}[5m])'
    assert [s["value"][1] for s in stack.api("query", query=kept)["result"]] == ["0"]


def test_the_variable_queries_offer_the_exporter_and_its_imports(stack: Stack) -> None:
    # What each variable offers once the ones before it are set to the value on the right.
    steps = {
        "job": ({JOB}, JOB),
        "instance": ({stack.exporter_address}, stack.exporter_address),
        "type": ({"PRODUCTS", "ADS"}, "PRODUCTS"),
        "id": ({SUCCEEDS, FAILS}, FAILS),
    }
    chosen = dict(ALL_SELECTED)
    variables = query_variables(load_dashboard())
    assert [v["name"] for v in variables] == list(steps)
    for variable in variables:
        selector, label = variable_query(variable)
        name = variable["name"]
        offered, pick = steps[name]
        stack.wait(
            partial(offers, stack, substitute(selector, query_values(chosen)), label, offered),
            f"variable {name} to offer {sorted(offered)}",
        )
        chosen[name] = grafana_regex_escape(pick)


def test_every_dashboard_query_returns_data_with_All_selected(stack: Stack) -> None:
    # The annotation query needs a firing alert: the failed import's.
    stack.wait(lambda: stack.alerts("ElevateImportFailed"), "ElevateImportFailed")
    values = query_values(ALL_SELECTED)
    stack.wait(
        lambda: not queries_without_data(stack, values),
        "every dashboard query to return data",
        lambda: f"without data: {queries_without_data(stack, values)}",
    )


@pytest.mark.parametrize(
    "import_id",
    [FAILS, STAYS, SUCCEEDS],
)
def test_every_dashboard_query_returns_data_for_one_selected_import(
    stack: Stack, import_id: str
) -> None:
    stack.wait(lambda: stack.alerts("ElevateImportFailed"), "ElevateImportFailed")
    types = {FAILS: "PRODUCTS", STAYS: "ADS", SUCCEEDS: "PRODUCTS"}
    values = query_values(
        {
            "job": grafana_regex_escape(JOB),
            "instance": grafana_regex_escape(stack.exporter_address),
            "type": grafana_regex_escape(types[import_id]),
            "id": grafana_regex_escape(import_id),
        }
    )
    # Only the panels that do not list this import's status come back empty.
    empty = queries_of_panels_not_listing(import_id)
    stack.wait(
        lambda: queries_without_data(stack, values) == empty,
        f"every dashboard query but {empty} to return data for import {import_id}",
        lambda: f"without data: {queries_without_data(stack, values)}",
    )


def test_the_failed_imports_table_shows_the_failed_import_its_message_and_when_it_ended(
    stack: Stack,
) -> None:
    stack.wait(lambda: stack.alerts("ElevateImportFailed"), "ElevateImportFailed")
    last_exported, ended = (
        substitute(target["expr"], query_values(ALL_SELECTED))
        for target in panel_titled(load_dashboard(), FAILED_TABLE)["targets"]
    )
    (row,) = stack.api("query", query=last_exported)["result"]
    assert row["metric"] == {
        "job": JOB,
        "instance": stack.exporter_address,
        "id": FAILS,
        "type": "PRODUCTS",
        "status": "FAILURE",
        "message": MESSAGE,
    }
    # Still exported: its last scrape is one of the last seconds (Prometheus' clock, in ms).
    assert float(row["value"][1]) / 1000 >= row["value"][0] - 10
    (row_ended,) = stack.api("query", query=ended)["result"]
    assert row_ended["metric"] == row["metric"]
    since = f'elevate_import_last_status_change_timestamp_seconds{{id="{FAILS}"}}'
    (change,) = stack.api("query", query=since)["result"]
    assert float(row_ended["value"][1]) == 1000 * float(change["value"][1])


def test_the_dashboard_and_rules_name_only_metrics_and_labels_a_real_scrape_has(
    stack: Stack,
) -> None:
    exposed: dict[str, set[str]] = {}
    for (name, labels), _ in scrape(f"http://{stack.exporter_address}").samples.items():
        exposed.setdefault(name, set()).update(label for label, _ in labels)
    dashboard = load_dashboard()
    exprs = [q.expr for q in panel_queries(dashboard) + annotation_queries(dashboard)]
    exprs += [variable_query(v)[0] for v in query_variables(dashboard)]
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    exprs += [rule["expr"] for group in rules for rule in group["rules"]]
    for expr in exprs:
        for selector in read_promql(expr).selectors:
            if selector.metric in PROMETHEUS_LABELS:
                continue
            assert selector.metric in exposed, f"{selector.metric} is not in a real scrape"
            assert set(selector.matchers) - TARGET_LABELS <= exposed[selector.metric], (
                selector.metric
            )


def test_a_rejected_key_fires_ElevateApiKeyRejected(stack: Stack) -> None:
    stack.wait(
        lambda: stack.api("query", query=f'elevate_import_up{{job="{JOB}"}} == 1')["result"],
        "a good poll before the key changes",
    )
    assert stack.alerts("ElevateApiKeyRejected") == []
    stack.sim.api_key = "rotated"
    firing = stack.wait(lambda: stack.alerts("ElevateApiKeyRejected"), "ElevateApiKeyRejected")
    (alert,) = firing
    assert alert["labels"]["instance"] == stack.exporter_address
    assert alert["labels"]["reason"] == "forbidden"
    assert alert["labels"]["severity"] == "critical"
    assert stack.exporter_address in alert["annotations"]["description"]
