"""The shipped alert rules, their promtool unit tests, the runbook and the examples.

promtool and amtool check the files; the unit tests in prometheus/alerts_test.yml and
prometheus/slo_test.yml prove each alert's timing and each recording rule's value; a
real Alertmanager proves the example's inhibition and its routes by team.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.alerting import post_alerts, running_alertmanager
from tests.support import need_tool, wait_until
from tests.test_dashboard import CONTRACT_LABELS, PROMETHEUS_LABELS, TARGET_LABELS, read_promql

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "prometheus" / "alerts.yml"
RULE_TESTS = REPO / "prometheus" / "alerts_test.yml"
SLO_TESTS = REPO / "prometheus" / "slo_test.yml"
UNIT_TESTS = (RULE_TESTS, SLO_TESTS)
PROMETHEUS_CONFIG = REPO / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONFIG = REPO / "prometheus" / "alertmanager.yml"
RUNBOOK = REPO / "docs" / "runbook.md"
RUNBOOK_URL = (
    "https://github.com/elevate-import-exporter/elevate-import-exporter/blob/main/docs/runbook.md"
)
JOB = "elevate-import-exporter"

ALERTS = (
    "ElevateImportFailed",
    "ElevateImportAborted",
    "ElevateImportStuck",
    "ElevateImportNotFound",
    "ElevateImportPollFailing",
    "ElevateApiKeyRejected",
    "ElevateApiServerErrors",
    "ElevateApiUnreachable",
    "ElevateExporterDown",
    "ElevateImportErrorBudgetFastBurn",
    "ElevateImportErrorBudgetSlowBurn",
    "ElevateImportFeedQuiet",
    "ElevateImportProxyRegistrationsLost",
    "ElevateImportProxyDeliveryStalled",
)
IMPORT_ALERTS = ALERTS[:4]
# The alerts about one import id: they carry its owner labels.
PER_IMPORT_ALERTS = ALERTS[:5]
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
RECORDS = tuple(
    f"elevate_import:{kind}_ratio:rate{window}"
    for window in WINDOWS
    for kind in ("error", "success")
)
OWNER_LABELS = frozenset({"feed_name", "team"})
# The metrics of issue 22 that the rules read, with the labels the exporter gives them;
# the recorded series keep cluster, job and type.
NEW_LABELS: dict[str, frozenset[str]] = {
    "elevate_import_finished_total": frozenset({"type", "status"}) | OWNER_LABELS,
    "elevate_import_last_final_timestamp_seconds": frozenset({"type", "status"}) | OWNER_LABELS,
    "elevate_import_labels": frozenset({"id"}) | OWNER_LABELS,
} | {record: frozenset({"cluster", "job", "type"}) for record in RECORDS}
# The import proxy's registrations (the standalone proxy's own metrics, and its process
# start, which the stall alert waits out after a restart).
PROXY_LABELS: dict[str, frozenset[str]] = {
    "elevate_import_proxy_registration_failures_total": frozenset(),
    "elevate_import_proxy_registrations_dropped_total": frozenset({"reason"}),
    "elevate_import_proxy_registrations_waiting": frozenset(),
    "elevate_import_proxy_last_delivery_timestamp_seconds": frozenset(),
    "process_start_time_seconds": frozenset(),
}
PROXY_ALERTS = ("ElevateImportProxyRegistrationsLost", "ElevateImportProxyDeliveryStalled")


def load_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def load_alerts() -> list[dict[str, Any]]:
    return [rule for rule in load_rules() if "alert" in rule]


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a markdown heading."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


@pytest.fixture(scope="module")
def rules() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in load_alerts()}


# -- the real tools ---------------------------------------------------------------------


def test_promtool_accepts_the_rules_with_every_lint_fatal() -> None:
    result = run(need_tool("promtool"), "check", "rules", "--lint=all", "--lint-fatal", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS) + len(RECORDS)} rules found" in result.stdout


@pytest.mark.parametrize("tests", UNIT_TESTS, ids=lambda path: path.name)
def test_the_promtool_unit_tests_of_every_alert_and_recording_rule_pass(tests: Path) -> None:
    result = run(need_tool("promtool"), "test", "rules", str(tests))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_accepts_the_example_prometheus_config() -> None:
    result = run(need_tool("promtool"), "check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_amtool_accepts_the_example_alertmanager_config() -> None:
    result = run(need_tool("amtool"), "check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 inhibit rules" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=ElevateImportFailed", "team=catalog", "id=1"], "team-catalog"),
        (["alertname=ElevateImportStuck", "team=merchandising", "id=2"], "team-merchandising"),
        (["alertname=ElevateImportFeedQuiet", "team=catalog", "type=ADS"], "team-catalog"),
        # Past the exporter's cap of distinct values, and without any team.
        (["alertname=ElevateImportFailed", "team=other", "id=3"], "team-search"),
        (["alertname=ElevateImportFailed", "id=4"], "team-search"),
        (["alertname=ElevateImportErrorBudgetFastBurn", "type=PRODUCTS"], "team-search"),
        # The proxy's alerts name no import and no team: the default receiver takes them.
        (["alertname=ElevateImportProxyRegistrationsLost", "reason=queue_full"], "team-search"),
        (["alertname=ElevateImportProxyDeliveryStalled", "instance=proxy:1"], "team-search"),
    ],
)
def test_amtool_routes_an_alert_to_the_receiver_of_its_team(
    labels: list[str], receiver: str
) -> None:
    config = f"--config.file={ALERTMANAGER_CONFIG}"
    result = run(need_tool("amtool"), "config", "routes", "test", config, *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == [receiver]


# -- the rules as data ------------------------------------------------------------------


def test_the_rules_are_exactly_the_alerts_and_recording_rules_of_the_issues(
    rules: dict[str, dict[str, Any]],
) -> None:
    assert sorted(rules) == sorted(ALERTS)
    records = [rule["record"] for rule in load_rules() if "record" in rule]
    assert sorted(records) == sorted(RECORDS)
    assert len(load_rules()) == len(ALERTS) + len(RECORDS), "no duplicates"


def test_every_join_and_aggregation_keeps_the_cluster_target_label() -> None:
    for rule in load_rules():
        clauses = re.findall(r"\b(?:by|on) \(([^)]*)\)", rule["expr"])
        for clause in clauses:
            assert "cluster" in clause.replace(" ", "").split(","), (rule, clause)


def test_the_per_import_alerts_join_the_owner_labels_and_keep_a_row_without_them(
    rules: dict[str, dict[str, Any]],
) -> None:
    for name, rule in rules.items():
        expr = rule["expr"]
        if name not in PER_IMPORT_ALERTS:
            assert "elevate_import_labels" not in expr, name
            continue
        assert "group_left (feed_name, team) # OWNER LABELS" in expr, name
        assert "topk by (cluster, job, instance, id) (1, elevate_import_labels)" in expr, name
        # The fallback row comes from the alert's own metric, which every id it names has.
        own = read_promql(expr).selectors[0].metric
        assert "or on (cluster, job, instance, id)\n" in expr, name
        assert f"group by (cluster, job, instance, id) ({own})" in expr, name


def test_every_alert_has_severity_a_static_summary_a_description_and_a_runbook(
    rules: dict[str, dict[str, Any]],
) -> None:
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, name
        # A summary with template parts would split the alert's notification group.
        assert "{{" not in annotations["summary"], name
        assert "{{" in annotations["description"], name
        assert annotations["runbook_url"] == f"{RUNBOOK_URL}#{name.lower()}"


def test_every_runbook_url_points_at_a_runbook_section_that_explains_the_alert(
    rules: dict[str, dict[str, Any]],
) -> None:
    text = RUNBOOK.read_text(encoding="utf-8")
    sections = {
        github_anchor(m.group(1)): m.group(2)
        for m in re.finditer(r"^## ([^\n]+)\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    }
    for name, rule in rules.items():
        anchor = rule["annotations"]["runbook_url"].rsplit("#", 1)[1]
        assert anchor in sections, f"docs/runbook.md has no section for #{anchor}"
        for part in ("**What it means.**", "**First checks.**", "**How to clear it.**"):
            assert part in sections[anchor], f"{name}: runbook section lacks {part}"


def test_import_alerts_describe_the_import_by_id_and_type(
    rules: dict[str, dict[str, Any]],
) -> None:
    for name in IMPORT_ALERTS:
        description = rules[name]["annotations"]["description"]
        assert "$labels.id" in description, name
    for name in ("ElevateImportFailed", "ElevateImportAborted", "ElevateImportStuck"):
        assert "$labels.type" in rules[name]["annotations"]["description"], name
    for name in ("ElevateImportFailed", "ElevateImportAborted"):
        assert "$labels.message" in rules[name]["annotations"]["description"], name
        # The message comes from elevate_import_info, joined on the id.
        expr = rules[name]["expr"]
        assert "group_left (message)" in expr
        assert "elevate_import_info" in expr


def test_rules_name_only_metrics_and_labels_of_the_contract(
    rules: dict[str, dict[str, Any]],
) -> None:
    for name, rule in rules.items():
        reading = read_promql(rule["expr"])
        for selector in reading.selectors:
            if selector.metric in PROMETHEUS_LABELS:
                known = PROMETHEUS_LABELS[selector.metric] or frozenset()
            elif selector.metric in NEW_LABELS:
                known = NEW_LABELS[selector.metric] | TARGET_LABELS | {"cluster"}
            elif selector.metric in PROXY_LABELS:
                assert name in PROXY_ALERTS, (name, selector.metric)
                known = PROXY_LABELS[selector.metric] | TARGET_LABELS
            else:
                assert selector.metric in CONTRACT_LABELS, (name, selector.metric)
                known = CONTRACT_LABELS[selector.metric] | TARGET_LABELS
            assert set(selector.matchers) <= known, (name, selector.metric)
            # A counter is only meaningful as a rate or an increase.
            if selector.metric.endswith("_total"):
                assert selector.function in {"rate", "increase"}, name


def test_the_stuck_clock_does_not_restart_on_status_transitions(
    rules: dict[str, dict[str, Any]],
) -> None:
    expr = rules["ElevateImportStuck"]["expr"]
    metrics = {s.metric for s in read_promql(expr).selectors}
    assert "elevate_import_first_seen_timestamp_seconds" in metrics
    assert "elevate_import_last_status_change_timestamp_seconds" not in metrics
    assert 'status=~"WAITING|BLOCKED|IN_PROGRESS"' in expr


def test_ElevateExporterDown_watches_the_job_of_the_example_scrape_config(
    rules: dict[str, dict[str, Any]],
) -> None:
    reading = read_promql(rules["ElevateExporterDown"]["expr"])
    assert {s.metric for s in reading.selectors} == {"up"}
    assert {s.matchers["job"] for s in reading.selectors} == {("=", JOB)}
    assert "absent(" in rules["ElevateExporterDown"]["expr"]
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    (job,) = config["scrape_configs"]
    assert job["job_name"] == JOB
    assert config["rule_files"] == ["alerts.yml"]


def _seconds(duration: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smh])", duration))


def test_the_example_scrape_timeout_leaves_the_exporter_time_to_answer() -> None:
    (job,) = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))["scrape_configs"]
    # The exporter stops polling half a second before the timeout it is sent.
    assert 1 < _seconds(job["scrape_timeout"]) < _seconds(job["scrape_interval"])


def test_a_single_403_cannot_last_as_long_as_ElevateApiKeyRejected_waits(
    rules: dict[str, dict[str, Any]],
) -> None:
    rule = rules["ElevateApiKeyRejected"]
    (selector,) = read_promql(rule["expr"]).selectors
    assert selector.function == "increase"
    assert selector.range is not None
    assert _seconds(rule["for"]) > _seconds(selector.range)


def test_every_threshold_is_listed_in_the_header_of_the_rules_file(
    rules: dict[str, dict[str, Any]],
) -> None:
    text = RULES.read_text(encoding="utf-8")
    header = text[: text.index("groups:")]
    for name, rule in rules.items():
        if "for" in rule:
            # The header line of the alert, or the line right after it, names the value.
            section = header[header.index(f"#   {name}") :].split("\n#   Elevate")[0]
            assert f"for: {rule['for']}" in section, name
    stuck = re.search(r"> (\d+)\) # THRESHOLD", rules["ElevateImportStuck"]["expr"])
    assert stuck
    assert stuck.group(1) in header
    share = re.search(r"> ([\d.]+) # THRESHOLD", rules["ElevateApiServerErrors"]["expr"])
    assert share
    assert share.group(1) in header
    # The proxy alerts' windows: each named in the header, with every line that holds one.
    lost = rules["ElevateImportProxyRegistrationsLost"]["expr"]
    assert re.findall(r"\[(\w+)\]\) > 0 # THRESHOLD", lost) == ["15m", "15m"]
    stalled = rules["ElevateImportProxyDeliveryStalled"]["expr"]
    assert re.findall(r"\[(\w+)\]\) > 0 # THRESHOLD", stalled) == ["15m"]
    assert re.findall(r"_seconds [<>] (\d+) # THRESHOLD", stalled) == ["900", "900"]
    for name, value in (
        ("ElevateImportProxyRegistrationsLost", "15m"),
        ("ElevateImportProxyDeliveryStalled", "15m (900 s)"),
    ):
        assert value in header[header.index(f"#   {name}") :].split("\n#   Elevate")[0], name
    # Every line marked THRESHOLD is in a rule the header lists.
    assert text.count("# THRESHOLD") == sum("for" in r for r in rules.values()) + 2 + 2 + 3
    # The generated thresholds are listed with the generator's options.
    for option in ("--quiet-after 26h", "--slo-objective 0.99", "--slo-min-errors 2"):
        assert option in header


def test_every_alert_has_a_unit_test_that_fires_and_one_that_stays_quiet() -> None:
    tests = [
        case
        for path in UNIT_TESTS
        for case in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]
    ]
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
            for alert in check.get("exp_alerts") or []:
                # Firing cases check the rendered annotations, not just the labels.
                assert set(alert["exp_annotations"]) == {"summary", "description", "runbook_url"}
                assert "{{" not in alert["exp_annotations"]["description"]
    assert fired == set(ALERTS)
    assert quiet == set(ALERTS)


def _names_in(expr: str) -> set[str]:
    """The recorded series an expression of a unit test selects, by name or by regex."""
    named = {record for record in RECORDS if re.search(re.escape(record) + r"(?![\w:])", expr)}
    for pattern in re.findall(r'__name__=~"([^"]+)"', expr):
        named |= {record for record in RECORDS if re.fullmatch(pattern, record)}
    return named


def test_every_recording_rule_has_a_unit_test_of_its_value_and_one_where_it_records_nothing() -> (
    None
):
    checks = [
        check
        for case in yaml.safe_load(SLO_TESTS.read_text(encoding="utf-8"))["tests"]
        for check in case.get("promql_expr_test", [])
    ]
    valued = set().union(*(_names_in(c["expr"]) for c in checks if c["exp_samples"]))
    empty = set().union(*(_names_in(c["expr"]) for c in checks if not c["exp_samples"]))
    assert valued == set(RECORDS)
    assert empty == set(RECORDS)


# -- the Alertmanager inhibition, in a real Alertmanager -----------------------------------


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    # Same routes and inhibition; a receiver without integrations, so nothing is sent.
    config["receivers"] = [{"name": r["name"]} for r in config["receivers"]]
    with running_alertmanager(config, tmp_path_factory.mktemp("alertmanager")) as url:
        yield url


def _inhibited(url: str, alertname: str, **labels: str) -> bool | None:
    """Whether Alertmanager holds the alert back; None while it does not know it yet."""
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=5) as answer:
        alerts = json.load(answer)
    for alert in alerts:
        wanted = {"alertname": alertname, **labels}
        if all(alert["labels"].get(k) == v for k, v in wanted.items()):
            return bool(alert["status"]["inhibitedBy"])
    return None


def _settles_to(url: str, expected: bool, alertname: str, **labels: str) -> None:
    # Inhibition follows the alerts asynchronously: wait for the expected verdict.
    wait_until(
        lambda: _inhibited(url, alertname, **labels) is expected,
        timeout=10,
        what=f"{alertname} {labels} inhibited={expected}",
    )


def test_ElevateApiUnreachable_holds_back_the_stale_import_alerts_of_its_exporter_only(
    alertmanager: str,
) -> None:
    a = {"job": JOB, "instance": "a:10025"}
    post_alerts(
        alertmanager,
        [
            {"alertname": "ElevateApiUnreachable", **a},
            {"alertname": "ElevateImportStuck", **a, "id": "2"},
            {"alertname": "ElevateImportNotFound", **a, "id": "7"},
            {"alertname": "ElevateImportPollFailing", **a, "id": "8"},
            {"alertname": "ElevateImportStuck", "job": JOB, "instance": "b:10025", "id": "3"},
        ],
    )
    _settles_to(alertmanager, True, "ElevateImportStuck", instance="a:10025", id="2")
    _settles_to(alertmanager, True, "ElevateImportNotFound", instance="a:10025", id="7")
    _settles_to(alertmanager, True, "ElevateImportPollFailing", instance="a:10025", id="8")
    _settles_to(alertmanager, False, "ElevateImportStuck", instance="b:10025", id="3")
    _settles_to(alertmanager, False, "ElevateApiUnreachable", instance="a:10025")


@pytest.mark.parametrize("source", ["ElevateApiUnreachable", "ElevateExporterDown"])
def test_no_outage_holds_back_a_failed_or_aborted_import(alertmanager: str, source: str) -> None:
    # Final statuses cannot go stale: a failure must page even while the API is down.
    where = {"job": f"elevate-{source}", "instance": "f:1"}
    post_alerts(
        alertmanager,
        [
            {"alertname": source, **where},
            {"alertname": "ElevateImportFailed", **where, "id": "11"},
            {"alertname": "ElevateImportAborted", **where, "id": "12"},
            {"alertname": "ElevateImportStuck", **where, "id": "13"},
        ],
    )
    # The Stuck alert's verdict shows that the inhibition has been applied by now.
    _settles_to(alertmanager, True, "ElevateImportStuck", id="13", **where)
    _settles_to(alertmanager, False, "ElevateImportFailed", id="11", **where)
    _settles_to(alertmanager, False, "ElevateImportAborted", id="12", **where)


def test_an_absent_exporter_target_holds_back_the_import_alerts_of_its_job(
    alertmanager: str,
) -> None:
    post_alerts(
        alertmanager,
        [
            {"alertname": "ElevateExporterDown", "job": "elevate-c"},
            {
                "alertname": "ElevateImportNotFound",
                "job": "elevate-c",
                "instance": "c:1",
                "id": "4",
            },
            {"alertname": "ElevateImportAborted", "job": "elevate-d", "instance": "d:1", "id": "5"},
        ],
    )
    _settles_to(alertmanager, True, "ElevateImportNotFound", job="elevate-c", id="4")
    _settles_to(alertmanager, False, "ElevateImportAborted", job="elevate-d", id="5")


def test_a_rejected_key_holds_back_ElevateApiUnreachable(alertmanager: str) -> None:
    post_alerts(
        alertmanager,
        [
            {"alertname": "ElevateApiKeyRejected", "job": "elevate-e", "instance": "e:1"},
            {"alertname": "ElevateApiUnreachable", "job": "elevate-e", "instance": "e:1"},
            {"alertname": "ElevateImportStuck", "job": "elevate-e", "instance": "e:1", "id": "6"},
        ],
    )
    _settles_to(alertmanager, True, "ElevateApiUnreachable", job="elevate-e")
    # The held-back ElevateApiUnreachable still holds back the stale import alerts.
    _settles_to(alertmanager, True, "ElevateImportStuck", job="elevate-e", id="6")
    _settles_to(alertmanager, False, "ElevateApiKeyRejected", job="elevate-e")
