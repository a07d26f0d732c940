"""deploy/generate.py's rule options: --slo-objective, --slo-min-errors, --quiet-after and
--metric-labels change the made part of alerts.yml everywhere, and promtool agrees.

Every run writes into tmp_path (--output-dir); the shipped files are what the defaults make
(tests/test_kubernetes.py checks that with --check).
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from elevate_import_exporter.core import outcomes
from tests.support import need_tool

REPO = Path(__file__).resolve().parent.parent
GENERATOR = REPO / "deploy" / "generate.py"
RULE_FILE = "prometheusrule.yaml"
PER_IMPORT_ALERTS = (
    "ElevateImportFailed",
    "ElevateImportAborted",
    "ElevateImportStuck",
    "ElevateImportNotFound",
    "ElevateImportPollFailing",
)
BURN_ALERTS = ("ElevateImportErrorBudgetFastBurn", "ElevateImportErrorBudgetSlowBurn")
JOB = "elevate-import-exporter"


def generate(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GENERATOR), "--output-dir", str(out), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def made(out: Path, *args: str) -> Path:
    result = generate(out, *args)
    assert result.returncode == 0, result.stderr
    return out / "alerts.yml"


def alerts_of(path: Path) -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need_tool("promtool"), *args], capture_output=True, text=True, check=False, timeout=120
    )


def check_rules(path: Path) -> None:
    result = promtool("check", "rules", "--lint=all", "--lint-fatal", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def unit_test(tmp_path: Path, rules: Path, tests: list[dict[str, Any]]) -> str:
    """promtool's verdict on ``tests`` against ``rules``: "" when they pass, else its report."""
    path = tmp_path / f"{rules.parent.name}_test.yml"
    document = {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": tests}
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    result = promtool("test", "rules", str(path))
    return "" if result.returncode == 0 else result.stdout + result.stderr


def firing(alertname: str, at: str, *labels: dict[str, str]) -> dict[str, Any]:
    """A check that exactly these alerts fire at ``at``, by labels (the annotations are
    the shipped rules' business, tested in prometheus/*_test.yml)."""
    selector = f'ALERTS{{alertname="{alertname}",alertstate="firing"}}'
    samples = []
    for each in labels:
        pairs = {"alertname": alertname, "alertstate": "firing", **each}
        text = ",".join(f'{k}="{v}"' for k, v in sorted(pairs.items()))
        samples.append({"labels": f"ALERTS{{{text}}}", "value": 1})
    return {"expr": selector, "eval_time": at, "exp_samples": samples}


def series(metric: str, values: str, **labels: str) -> dict[str, str]:
    text = ",".join(f'{k}="{v}"' for k, v in {"job": JOB, **labels}.items())
    return {"series": f"{metric}{{{text}}}", "values": values}


# -- the objective -------------------------------------------------------------------------


def test_the_objective_changes_every_burn_rate_threshold_and_every_statement_of_it(
    tmp_path: Path,
) -> None:
    rules = made(tmp_path, "--slo-objective", "0.995")
    check_rules(rules)
    text = rules.read_text(encoding="utf-8")
    alerts = alerts_of(rules)
    for name in BURN_ALERTS:
        thresholds = re.findall(r"\(([\d.]+) \* \(1 - ([\d.]+)\)\)", alerts[name]["expr"])
        # Two windows per pair, two pairs per alert.
        assert len(thresholds) == 4, name
        assert {objective for _, objective in thresholds} == {"0.995"}
        description = " ".join(alerts[name]["annotations"]["description"].split())
        assert "the 0.5% that the 99.5% success objective allows" in description
    assert "0.99)" not in text
    assert "--slo-objective 0.995" in text
    # The same rules in the PrometheusRule.
    rule = yaml.safe_load((tmp_path / RULE_FILE).read_text(encoding="utf-8"))
    assert rule["spec"]["groups"] == yaml.safe_load(text)["groups"]


# SYNONYMS imports fail 0.5 % of the time, 10 of them in the first day: within a 99 %
# objective, five times the budget of a 99.9 % one (the 1d/2h ticket pair).
def _half_a_percent(*expected: dict[str, str]) -> list[dict[str, Any]]:
    finished = "elevate_import_finished_total"
    failures = " ".join(str(n // 14) for n in range(145))  # one in 200 imports
    case = {
        "name": "half a percent of the imports fail",
        "interval": "10m",
        "input_series": [
            series(finished, "0+14x144", type="SYNONYMS", status="SUCCESS"),
            series(finished, failures, type="SYNONYMS", status="FAILURE"),
        ],
        "promql_expr_test": [firing(BURN_ALERTS[1], "24h", *expected)],
    }
    return [case]


def test_a_stricter_objective_opens_a_ticket_that_the_default_one_does_not(
    tmp_path: Path,
) -> None:
    default = made(tmp_path / "default")
    strict = made(tmp_path / "strict", "--slo-objective", "0.999")
    ticket = {"severity": "warning", "job": JOB, "type": "SYNONYMS"}
    assert unit_test(tmp_path, default, _half_a_percent()) == ""
    assert unit_test(tmp_path, default, _half_a_percent(ticket)) != "", "the check can fail"
    report = unit_test(tmp_path, strict, _half_a_percent(ticket))
    assert report == "", report


def test_the_minimum_of_failed_imports_decides_whether_one_failure_in_a_quiet_hour_pages(
    tmp_path: Path,
) -> None:
    # One import in the hour, and it failed at 10m: 100 % errors in every window.
    def case(*expected: dict[str, str]) -> list[dict[str, Any]]:
        finished = "elevate_import_finished_total"
        return [
            {
                "name": "one failure in a quiet hour",
                "interval": "1m",
                "input_series": [
                    series(finished, "0x30", type="ADS", status="SUCCESS"),
                    series(finished, "0x10 1x20", type="ADS", status="FAILURE"),
                ],
                "promql_expr_test": [firing(BURN_ALERTS[0], "12m", *expected)],
            }
        ]

    page = {"severity": "critical", "job": JOB, "type": "ADS"}
    assert unit_test(tmp_path, made(tmp_path / "guarded"), case()) == ""
    unguarded = made(tmp_path / "unguarded", "--slo-min-errors", "1")
    report = unit_test(tmp_path, unguarded, case(page))
    assert report == "", report


# -- the quiet feed ------------------------------------------------------------------------


def test_quiet_after_sets_the_threshold_of_the_expression_and_of_the_annotations(
    tmp_path: Path,
) -> None:
    rules = made(tmp_path, "--quiet-after", "1h30m")
    check_rules(rules)
    rule = alerts_of(rules)["ElevateImportFeedQuiet"]
    assert rule["expr"].rstrip().endswith("> 5400")
    assert rule["annotations"]["summary"].endswith("for more than 1h30m")
    assert "threshold of 1h30m" in rule["annotations"]["description"]

    # The last success at 1m: quiet for more than 90 minutes from 91m on.
    last = "elevate_import_last_final_timestamp_seconds"
    quiet = {"severity": "warning", "job": JOB, "type": "ADS"}
    case = {
        "name": "quiet for 90 minutes",
        "interval": "1m",
        "input_series": [series(last, "60x100", type="ADS", status="SUCCESS")],
        "promql_expr_test": [
            firing("ElevateImportFeedQuiet", "91m"),
            firing("ElevateImportFeedQuiet", "92m", quiet),
        ],
    }
    report = unit_test(tmp_path, rules, [case])
    assert report == "", report


# -- the owner labels ----------------------------------------------------------------------


def test_metric_labels_set_the_joined_labels_of_every_per_import_alert_and_the_quiet_grouping(
    tmp_path: Path,
) -> None:
    rules = made(tmp_path, "--metric-labels", "feed_name,market")
    check_rules(rules)
    alerts = alerts_of(rules)
    for name in PER_IMPORT_ALERTS:
        assert "group_left (feed_name, market) # OWNER LABELS" in alerts[name]["expr"], name
    assert (
        "max by (cluster, job, type, feed_name, market) ("
        in (alerts["ElevateImportFeedQuiet"]["expr"])
    )
    assert "team" not in rules.read_text(encoding="utf-8").split("do not edit below")[1]


def test_no_metric_labels_join_nothing_and_the_failure_still_fires(tmp_path: Path) -> None:
    rules = made(tmp_path, "--metric-labels", "")
    check_rules(rules)
    alerts = alerts_of(rules)
    for name in PER_IMPORT_ALERTS:
        assert "group_left () # OWNER LABELS" in alerts[name]["expr"], name
    assert "max by (cluster, job, type) (" in alerts["ElevateImportFeedQuiet"]["expr"]
    where = {"instance": "e:1", "id": "7"}
    case = {
        "name": "a failure with owner labels that the rules do not join",
        "interval": "1m",
        "input_series": [
            series("elevate_import_status", "1x5", **where, type="ADS", status="FAILURE"),
            series("elevate_import_info", "1x5", **where, type="ADS", message=""),
            series("elevate_import_labels", "1x5", **where, team="catalog"),
        ],
        "promql_expr_test": [
            firing(
                "ElevateImportFailed",
                "2m",
                {"severity": "critical", "job": JOB, **where, "type": "ADS", "status": "FAILURE"},
            )
        ],
    }
    report = unit_test(tmp_path, rules, [case])
    assert report == "", report


# -- refusals and the drift check ------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--slo-objective", "1"),
        ("--slo-objective", "0"),
        ("--slo-objective", "99"),
        ("--slo-objective", "-0.5"),
        ("--slo-objective", "nan"),
        ("--slo-objective", "ninety-nine"),
        ("--slo-min-errors", "0"),
        ("--slo-min-errors", "two"),
        ("--quiet-after", "0s"),
        ("--quiet-after", "26"),
        ("--quiet-after", "1y"),
        ("--quiet-after", "26h "),
        ("--metric-labels", "team,team"),
        ("--metric-labels", "Team"),
        ("--metric-labels", "9lives"),
        ("--metric-labels", "cluster"),
        ("--metric-labels", "id"),
        ("--metric-labels", "a,b,c,d,e"),
        ("--metric-labels", "__team"),
    ],
)
def test_the_generator_refuses_a_bad_rule_option_with_status_2_naming_it(
    option: str, value: str, tmp_path: Path
) -> None:
    result = generate(tmp_path, option, value)
    assert result.returncode == 2, result.stderr
    assert f"{option} {value!r}" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert list(tmp_path.iterdir()) == [], "nothing written"


def test_the_drift_check_names_alerts_yml_when_its_made_part_was_edited_by_hand(
    tmp_path: Path,
) -> None:
    rules = made(tmp_path, "--slo-objective", "0.995")
    assert generate(tmp_path, "--check", "--slo-objective", "0.995").returncode == 0
    # The check compares with what the options make: another objective is drift too.
    result = generate(tmp_path, "--check")
    assert result.returncode == 1
    assert str(rules) in result.stderr
    text = rules.read_text(encoding="utf-8")
    rules.write_text(text.replace("> 93600", "> 7200"), encoding="utf-8")
    result = generate(tmp_path, "--check", "--slo-objective", "0.995")
    assert result.returncode == 1
    assert str(rules) in result.stderr
    assert "> 7200" in rules.read_text(encoding="utf-8"), "--check writes nothing"


def test_the_objective_and_the_quiet_threshold_reach_the_dashboard_and_its_config_map(
    tmp_path: Path,
) -> None:
    made(tmp_path, "--slo-objective", "0.995", "--quiet-after", "30h")
    made_dashboard = json.loads((tmp_path / "elevate-imports.json").read_text(encoding="utf-8"))
    shipped = json.loads((REPO / "grafana" / "elevate-imports.json").read_text(encoding="utf-8"))
    config_map = yaml.safe_load((tmp_path / "dashboard-configmap.yaml").read_text("utf-8"))
    in_map = json.loads(config_map["data"]["elevate-imports.json"])
    for dashboard, objective, red in ((made_dashboard, "0.995", 108000), (in_map, "0.995", 108000)):
        assert objective_of(dashboard) == objective
        assert quiet_thresholds(dashboard) == [red]
    # The shipped dashboard states the shipped defaults.
    assert objective_of(shipped) == "0.99"
    assert quiet_thresholds(shipped) == [26 * 3600]


def objective_of(dashboard: dict[str, Any]) -> str:
    (objective,) = [v["query"] for v in dashboard["templating"]["list"] if v["name"] == "objective"]
    return str(objective)


def quiet_thresholds(node: Any) -> list[int]:
    found: list[int] = []
    if isinstance(node, dict):
        if str(node.get("title", "")).startswith("Last success"):
            for override in node["fieldConfig"]["overrides"]:
                if override["matcher"]["options"] == "Age":
                    for prop in override["properties"]:
                        if prop["id"] == "thresholds":
                            steps = prop["value"]["steps"]
                            found += [s["value"] for s in steps if s["color"] == "red"]
        for value in node.values():
            found += quiet_thresholds(value)
    elif isinstance(node, list):
        for item in node:
            found += quiet_thresholds(item)
    return found


def the_generator() -> Any:
    """deploy/generate.py as a module: it runs outside the venv, so it cannot import the
    exporter's rules and keeps its own copy of them."""
    spec = importlib.util.spec_from_file_location("deploy_generate", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_generator_keeps_the_exporters_reserved_names_and_limit() -> None:
    generator = the_generator()
    assert frozenset(outcomes.RESERVED_LABELS) == generator.RESERVED_LABELS
    assert generator.MAX_METRIC_LABELS == outcomes.MAX_METRIC_LABELS


@pytest.mark.parametrize(
    "names",
    [
        "team",
        "feed_name,team,owner,tier",
        "feed_name,team,owner,tier,extra",
        "team,team",
        "__team",
        "_team",
        "Team",
        "9team",
        "te-am",
        "cluster",
        "le",
        "a" * 64,
        "a" * 65,
    ],
)
def test_the_generator_accepts_exactly_the_metric_labels_the_exporter_accepts(
    names: str,
) -> None:
    generator = the_generator()
    listed = [name.strip() for name in names.split(",")]
    try:
        outcomes.checked_names(listed)
        exporter_takes = True
    except outcomes.LabelNameError:
        exporter_takes = False
    try:
        generator.checked_metric_labels(names)
        generator_takes = True
    except generator.GenerateError:
        generator_takes = False
    assert generator_takes == exporter_takes
