"""The dashboard and the alert rules against a real Prometheus scraping the real exporter.

The simulated Elevate API (in process) serves three scripted imports: one
succeeds, one fails with a message, one stays in progress; a fourth, of a feed
pushed through the exporter's import proxy, waits and then succeeds. The exporter
runs as its own process (the proxy inside it, the feed name an allowlisted metric
label), polls the simulator, and a real Prometheus (Debian's 2.42) scrapes it every
second with the shipped rules loaded, under a `cluster` target label. Only the rules'
`for` durations are shortened, so the alerts fire within seconds; their expressions
are the shipped ones. Everything is checked through Prometheus' HTTP API.

The tests share one stack and run in file order; the last one makes the
simulator reject the key.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from prometheus_client import CollectorRegistry

from elevate_import_exporter.proxy.delivery import Delivery, DeliveryCollector
from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from tests.support import (
    answers_200,
    free_port,
    need_tool,
    prometheus_api,
    scrape,
    stop_process,
    wait_until,
)
from tests.test_dashboard import (
    AGE_PANEL,
    BUDGET,
    DURATIONS,
    FAILED_TABLE,
    FINISHED_PER_DAY,
    LAST_SUCCESS,
    OBJECTIVE,
    PROMETHEUS_LABELS,
    QUEUE_TIMES,
    SUCCESS_RATIO,
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
# The imports end within a few poll rounds (--elevate.min-poll-interval apart).
WAIT = 60.0
# The target label Prometheus puts on the exporter's series, as for one of several clusters.
CLUSTER = "e2e-cluster"
# The feed pushed through the import proxy: its name is an allowlisted metric label.
FEED_NAME = "nightly-ads"
FEED = b"<?xml version='1.0'?><operations>" + b"<ad/>" * 200 + b"</operations>"
# Waits for a poll, then succeeds: published at 0 before it ends, so increase() sees it end.
FEED_STEPS = (Step("WAITING", queries=1), Step("SUCCESS"))

SUCCEEDS, FAILS, STAYS = "1001", "1002", "1003"
# Panels that list only imports in some statuses: which of the scenario's imports each
# shows once the scripts have ended. For the others they must stay empty.
LISTED_BY = {FAILED_TABLE: {FAILS}, AGE_PANEL: {STAYS}}


def scripted_imports() -> list[ScriptedImport]:
    return [
        ScriptedImport(SUCCEEDS, (Step("IN_PROGRESS", queries=2), Step("SUCCESS"))),
        ScriptedImport(
            FAILS,
            # Seen waiting by one poll: its queue time and duration can be told (an import
            # final at its first answer has neither).
            (Step("WAITING", queries=1), Step("FAILURE", message=MESSAGE)),
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
    proxy_port: int = 0
    proxied: str = ""  # the id of the import pushed through the proxy

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
        return prometheus_api(self.prometheus_url, path, **params)

    def values(self, query: str) -> list[tuple[dict[str, str], float]]:
        """An instant query's samples: labels and value."""
        result = self.api("query", query=query)["result"]
        return [(s["metric"], float(s["value"][1])) for s in result]

    def alerts(self, alertname: str, state: str = "firing") -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return [a for a in found if a["labels"]["alertname"] == alertname and a["state"] == state]


def push_feed(port: int, api_key: str) -> str:
    """A feed job's upload through the exporter's import proxy; the import id of its 202."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Api-Key": api_key, "X-Feed-Name": FEED_NAME, "Content-Type": "text/xml"}
        conn.request("POST", "/api/v2/import/ads", body=FEED, headers=headers)
        answer = conn.getresponse()
        body = answer.read()
    finally:
        conn.close()
    assert answer.status == 202, (answer.status, body)
    import_id: str = json.loads(body)["id"]
    return import_id


def rule_name(rule: Mapping[str, Any]) -> str:
    name: str = rule["alert"] if "alert" in rule else rule["record"]
    return name


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
    exporter_port, prometheus_port, proxy_port = free_port(), free_port(), free_port()
    exporter_address = f"127.0.0.1:{exporter_port}"
    target = {"targets": [exporter_address], "labels": {"cluster": CLUSTER}}
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules_with_short_for(tmp))],
        "scrape_configs": [{"job_name": JOB, "static_configs": [target]}],
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
                        + ["--web.listen-address", exporter_address]
                        + ["--proxy.listen-address", f"127.0.0.1:{proxy_port}"]
                        + ["--imports.metric-labels", "feed_name"],
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
            url = f"http://127.0.0.1:{prometheus_port}"
            ready = Stack(sim, exporter_address, url, logs, proxy_port)
            ready.wait(lambda: answers_200(f"http://{exporter_address}/-/ready"), "exporter ready")
            ready.wait(lambda: answers_200(f"{ready.prometheus_url}/-/ready"), "Prometheus ready")
            sim.import_desk.steps = FEED_STEPS
            ready.proxied = push_feed(proxy_port, API_KEY)
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


ALL_SELECTED = {"cluster": ".*", "job": ".+", "instance": ".+", "type": ".*", "id": ".+"}


def query_values(chosen: Mapping[str, str]) -> dict[str, str]:
    # The panels over weeks step a day through 30 days; here the hour covers the whole run.
    return {
        "datasource": "prometheus",
        "objective": OBJECTIVE,
        "__rate_interval": RATE_INTERVAL,
        "__interval": RANGE,
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
        rule_name(rule): rule
        for group in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
    }
    assert set(loaded) == set(shipped)
    for name, rule in loaded.items():
        # Prometheus shows the expression as it parsed it: compare what it reads.
        metrics = {sel.metric for sel in read_promql(rule["query"]).selectors}
        assert metrics == {sel.metric for sel in read_promql(shipped[name]["expr"]).selectors}
        assert rule["health"] == "ok" or rule["health"] == "unknown", (name, rule)
        if rule["type"] == "recording":
            continue
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
        "cluster": ({CLUSTER}, CLUSTER),
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
            "cluster": grafana_regex_escape(CLUSTER),
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
        "cluster": CLUSTER,
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
    dashboard = load_dashboard()
    exprs = [q.expr for q in panel_queries(dashboard) + annotation_queries(dashboard)]
    exprs += [variable_query(v)[0] for v in query_variables(dashboard)]
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    exprs += [rule["expr"] for group in rules for rule in group["rules"]]
    selectors = [
        selector
        for expr in exprs
        for selector in read_promql(expr).selectors
        # Series of Prometheus' own, of the recording rules (level:metric:operations), and
        # of the standalone proxy's delivery (its own process, tested apart).
        if selector.metric not in PROMETHEUS_LABELS
        and ":" not in selector.metric
        and selector.metric not in standalone_proxy_metrics()
    ]

    def unknown() -> list[str]:
        exposed: dict[str, set[str]] = {}
        for (name, labels), _ in scrape(f"http://{stack.exporter_address}").samples.items():
            exposed.setdefault(name, set()).update(label for label, _ in labels)
        return [
            f"{s.metric} {sorted(set(s.matchers) - TARGET_LABELS)}"
            for s in selectors
            if s.metric not in exposed or not set(s.matchers) - TARGET_LABELS <= exposed[s.metric]
        ]

    # Some families appear only once an import has ended (the last-final gauge): wait for
    # the simulator's imports, then every selector must find its metric and labels.
    last: list[str] = []

    def all_found() -> bool:
        last[:] = unknown()
        return not last

    stack.wait(all_found, "every selector in a scrape", explain=lambda: f"missing: {last}")


def standalone_proxy_metrics() -> set[str]:
    """The sample names of the standalone proxy's delivery, which the exporter never has."""
    registry = CollectorRegistry()
    registry.register(DeliveryCollector(Delivery(lambda batch: None)))
    return {sample.name for family in registry.collect() for sample in family.samples}


def test_a_cluster_that_is_not_scraped_empties_every_dashboard_query(stack: Stack) -> None:
    stack.wait(lambda: stack.alerts("ElevateImportFailed"), "ElevateImportFailed")
    stack.wait(
        lambda: not queries_without_data(stack, query_values(ALL_SELECTED)),
        "every dashboard query to return data",
    )
    elsewhere = query_values(ALL_SELECTED | {"cluster": grafana_regex_escape("elsewhere")})
    dashboard = load_dashboard()
    queries = panel_queries(dashboard) + annotation_queries(dashboard)
    assert [q.where for q in queries if returns_data(stack, q, elsewhere)] == []


# -- the panels over weeks and the proxy's, on the imports the simulator drove ---------------


def panel_exprs(title: str, **chosen: str) -> list[str]:
    values = query_values(ALL_SELECTED | chosen)
    return [substitute(t["expr"], values) for t in panel_titled(load_dashboard(), title)["targets"]]


def by_labels(samples: list[tuple[dict[str, str], float]], *names: str) -> dict[Any, float]:
    """Samples keyed by the values of ``names`` ("" when absent), one name: the value."""
    keyed: dict[Any, float] = {}
    for labels, value in samples:
        key = tuple(labels.get(name, "") for name in names)
        keyed[key[0] if len(names) == 1 else key] = value
    return keyed


def finished_per_day(stack: Stack) -> dict[Any, float]:
    (expr,) = panel_exprs(FINISHED_PER_DAY)
    return by_labels(stack.values(expr), "status")


def test_the_panels_over_weeks_count_each_import_the_simulator_ended(stack: Stack) -> None:
    # 1001 and the proxied feed succeeded, 1002 failed; 1003 is still in progress.
    expected = {"SUCCESS": 2.0, "FAILURE": 1.0, "ABORTED": 0.0, "NOT_FOUND": 0.0}
    stack.wait(
        lambda: finished_per_day(stack) == expected,
        f"the finished-per-day panel to show {expected}",
        lambda: f"it shows {finished_per_day(stack)}",
    )
    (ratio,) = panel_exprs(SUCCESS_RATIO)
    ratios = {
        key: value
        for key, value in by_labels(stack.values(ratio), "cluster", "type", "feed_name").items()
        if math.isfinite(value)  # 1003's type and feed: nothing finished, 0 / 0
    }
    assert set(ratios) == {(CLUSTER, "PRODUCTS", ""), (CLUSTER, "ADS", FEED_NAME)}
    assert ratios[(CLUSTER, "ADS", FEED_NAME)] == 1.0
    assert abs(ratios[(CLUSTER, "PRODUCTS", "")] - 0.5) < 0.01
    # One of three failed: a third where 1 % is allowed spends the budget 33 times over.
    (budget,) = panel_exprs(BUDGET)
    ((labels, left),) = stack.values(budget)
    assert labels == {"cluster": CLUSTER}
    assert abs(left - (1 - (1 / 3) / (1 - float(OBJECTIVE)))) < 1.0, left


def test_the_duration_and_queue_panels_give_p50_at_most_p95_for_both_types(
    stack: Stack,
) -> None:
    stack.wait(lambda: finished_per_day(stack).get("SUCCESS") == 2.0, "two successes")
    for title in (DURATIONS, QUEUE_TIMES):
        p50, p95 = (by_labels(stack.values(e), "type") for e in panel_exprs(title))
        assert set(p50) == set(p95) == {"PRODUCTS", "ADS"}, (title, p50)
        for kind in ("PRODUCTS", "ADS"):
            # Imports of seconds: the lowest buckets (10 s, 1 s and 5 s) and a few above.
            assert 0 < p50[kind] <= p95[kind] <= 120, (title, kind, p50, p95)


def test_the_last_success_table_lists_each_type_and_feed_that_succeeded(stack: Stack) -> None:
    stack.wait(lambda: finished_per_day(stack).get("SUCCESS") == 2.0, "two successes")
    when, age = panel_exprs(LAST_SUCCESS)
    now = float(stack.api("query", query="time()")["result"][0])
    last = by_labels(stack.values(when), "type", "feed_name")
    ages = by_labels(stack.values(age), "type", "feed_name")
    assert set(last) == set(ages) == {("PRODUCTS", ""), ("ADS", FEED_NAME)}
    for key, millis in last.items():
        assert now - WAIT * 5 < millis / 1000 <= now, key
        assert 0 <= ages[key] < WAIT * 5, key


def test_the_proxy_panels_show_a_feed_pushed_through_the_proxy(stack: Stack) -> None:
    # The proxy's counters by type, outcome and code are born at 1 by the first upload, which
    # rate() cannot tell from an old count: the panels show the uploads after it.
    whole_run = {"__rate_interval": RANGE}
    (uploads,) = panel_exprs("Proxy uploads per second by outcome", **whole_run)
    (codes,) = panel_exprs("Proxy requests per second by code", **whole_run)
    (sent,) = panel_exprs("Proxy bytes per second", **whole_run)
    errors, unregistered = panel_exprs("Proxy errors per second", **whole_run)
    before = by_labels(stack.values(sent), "direction")["upload"]
    push_feed(stack.proxy_port, API_KEY)

    def shown() -> bool:
        accepted = by_labels(stack.values(uploads), "type", "outcome").get(("ADS", "accepted"))
        answered = by_labels(stack.values(codes), "code").get("202")
        upload = by_labels(stack.values(sent), "direction")["upload"]
        # The second feed's bytes, as a rate over the hour.
        return bool(accepted and answered and (upload - before) * 3600 >= len(FEED) * 0.9)

    stack.wait(shown, "the proxy panels to show the second feed")
    assert set(by_labels(stack.values(errors), "reason").values()) == {0.0}
    assert [value for _, value in stack.values(unregistered)] == [0.0]


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
