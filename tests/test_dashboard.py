"""The Grafana dashboard: structure, variables, and PromQL that a real parser accepts.

There is no Grafana server here, so the dashboard is checked as data: every
panel and every query. tests/test_prometheus_end_to_end.py then runs every query
against a real Prometheus that scraped the real exporter.

The small PromQL reader below is only good enough to find selectors, their
label matchers and the function around them; whether an expression is valid
PromQL is left to promtool, which runs Prometheus' own parser.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import need_tool

REPO = Path(__file__).resolve().parent.parent
DASHBOARD_PATH = REPO / "grafana" / "elevate-imports.json"
# The links start with deploy/generate.py's default base URL, which an operator replaces.
BASE_URL = "https://github.com/elevate-import-exporter/elevate-import-exporter/blob/main"
README_URL = f"{BASE_URL}/README.md"
RUNBOOK_URL = f"{BASE_URL}/docs/runbook.md"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

STATUSES = ("NOT_FOUND", "WAITING", "BLOCKED", "IN_PROGRESS", "SUCCESS", "FAILURE", "ABORTED")

# The labels that --imports.metric-labels may add to the aggregates of imports over weeks
# (those the dashboard groups by; any allowlisted name would do).
ALLOWLISTED = frozenset({"feed_name"})

# The metric names and labels of docs/contract.md and of the README's metrics table
# (histogram series spelled out), plus the two series Prometheus makes itself. Prometheus
# adds job and instance, and the cluster label of a scrape config (one exporter per cluster).
CONTRACT_LABELS: dict[str, frozenset[str]] = {
    "elevate_import_status": frozenset({"id", "type", "status"}),
    "elevate_import_info": frozenset({"id", "type", "message"}),
    "elevate_import_first_seen_timestamp_seconds": frozenset({"id"}),
    "elevate_import_last_status_change_timestamp_seconds": frozenset({"id"}),
    "elevate_import_poll_success": frozenset({"id"}),
    "elevate_import_tracked_imports": frozenset(),
    "elevate_import_up": frozenset(),
    "elevate_import_api_reachable": frozenset(),
    "elevate_import_poll_failure": frozenset({"id", "reason"}),
    "elevate_import_scrape_duration_seconds": frozenset(),
    "elevate_import_api_requests_total": frozenset({"code"}),
    "elevate_import_api_errors_total": frozenset({"reason"}),
    "elevate_import_api_request_duration_seconds_bucket": frozenset({"le"}),
    "elevate_import_api_request_duration_seconds_sum": frozenset(),
    "elevate_import_api_request_duration_seconds_count": frozenset(),
    "elevate_import_exporter_build_info": frozenset({"version", "python_version"}),
    # Imports over weeks: aggregates that outlive the per-id series.
    "elevate_import_finished_total": frozenset({"type", "status"}) | ALLOWLISTED,
    "elevate_import_duration_seconds_bucket": frozenset({"type", "status", "le"}) | ALLOWLISTED,
    "elevate_import_duration_seconds_sum": frozenset({"type", "status"}) | ALLOWLISTED,
    "elevate_import_duration_seconds_count": frozenset({"type", "status"}) | ALLOWLISTED,
    "elevate_import_queue_seconds_bucket": frozenset({"type", "le"}) | ALLOWLISTED,
    "elevate_import_queue_seconds_sum": frozenset({"type"}) | ALLOWLISTED,
    "elevate_import_queue_seconds_count": frozenset({"type"}) | ALLOWLISTED,
    "elevate_import_last_final_timestamp_seconds": frozenset({"type", "status"}) | ALLOWLISTED,
    # The import proxy, inside the exporter or alone.
    "elevate_import_proxy_requests_total": frozenset({"method", "code"}),
    "elevate_import_proxy_bytes_total": frozenset({"direction"}),
    "elevate_import_proxy_imports_total": frozenset({"type", "outcome"}),
    "elevate_import_proxy_upstream_errors_total": frozenset({"reason"}),
    "elevate_import_proxy_registration_failures_total": frozenset(),
}
TARGET_LABELS = frozenset({"cluster", "job", "instance"})
PROMETHEUS_LABELS: dict[str, frozenset[str] | None] = {
    "up": TARGET_LABELS,
    "ALERTS": None,  # carries whatever labels the alerts have
}

# What Grafana would put in for the variables when checking that queries parse.
PARSE_VALUES = {
    "datasource": "prometheus",
    "cluster": ".*",
    "objective": "0.99",
    "job": ".+",
    "instance": ".+",
    "type": ".*",
    "id": ".+",
    "__rate_interval": "1m",
    "__interval": "1d",
    "__range": "6h",
}
# Ranges a query may use: the rate interval in rate() and friends, the dashboard's range
# (optionally as a subquery at a fixed resolution) in *_over_time. The panels over weeks
# take increase() over their own interval (a day) or their own range (30 days).
RATE_RANGES = frozenset({"$__rate_interval"})
OVER_TIME_RANGES = frozenset({"$__range", "$__range:1m"})
WEEKS_RANGES = frozenset({"$__interval", "$__range"})

CURRENT_TABLE = "Current status per import"
FAILED_TABLE = "Failed and aborted imports in the selected range"
AGE_PANEL = "Age of unfinished imports"
WEEKS_ROW = "Over weeks: is it getting worse? (last 30 days, one point a day)"
PROXY_ROW = "Import proxy"
SUCCESS_RATIO = "Success ratio by type and feed"
FINISHED_PER_DAY = "Imports finished per day by status"
DURATIONS = "Duration of successful imports p50 / p95 by type"
QUEUE_TIMES = "Queue time p50 / p95 by type"
BUDGET = "Error budget left, 30 days (objective $objective)"
LAST_SUCCESS = "Last success per type and feed"
# The SLO's objective as deploy/generate.py writes it by default.
OBJECTIVE = "0.99"
ALERTS_PATH = REPO / "prometheus" / "alerts.yml"


# -- reading PromQL ----------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<comment>\#[^\n]*)
    | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    | (?P<range>\[[^\]]*\])
    | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<variable>\$\w+|\$\{\w+\})  # a dashboard variable that stands for a number
    | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^<>=(){},@])
    """,
    re.VERBOSE,
)
_LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = _LABEL_LIST_KEYWORDS | {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
_AGGREGATIONS = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    }
)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str


@dataclass(frozen=True)
class Selector:
    """A vector selector: metric name, matchers, range, and the function it sits in."""

    metric: str
    matchers: Mapping[str, tuple[str, str]]
    range: str | None
    function: str | None


@dataclass(frozen=True)
class Reading:
    selectors: tuple[Selector, ...]
    grouping_labels: frozenset[str]  # labels named in by/without/on/ignoring/group_*
    ranges: tuple[str, ...]


def tokens(expr: str) -> list[Token]:
    found: list[Token] = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise ValueError(f"cannot read PromQL at {expr[pos : pos + 20]!r} in {expr!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind not in {"space", "comment"}:
            found.append(Token(kind, match.group()))
        pos = match.end()
    return found


def _unquote(text: str) -> str:
    if text.startswith("`"):
        return text[1:-1]
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def _matchers(toks: list[Token], start: int) -> tuple[dict[str, tuple[str, str]], int]:
    """Read ``{label op "value", ...}`` from toks[start] (a ``{``); return matchers, next index."""
    found: dict[str, tuple[str, str]] = {}
    i = start + 1
    while toks[i].text != "}":
        if toks[i].text == ",":
            i += 1
            continue
        label, op, value = toks[i], toks[i + 1], toks[i + 2]
        if label.kind != "ident" or op.kind != "op" or value.kind != "string":
            raise ValueError(f"unexpected matcher {label.text}{op.text}{value.text}")
        found[label.text] = (op.text, _unquote(value.text))
        i += 3
    return found, i + 1


def read_promql(expr: str) -> Reading:
    toks = tokens(expr)
    selectors: list[Selector] = []
    grouping: set[str] = set()
    ranges: list[str] = []
    # One entry per open parenthesis: the function it calls, "" for plain grouping,
    # or None for a label list after by/without/on/ignoring/group_left/group_right.
    stack: list[str | None] = []
    pending_call: str | None = None
    i = 0
    while i < len(toks):
        tok = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        if tok.kind == "range":
            ranges.append(tok.text[1:-1])
        elif tok.text == "(":
            if i > 0 and toks[i - 1].text in _LABEL_LIST_KEYWORDS:
                stack.append(None)
            else:
                stack.append(pending_call or "")
                pending_call = None
        elif tok.text == ")":
            stack.pop()
        elif tok.kind == "ident" and stack and stack[-1] is None:
            grouping.add(tok.text)
        elif tok.kind == "ident" and tok.text in _KEYWORDS:
            pass
        elif tok.kind == "ident" and nxt is not None and nxt.text == "(":
            pending_call = tok.text
        elif tok.kind == "ident" and tok.text in _AGGREGATIONS and nxt is not None:
            pending_call = tok.text  # `sum by (x) (...)`: the call's parenthesis comes later
        elif tok.kind == "ident" or tok.text == "{":
            metric = tok.text if tok.kind == "ident" else ""
            matchers: dict[str, tuple[str, str]] = {}
            j = i + 1 if tok.kind == "ident" else i
            if j < len(toks) and toks[j].text == "{":
                matchers, j = _matchers(toks, j)
            if "__name__" in matchers:
                metric = matchers.pop("__name__")[1]
            selector_range = None
            if j < len(toks) and toks[j].kind == "range":
                selector_range = toks[j].text[1:-1]
                ranges.append(selector_range)
                j += 1
            function = next((f for f in reversed(stack) if f), None) if stack else None
            innermost = stack[-1] if stack else None
            selectors.append(Selector(metric, matchers, selector_range, innermost or function))
            i = j
            continue
        i += 1
    if stack:
        raise ValueError(f"unbalanced parentheses in {expr!r}")
    return Reading(tuple(selectors), frozenset(grouping), tuple(ranges))


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Put values in for Grafana's $var and ${var}; an unknown variable is an error."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"unknown variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


# -- the dashboard's queries ------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    where: str  # e.g. "panel 'Tracked imports' target A"
    expr: str
    instant: bool


def load_dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD_PATH.read_text(encoding="utf-8"))
    return loaded


def laid_out(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel on the grid, rows among them."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # panels inside collapsed rows


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The panels that show data: all but the rows."""
    return (panel for panel in laid_out(dashboard) if panel["type"] != "row")


def row_panels(dashboard: Mapping[str, Any], title: str) -> list[dict[str, Any]]:
    """The panels of the row ``title``: inside it when it is collapsed, else the ones
    below it up to the next row."""
    top = dashboard["panels"]
    for index, panel in enumerate(top):
        if panel["type"] == "row" and panel["title"] == title:
            if panel["collapsed"]:
                return list(panel["panels"])
            found: list[dict[str, Any]] = []
            for below in top[index + 1 :]:
                if below["type"] == "row":
                    break
                found.append(below)
            return found
    raise AssertionError(f"no row titled {title!r}")


def panel_titled(dashboard: Mapping[str, Any], title: str) -> dict[str, Any]:
    (found,) = [p for p in panels(dashboard) if p["title"] == title]
    return found


def panel_queries(dashboard: Mapping[str, Any]) -> list[Query]:
    return [
        Query(f"panel {p['title']!r} target {t['refId']}", t["expr"], bool(t.get("instant")))
        for p in panels(dashboard)
        for t in p.get("targets", [])
    ]


def annotation_queries(dashboard: Mapping[str, Any]) -> list[Query]:
    return [
        Query(f"annotation {a['name']!r}", a["expr"], True)
        for a in dashboard["annotations"]["list"]
        if "expr" in a
    ]


def query_variables(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [v for v in dashboard["templating"]["list"] if v["type"] == "query"]


_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$", re.DOTALL)


def variable_query(variable: Mapping[str, Any]) -> tuple[str, str]:
    """The selector and the label of a ``label_values(selector, label)`` variable."""
    query = variable["query"]
    text = query["query"] if isinstance(query, dict) else query
    match = _LABEL_VALUES.match(text.strip())
    assert match, f"variable {variable['name']} is not a label_values() query: {text!r}"
    return match.group("selector"), match.group("label")


def promtool_parses(exprs: Mapping[str, str], tmp_path: Path) -> None:
    """Fail unless Prometheus' parser (through promtool) accepts every expression."""
    promtool = need_tool("promtool")
    rules = [
        {"record": f"dashboard_query_{n}", "expr": expr} for n, expr in enumerate(exprs.values())
    ]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    names = "\n".join(f"dashboard_query_{n}: {where}" for n, where in enumerate(exprs))
    assert result.returncode == 0, f"{result.stdout}{result.stderr}\nwhich is:\n{names}"


# -- the tests -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load_dashboard()


def test_the_dashboard_is_classic_json_with_a_fixed_uid_for_grafana_10_4(
    dashboard: dict[str, Any],
) -> None:
    assert dashboard["schemaVersion"] == 39
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dashboard["uid"])
    assert dashboard["editable"] is False
    assert dashboard["id"] is None, "an id would clash with the importing Grafana's own"
    assert dashboard["title"]
    assert dashboard["description"]
    assert {"elevate", "elevate-import-exporter"} <= set(dashboard["tags"])


def test_the_dashboard_links_to_the_runbook_and_the_readme(dashboard: dict[str, Any]) -> None:
    assert [link["url"] for link in dashboard["links"]] == [RUNBOOK_URL, README_URL]
    assert (REPO / "docs" / "runbook.md").is_file()
    assert (REPO / "README.md").is_file()


def test_the_datasource_variable_offers_prometheus_data_sources(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


def test_cluster_job_instance_type_and_id_are_chained_multi_value_query_variables(
    dashboard: dict[str, Any],
) -> None:
    variables = {v["name"]: v for v in query_variables(dashboard)}
    assert list(variables) == ["cluster", "job", "instance", "type", "id"]
    for name, variable in variables.items():
        assert variable["datasource"] == DATASOURCE, name
        assert variable["multi"] is True, name
        assert variable["includeAll"] is True, name
        assert variable["refresh"] == 2, f"{name} must refresh on time range change"
        selector, label = variable_query(variable)
        assert label == name
        reading = read_promql(selector)
        (only,) = reading.selectors
        assert only.metric in CONTRACT_LABELS
        assert label in CONTRACT_LABELS[only.metric] | TARGET_LABELS
        # Each variable narrows by the ones before it.
        earlier = list(variables)[: list(variables).index(name)]
        assert {m: v for m, (_, v) in only.matchers.items()} == {e: f"${e}" for e in earlier}
    # type is "" for imports of Admin API v4; ".+" would hide them under All.
    assert variables["type"]["allValue"] == ".*"
    # A Prometheus without cluster labels (one cluster) has none: All must match that too.
    assert variable_query(variables["cluster"]) == ("elevate_import_up", "cluster")
    assert variables["cluster"]["allValue"] == ".*"
    for name in ("job", "instance", "id"):
        assert variables[name]["allValue"] == ".+"


def test_the_slo_objective_is_a_hidden_constant_shown_in_the_budget_title(
    dashboard: dict[str, Any],
) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    objective = variables["objective"]
    assert (objective["type"], objective["query"], objective["hide"]) == ("constant", OBJECTIVE, 2)
    assert 0 < float(objective["query"]) < 1
    assert "$objective" in panel_titled(dashboard, BUDGET)["title"]


def test_every_panel_uses_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    for panel in panels(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
    for annotation in dashboard["annotations"]["list"]:
        assert annotation["datasource"] == DATASOURCE


def test_every_panel_has_a_title_a_description_and_a_unit_or_value_mappings(
    dashboard: dict[str, Any],
) -> None:
    for panel in panels(dashboard):
        assert panel["title"].strip()
        assert len(panel["description"]) > 20, panel["title"]
        defaults = panel["fieldConfig"]["defaults"]
        overridden = {
            prop["id"]
            for override in panel["fieldConfig"]["overrides"]
            for prop in override["properties"]
        }
        assert (
            defaults.get("unit") or defaults.get("mappings") or {"unit", "mappings"} & overridden
        ), panel["title"]


def test_panels_do_not_overlap_and_fit_in_24_columns(dashboard: dict[str, Any]) -> None:
    taken: dict[tuple[int, int], str] = {}
    ids = [p["id"] for p in laid_out(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in laid_out(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] >= 0
        assert grid["y"] >= 0
        assert grid["w"] > 0
        assert grid["h"] > 0
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']!r} overlaps {taken[(x, y)]!r}"
                taken[(x, y)] = panel["title"]


def test_the_panels_the_issue_asks_for_are_there(dashboard: dict[str, Any]) -> None:
    by_type: dict[str, list[dict[str, Any]]] = {}
    for panel in panels(dashboard):
        by_type.setdefault(panel["type"], []).append(panel)
    exprs = " ".join(q.expr for q in panel_queries(dashboard))
    assert any("elevate_import_status" in q["expr"] for p in by_type["stat"] for q in p["targets"])
    assert any(
        "elevate_import_first_seen_timestamp_seconds" in q["expr"]
        for p in by_type["stat"]
        for q in p["targets"]
    )
    assert {p["title"] for p in by_type["table"]} == {CURRENT_TABLE, FAILED_TABLE, LAST_SUCCESS}
    table = panel_titled(dashboard, CURRENT_TABLE)
    assert "elevate_import_info" in table["targets"][0]["expr"]
    assert "elevate_import_last_status_change_timestamp_seconds" in table["targets"][0]["expr"]
    assert any(
        "elevate_import_status" in p["targets"][0]["expr"] for p in by_type["state-timeline"]
    )
    assert "rate(elevate_import_api_requests_total" in exprs
    assert 'reason=~"forbidden|server_error"' in exprs
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, " in exprs
    assert "elevate_import_up{" in exprs
    assert "elevate_import_scrape_duration_seconds{" in exprs
    assert panel_titled(dashboard, AGE_PANEL)["type"] == "bargauge"


def _override(panel: Mapping[str, Any], field: str, prop: str) -> Any:
    for override in panel["fieldConfig"]["overrides"]:
        if override["matcher"] == {"id": "byName", "options": field}:
            for item in override["properties"]:
                if item["id"] == prop:
                    return item["value"]
    raise AssertionError(f"panel {panel['title']!r} has no {prop} override for {field}")


def _mapped(mappings: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        key: option
        for mapping in mappings
        if mapping["type"] == "value"
        for key, option in mapping["options"].items()
    }


def test_the_table_lists_id_type_coloured_status_message_and_since_when(
    dashboard: dict[str, Any],
) -> None:
    table = panel_titled(dashboard, CURRENT_TABLE)
    (target,) = table["targets"]
    assert target["format"] == "table"
    assert target["instant"] is True
    grouping = read_promql(target["expr"]).grouping_labels
    assert {"id", "type", "status", "message"} <= grouping
    status_colours = _mapped(_override(table, "status", "mappings"))
    assert set(status_colours) == set(STATUSES)
    assert len({o["color"] for o in status_colours.values()}) == len(STATUSES)
    assert _override(table, "status", "custom.cellOptions")["type"] == "color-background"
    organize = next(t for t in table["transformations"] if t["id"] == "organize")["options"]
    since = organize["renameByName"]["Value"]
    assert _override(table, since, "unit") in {"dateTimeFromNow", "dateTimeAsIso"}
    # Grafana's date units take milliseconds, the exporter gives seconds.
    assert target["expr"].startswith("1000 * ")


# -- the panels that look back: failed imports over the range, age of unfinished ones ------


def test_the_failed_table_reads_failed_and_aborted_statuses_over_the_whole_range(
    dashboard: dict[str, Any],
) -> None:
    table = panel_titled(dashboard, FAILED_TABLE)
    assert table["type"] == "table"
    assert [t["refId"] for t in table["targets"]] == ["A", "B"]
    for target in table["targets"]:
        assert (target["format"], target["instant"]) == ("table", True)
        # Grafana's date units take milliseconds, the exporter gives seconds.
        assert target["expr"].startswith("1000 * ")
        reading = read_promql(target["expr"])
        statuses = [s for s in reading.selectors if s.metric == "elevate_import_status"]
        assert statuses
        assert all(s.matchers["status"] == ("=~", "FAILURE|ABORTED") for s in statuses)
        # The rows come from the whole range, not the instant: a retired import has no
        # series at the instant, only samples in the past.
        assert any(s.function == "max_over_time" and s.range == "$__range" for s in statuses)
        assert "elevate_import_info" in {s.metric for s in reading.selectors}
        assert "$__range:1m" in reading.ranges, "the message is looked up over the range too"
        assert {"id", "type", "status", "message"} <= reading.grouping_labels
    transformations = [t["id"] for t in table["transformations"]]
    assert transformations == ["merge", "organize"], "A and B become one row per import"
    organize = table["transformations"][1]["options"]
    assert organize["renameByName"] == {"Value #A": "Last exported", "Value #B": "Ended"}
    columns = sorted(organize["indexByName"], key=organize["indexByName"].__getitem__)
    assert columns[:6] == ["id", "type", "status", "message", "Value #B", "Value #A"]
    assert _override(table, "Ended", "unit") == "dateTimeAsIso"
    assert _override(table, "Last exported", "unit") == "dateTimeFromNow"
    colours = _mapped(_override(table, "status", "mappings"))
    current = _mapped(_override(panel_titled(dashboard, CURRENT_TABLE), "status", "mappings"))
    assert colours == {status: current[status] for status in ("FAILURE", "ABORTED")}
    assert "retired" in table["description"]
    assert "$__range" in table["description"]


@pytest.mark.parametrize("title", [FAILED_TABLE, AGE_PANEL])
def test_the_new_panels_honour_the_job_instance_type_and_id_variables(
    dashboard: dict[str, Any], title: str
) -> None:
    for target in panel_titled(dashboard, title)["targets"]:
        for selector in read_promql(target["expr"]).selectors:
            expected = {"job": ("=~", "$job"), "instance": ("=~", "$instance")}
            expected["cluster"] = ("=~", "$cluster")
            expected["id"] = ("=~", "$id")
            if "type" in CONTRACT_LABELS[selector.metric]:
                expected["type"] = ("=~", "$type")
            assert expected.items() <= dict(selector.matchers).items(), (title, selector)


def stuck_threshold() -> float:
    """The seconds after which ElevateImportStuck fires, as the shipped rule says."""
    rules = yaml.safe_load(ALERTS_PATH.read_text(encoding="utf-8"))["groups"][0]["rules"]
    (stuck,) = [r for r in rules if r.get("alert") == "ElevateImportStuck"]
    found = re.search(r"elevate_import_first_seen_timestamp_seconds\s*>\s*(\d+)", stuck["expr"])
    assert found, stuck["expr"]
    return float(found.group(1))


def test_the_age_panel_counts_from_first_seen_for_imports_not_final_like_the_stuck_alert(
    dashboard: dict[str, Any],
) -> None:
    age = panel_titled(dashboard, AGE_PANEL)
    (target,) = age["targets"]
    assert target["instant"] is True
    selectors = {s.metric: s for s in read_promql(target["expr"]).selectors}
    assert selectors["elevate_import_status"].matchers["status"] == (
        "!~",
        "SUCCESS|FAILURE|ABORTED",
    )
    assert "time() - elevate_import_first_seen_timestamp_seconds{" in target["expr"]
    assert target["expr"].startswith("sort_desc("), "the oldest import first"
    defaults = age["fieldConfig"]["defaults"]
    assert defaults["unit"] == "dtdurations"
    steps = defaults["thresholds"]["steps"]
    assert steps[-1]["color"] == "red"
    assert steps[-1]["value"] == stuck_threshold()


# What the two panels answer, checked by Prometheus' own engine on made-up series
# (promtool test rules): a 1-minute scrape interval, evaluated at minute 60.
E2E_LABELS = 'job="elevate-import-exporter", instance="exporter:10025"'
RANGE_VALUES = PARSE_VALUES | {"__range": "1h"}


def series(metric: str, values: str, **labels: str) -> dict[str, str]:
    """One input series; ``values`` in promtool's notation (``_xN``: N minutes without
    a sample, ``vxN``: N+1 samples of v, ``stale``: the series left the scrape)."""
    written = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{metric}{{{E2E_LABELS}, {written}}}", "values": values}


def sample(value: float, **labels: str) -> dict[str, Any]:
    written = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"labels": f"{{{E2E_LABELS}, {written}}}", "value": value}


def promtool_evaluates(
    input_series: list[dict[str, str]], cases: list[dict[str, Any]], tmp_path: Path
) -> None:
    """Fail unless every case's expression gives exactly its samples (promtool test rules)."""
    promtool = need_tool("promtool")
    tests = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": input_series, "promql_expr_test": cases}],
    }
    path = tmp_path / "panel_tests.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"{result.stdout}{result.stderr}"


def failed_table_queries(dashboard: Mapping[str, Any], range_: str) -> tuple[str, str]:
    values = RANGE_VALUES | {"__range": range_}
    last_exported, ended = (
        substitute(t["expr"], values) for t in panel_titled(dashboard, FAILED_TABLE)["targets"]
    )
    return last_exported, ended


def test_the_failed_table_still_lists_an_import_whose_series_left_the_exporter(
    dashboard: dict[str, Any], tmp_path: Path
) -> None:
    status, info = "elevate_import_status", "elevate_import_info"
    change = "elevate_import_last_status_change_timestamp_seconds"
    retired = {"id": "1002", "type": "PRODUCTS"}
    live = {"id": "1004", "type": "ADS"}
    ok = {"id": "1001", "type": "ADS"}
    input_series = [
        # 1002: in progress ("Queued") for 10 min, FAILURE ("Boom") from minute 10, retired
        # (gone from the scrape) at minute 30.
        series(status, "1x9 0x19 stale", **retired, status="IN_PROGRESS"),
        series(status, "0x9 1x19 stale", **retired, status="FAILURE"),
        series(status, "0x29 stale", **retired, status="ABORTED"),
        series(info, "1x9 stale", **retired, message="Queued"),
        series(info, "_x10 1x19 stale", **retired, message="Boom"),
        series(change, "0x9 600x19 stale", id="1002"),
        # 1004: tracked from minute 40, ABORTED from minute 50 and still exported.
        series(status, "_x40 1x9 0x10", **live, status="IN_PROGRESS"),
        series(status, "_x40 0x9 1x10", **live, status="ABORTED"),
        series(status, "_x40 0x20", **live, status="FAILURE"),
        series(info, "_x40 1x9 stale", **live, message="Running"),
        series(info, "_x50 1x10", **live, message="Stopped by user"),
        series(change, "_x40 2400x9 3000x10", id="1004"),
        # 1001 succeeded: not listed.
        series(status, "1x60", **ok, status="SUCCESS"),
        series(status, "0x60", **ok, status="FAILURE"),
        series(status, "0x60", **ok, status="ABORTED"),
        series(info, "1x60", **ok, message="Done"),
        series(change, "0x60", id="1001"),
    ]
    row_retired = {**retired, "status": "FAILURE", "message": "Boom"}
    row_live = {**live, "status": "ABORTED", "message": "Stopped by user"}
    last_exported, ended = failed_table_queries(dashboard, "1h")
    recent_last_exported, _ = failed_table_queries(dashboard, "20m")
    minute = 60_000  # ms
    promtool_evaluates(
        input_series,
        [
            # Last exported: the last scrape with the import (minute 29, or now), in ms.
            {
                "expr": last_exported,
                "eval_time": "60m",
                "exp_samples": [
                    sample(29 * minute, **row_retired),
                    sample(60 * minute, **row_live),
                ],
            },
            # Ended: when the exporter saw the final status.
            {
                "expr": ended,
                "eval_time": "60m",
                "exp_samples": [
                    sample(10 * minute, **row_retired),
                    sample(50 * minute, **row_live),
                ],
            },
            # A range that starts after 1002 was retired no longer lists it.
            {
                "expr": recent_last_exported,
                "eval_time": "60m",
                "exp_samples": [sample(60 * minute, **row_live)],
            },
        ],
        tmp_path,
    )


def test_the_age_panel_shows_the_clock_of_each_unfinished_import(
    dashboard: dict[str, Any], tmp_path: Path
) -> None:
    (target,) = panel_titled(dashboard, AGE_PANEL)["targets"]
    status, first = "elevate_import_status", "elevate_import_first_seen_timestamp_seconds"
    input_series = [
        series(status, "_x20 1x40", id="1003", type="ADS", status="IN_PROGRESS"),
        series(first, "_x20 1200x40", id="1003"),
        # WAITING, then IN_PROGRESS: the clock runs on from first seen.
        series(status, "1x29 0x30", id="1007", type="ADS", status="WAITING"),
        series(status, "0x29 1x30", id="1007", type="ADS", status="IN_PROGRESS"),
        series(first, "0x60", id="1007"),
        series(status, "1x60", id="1005", type="ADS", status="NOT_FOUND"),
        series(first, "0x60", id="1005"),
        # Finished, and never answered: not listed.
        series(status, "1x60", id="1001", type="ADS", status="SUCCESS"),
        series(first, "0x60", id="1001"),
        series(first, "0x60", id="1006"),
    ]
    promtool_evaluates(
        input_series,
        [
            {
                "expr": substitute(target["expr"], RANGE_VALUES),
                "eval_time": "60m",
                "exp_samples": [
                    sample(2400, id="1003", type="ADS", status="IN_PROGRESS"),
                    sample(3600, id="1007", type="ADS", status="IN_PROGRESS"),
                    sample(3600, id="1005", type="ADS", status="NOT_FOUND"),
                ],
            }
        ],
        tmp_path,
    )


# -- the panels over weeks, on made-up aggregates ---------------------------------------------

# A day's step and the 30 days' range, shortened to the hour of made-up series.
WEEKS_VALUES = RANGE_VALUES | {"__interval": "1h", "__range": "1h"}


def weeks_queries(dashboard: Mapping[str, Any], title: str, **chosen: str) -> list[str]:
    values = WEEKS_VALUES | chosen
    return [substitute(t["expr"], values) for t in panel_titled(dashboard, title)["targets"]]


def grouped(value: float, **labels: str) -> dict[str, Any]:
    """A sample of an aggregation: only the labels it groups by."""
    written = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"labels": f"{{{written}}}", "value": value}


def finished_series() -> list[dict[str, str]]:
    """Imports finished in the hour, in two clusters: a's nightly PRODUCTS feed 198 of 200
    succeeded, a's ADS (no feed) 100 of 100; b's PRODUCTS feed none of 50."""
    finished = "elevate_import_finished_total"
    products = {"type": "PRODUCTS", "feed_name": "nightly"}
    # Every final status is published at 0 before the first import ends.
    return [
        series(finished, "0x10 198x50", cluster="a", status="SUCCESS", **products),
        series(finished, "0x20 2x40", cluster="a", status="FAILURE", **products),
        series(finished, "0x60", cluster="a", status="ABORTED", **products),
        series(finished, "0x10 100x50", cluster="a", type="ADS", status="SUCCESS"),
        series(finished, "0x60", cluster="a", type="ADS", status="FAILURE"),
        series(finished, "0x60", cluster="b", status="SUCCESS", **products),
        series(finished, "0x30 50x30", cluster="b", status="FAILURE", **products),
    ]


def test_the_success_ratio_is_per_type_and_feed_and_follows_the_cluster(
    dashboard: dict[str, Any], tmp_path: Path
) -> None:
    (ratio,) = weeks_queries(dashboard, SUCCESS_RATIO, cluster="a")
    (ads_only,) = weeks_queries(dashboard, SUCCESS_RATIO, cluster=".*", type="ADS")
    (of_b,) = weeks_queries(dashboard, SUCCESS_RATIO, cluster="b")
    products = {"type": "PRODUCTS", "feed_name": "nightly"}
    promtool_evaluates(
        finished_series(),
        [
            {
                "expr": f"round(1000 * ({ratio}))",
                "eval_time": "60m",
                "exp_samples": [
                    grouped(990, cluster="a", **products),
                    grouped(1000, cluster="a", type="ADS"),
                ],
            },
            {
                "expr": f"round(1000 * ({ads_only}))",
                "eval_time": "60m",
                "exp_samples": [grouped(1000, cluster="a", type="ADS")],
            },
            {
                "expr": f"round(1000 * ({of_b}))",
                "eval_time": "60m",
                "exp_samples": [grouped(0, cluster="b", **products)],
            },
        ],
        tmp_path,
    )


def test_the_finished_per_day_panel_counts_each_final_status(
    dashboard: dict[str, Any], tmp_path: Path
) -> None:
    (per_day,) = weeks_queries(dashboard, FINISHED_PER_DAY, cluster="a")
    promtool_evaluates(
        finished_series(),
        [
            {
                "expr": per_day,
                "eval_time": "60m",
                "exp_samples": [
                    {"labels": '{status="ABORTED"}', "value": 0},
                    {"labels": '{status="FAILURE"}', "value": 2},
                    {"labels": '{status="SUCCESS"}', "value": 298},
                ],
            }
        ],
        tmp_path,
    )


def test_the_error_budget_is_spent_by_the_share_of_imports_that_did_not_succeed(
    dashboard: dict[str, Any], tmp_path: Path
) -> None:
    (budget,) = weeks_queries(dashboard, BUDGET, cluster=".*", objective=OBJECTIVE)
    (ads,) = weeks_queries(dashboard, BUDGET, cluster="a", type="ADS", objective=OBJECTIVE)
    (lenient,) = weeks_queries(dashboard, BUDGET, cluster="a", objective="0.95")
    promtool_evaluates(
        finished_series(),
        [
            {
                # a: 2 of 300 failed, 2/3 of the 1% allowed; b: all 50 failed, 99 budgets over.
                "expr": f"round(1000 * ({budget}))",
                "eval_time": "60m",
                "exp_samples": [
                    {"labels": '{cluster="a"}', "value": 333},
                    {"labels": '{cluster="b"}', "value": -99000},
                ],
            },
            {
                "expr": f"round(1000 * ({ads}))",
                "eval_time": "60m",
                "exp_samples": [{"labels": '{cluster="a"}', "value": 1000}],
            },
            {
                # 2 of 300 is 2/15 of a 5% budget.
                "expr": f"round(1000 * ({lenient}))",
                "eval_time": "60m",
                "exp_samples": [{"labels": '{cluster="a"}', "value": 867}],
            },
        ],
        tmp_path,
    )


def test_the_last_success_table_shows_when_and_how_long_ago_per_type_and_feed(
    dashboard: dict[str, Any], tmp_path: Path
) -> None:
    when, age = weeks_queries(dashboard, LAST_SUCCESS, cluster=".*")
    last = "elevate_import_last_final_timestamp_seconds"
    nightly = {"type": "PRODUCTS", "feed_name": "nightly"}
    input_series = [
        series(last, "600x60", status="SUCCESS", **nightly),
        series(last, "3000x60", status="FAILURE", **nightly),  # a later failure: not listed
        series(last, "120x60", type="ADS", status="SUCCESS"),
        series(last, "900x60", type="ADS", feed_name="campaigns", status="SUCCESS"),
    ]
    promtool_evaluates(
        input_series,
        [
            {
                "expr": when,
                "eval_time": "60m",
                "exp_samples": [
                    {"labels": '{type="PRODUCTS", feed_name="nightly"}', "value": 600_000},
                    {"labels": '{type="ADS"}', "value": 120_000},
                    {"labels": '{type="ADS", feed_name="campaigns"}', "value": 900_000},
                ],
            },
            {
                "expr": age,
                "eval_time": "60m",
                "exp_samples": [
                    {"labels": '{type="PRODUCTS", feed_name="nightly"}', "value": 3000},
                    {"labels": '{type="ADS"}', "value": 3480},
                    {"labels": '{type="ADS", feed_name="campaigns"}', "value": 2700},
                ],
            },
        ],
        tmp_path,
    )
    panel = panel_titled(dashboard, LAST_SUCCESS)
    assert _override(panel, "Last success", "unit") == "dateTimeAsIso"
    assert _override(panel, "Age", "unit") == "dtdurations"


def test_the_duration_panel_reads_successful_imports_and_the_queue_panel_every_import(
    dashboard: dict[str, Any], tmp_path: Path
) -> None:
    p50, p95 = weeks_queries(dashboard, DURATIONS, cluster=".*")
    q50, q95 = weeks_queries(dashboard, QUEUE_TIMES, cluster=".*")
    duration, queue = (
        "elevate_import_duration_seconds_bucket",
        "elevate_import_queue_seconds_bucket",
    )
    ok = {"type": "PRODUCTS", "status": "SUCCESS"}
    failed = {"type": "PRODUCTS", "status": "FAILURE"}
    input_series = [
        # Four successful imports of 10 to 30 s; four failed ones of 30 to 60 s, left out.
        series(duration, "0x10 0x50", le="10", **ok),
        series(duration, "0x10 4x50", le="30", **ok),
        series(duration, "0x10 4x50", le="60", **ok),
        series(duration, "0x10 4x50", le="+Inf", **ok),
        series(duration, "0x10 0x50", le="10", **failed),
        series(duration, "0x10 0x50", le="30", **failed),
        series(duration, "0x10 4x50", le="60", **failed),
        series(duration, "0x10 4x50", le="+Inf", **failed),
        # Queue time has no status: all eight waited 1 to 5 s.
        series(queue, "0x10 0x50", le="1", type="PRODUCTS"),
        series(queue, "0x10 8x50", le="5", type="PRODUCTS"),
        series(queue, "0x10 8x50", le="+Inf", type="PRODUCTS"),
    ]
    products = [{"labels": '{type="PRODUCTS"}', "value": None}]
    cases = [
        (p50, 20.0),  # the 2nd of 4 in (10, 30]: half way
        (p95, 29.0),  # the 3.8th of 4
        (q50, 3.0),  # the 4th of 8 in (1, 5]
        (q95, 4.8),  # the 7.6th of 8
    ]
    promtool_evaluates(
        input_series,
        [
            {
                "expr": f"round(1000 * ({expr}))",
                "eval_time": "60m",
                "exp_samples": [{**products[0], "value": round(1000 * value)}],
            }
            for expr, value in cases
        ],
        tmp_path,
    )


def shipped_alert(name: str) -> dict[str, Any]:
    groups = yaml.safe_load(ALERTS_PATH.read_text(encoding="utf-8"))["groups"]
    (rule,) = [r for g in groups for r in g["rules"] if r.get("alert") == name]
    found: dict[str, Any] = rule
    return found


def test_the_budget_uses_the_objective_of_the_shipped_burn_rate_alerts(
    dashboard: dict[str, Any],
) -> None:
    expr = shipped_alert("ElevateImportErrorBudgetFastBurn")["expr"]
    objectives = set(re.findall(r"\(1 - ([0-9.]+)\)", expr))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert objectives == {variables["objective"]["query"]}


def test_the_age_of_the_last_success_turns_red_when_the_feed_quiet_alert_fires(
    dashboard: dict[str, Any],
) -> None:
    expr = shipped_alert("ElevateImportFeedQuiet")["expr"]
    found = re.search(r"\)\s*>\s*(\d+)\s*$", expr)
    assert found, expr
    steps = _override(panel_titled(dashboard, LAST_SUCCESS), "Age", "thresholds")["steps"]
    assert steps[-1] == {"color": "red", "value": float(found.group(1))}


# -- the stats follow every variable --------------------------------------------------------

TRACKED_STAT = "Tracked imports"


def test_every_stat_of_imports_now_follows_the_type_and_id_variables(
    dashboard: dict[str, Any],
) -> None:
    # The stats over weeks read aggregates, which have no id: they follow the type only.
    weeks = {p["title"] for p in row_panels(dashboard, WEEKS_ROW)}
    stats = [p for p in panels(dashboard) if p["type"] == "stat" and p["title"] not in weeks]
    assert {"Imports by status now", TRACKED_STAT} <= {p["title"] for p in stats}
    for panel in stats:
        for target in panel["targets"]:
            selectors = read_promql(target["expr"]).selectors
            assert selectors, panel["title"]
            for selector in selectors:
                # A total over all ids (elevate_import_tracked_imports) cannot be narrowed.
                assert "id" in CONTRACT_LABELS[selector.metric], (panel["title"], selector)
                assert selector.matchers.get("id") == ("=~", "$id"), (panel["title"], selector)
            typed = [s.matchers.get("type") for s in selectors]
            assert ("=~", "$type") in typed, panel["title"]


@pytest.mark.parametrize(
    ("type_", "id_", "expected"),
    [
        (".*", ".+", 4),  # All: answered, untyped (Admin API v4) and not yet answered
        ("ADS", ".+", 1),
        ("(ADS|PRODUCTS)", ".+", 2),  # an id not answered yet has no type to select
        (".*", "1003", 1),
        (".*", "(1001|1003)", 2),
        ("ADS", "1003", None),
        ("ADS", "1002", None),
    ],
)
def test_the_tracked_imports_stat_counts_the_selected_imports_answered_or_not(
    dashboard: dict[str, Any], tmp_path: Path, type_: str, id_: str, expected: int | None
) -> None:
    (target,) = panel_titled(dashboard, TRACKED_STAT)["targets"]
    status, info = "elevate_import_status", "elevate_import_info"
    first = "elevate_import_first_seen_timestamp_seconds"
    input_series = [
        # What the old stat read: the total, whatever the variables say.
        series("elevate_import_tracked_imports", "4x10"),
        series(first, "0x10", id="1001"),
        series(info, "1x10", id="1001", type="ADS", message="Running"),
        series(status, "1x10", id="1001", type="ADS", status="IN_PROGRESS"),
        series(first, "0x10", id="1002"),
        series(info, "1x10", id="1002", type="PRODUCTS", message="Boom"),
        series(status, "1x10", id="1002", type="PRODUCTS", status="FAILURE"),
        # Tracked, but Elevate has not answered yet: no status, no type.
        series(first, "0x10", id="1003"),
        # The Admin API v4 sends no type: the label is empty.
        series(first, "0x10", id="1004"),
        series(info, "1x10", id="1004", type="", message=""),
        series(status, "1x10", id="1004", type="", status="SUCCESS"),
    ]
    values = RANGE_VALUES | {"type": type_, "id": id_}
    found = [] if expected is None else [{"labels": "{}", "value": expected}]
    promtool_evaluates(
        input_series,
        [{"expr": substitute(target["expr"], values), "eval_time": "10m", "exp_samples": found}],
        tmp_path,
    )


def test_the_state_timeline_has_one_colour_per_status(dashboard: dict[str, Any]) -> None:
    timeline = next(p for p in panels(dashboard) if p["title"] == "Status over time")
    assert timeline["type"] == "state-timeline"
    options = _mapped(timeline["fieldConfig"]["defaults"]["mappings"])
    assert [o["text"] for _, o in sorted(options.items())][: len(STATUSES)] == list(STATUSES)
    assert len({o["color"] for o in options.values()}) == len(options)
    # The number each status is mapped from is the one the query multiplies it by.
    expr = timeline["targets"][0]["expr"]
    for code, option in options.items():
        if option["text"] in STATUSES:
            assert f'status="{option["text"]}"}} == 1) * {code}' in expr


def test_alert_annotations_come_from_the_elevate_ALERTS(dashboard: dict[str, Any]) -> None:
    (query,) = annotation_queries(dashboard)
    (selector,) = read_promql(query.expr).selectors
    assert selector.metric == "ALERTS"
    assert selector.matchers["alertname"] == ("=~", "Elevate.*")
    assert selector.matchers["alertstate"] == ("=", "firing")


def test_every_query_parses_in_prometheus(dashboard: dict[str, Any], tmp_path: Path) -> None:
    exprs = {q.where: substitute(q.expr, PARSE_VALUES) for q in panel_queries(dashboard)}
    exprs |= {q.where: substitute(q.expr, PARSE_VALUES) for q in annotation_queries(dashboard)}
    for variable in query_variables(dashboard):
        selector, _ = variable_query(variable)
        exprs[f"variable {variable['name']}"] = substitute(selector, PARSE_VALUES)
    promtool_parses(exprs, tmp_path)


def test_a_broken_query_is_caught_by_the_parse_check(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="dashboard_query_0"):
        promtool_parses({"broken": "sum by (id (elevate_import_up)"}, tmp_path)


def test_every_selector_carries_the_cluster_job_and_instance_matchers(
    dashboard: dict[str, Any],
) -> None:
    for query in panel_queries(dashboard) + annotation_queries(dashboard):
        for selector in read_promql(query.expr).selectors:
            assert selector.matchers.get("cluster") == ("=~", "$cluster"), query.where
            if selector.metric.startswith("elevate_import_proxy_"):
                # The standalone proxy is scraped under a job of its own, which the job and
                # instance variables (read from elevate_import_up) do not offer.
                assert not {"job", "instance"} & set(selector.matchers), query.where
                continue
            assert selector.matchers.get("job") == ("=~", "$job"), query.where
            instance = selector.matchers.get("instance")
            assert instance is not None, query.where
            assert instance[0] == "=~", query.where
            assert instance[1].startswith("$instance"), query.where


def test_rates_use_the_rate_interval(dashboard: dict[str, Any]) -> None:
    weeks = panel_queries({"panels": row_panels(dashboard, WEEKS_ROW)})
    for query in panel_queries(dashboard) + annotation_queries(dashboard):
        if query in weeks:
            continue
        reading = read_promql(query.expr)
        for selector in reading.selectors:
            if selector.function in {"rate", "increase", "irate"}:
                assert selector.range in RATE_RANGES, query.where
            elif selector.range is not None:
                assert selector.function, query.where
                assert selector.function.endswith("_over_time"), query.where
                assert selector.range in OVER_TIME_RANGES, query.where
        assert set(reading.ranges) <= RATE_RANGES | OVER_TIME_RANGES, query.where


def test_the_panels_over_weeks_count_per_day_over_the_last_30_days(
    dashboard: dict[str, Any],
) -> None:
    weeks = row_panels(dashboard, WEEKS_ROW)
    assert {p["title"] for p in weeks} == {
        SUCCESS_RATIO,
        FINISHED_PER_DAY,
        DURATIONS,
        QUEUE_TIMES,
        BUDGET,
        LAST_SUCCESS,
    }
    for panel in weeks:
        # Whatever the dashboard's range (6 hours by default), these look 30 days back, one
        # step a day: $__interval is the step, at least the panel's minimum interval.
        if panel["type"] != "table":
            assert (panel["timeFrom"], panel["interval"]) == ("30d", "1d"), panel["title"]
        for target in panel["targets"]:
            reading = read_promql(target["expr"])
            assert set(reading.ranges) <= WEEKS_RANGES, panel["title"]
            for selector in reading.selectors:
                assert selector.range is None or selector.function == "increase", panel["title"]
                # The aggregates outlive the per-id series; the type variable narrows them.
                assert "id" not in CONTRACT_LABELS[selector.metric], panel["title"]
                assert selector.matchers.get("type") == ("=~", "$type"), panel["title"]
    # A point a day: the range queries take increase() over $__interval, the budget over
    # the panel's whole range (instant).
    budget = panel_titled(dashboard, BUDGET)
    assert [t["instant"] for t in budget["targets"]] == [True]
    assert read_promql(budget["targets"][0]["expr"]).ranges == ("$__range", "$__range")
    for title in (SUCCESS_RATIO, FINISHED_PER_DAY, DURATIONS, QUEUE_TIMES):
        for target in panel_titled(dashboard, title)["targets"]:
            assert set(read_promql(target["expr"]).ranges) == {"$__interval"}, title


def test_the_duration_and_queue_panels_are_p50_and_p95_of_the_histograms_by_type(
    dashboard: dict[str, Any],
) -> None:
    for title, metric in (
        (DURATIONS, "elevate_import_duration_seconds_bucket"),
        (QUEUE_TIMES, "elevate_import_queue_seconds_bucket"),
    ):
        panel = panel_titled(dashboard, title)
        assert panel["fieldConfig"]["defaults"]["unit"] == "s"
        quantiles = []
        for target in panel["targets"]:
            match = re.match(r"histogram_quantile\((0\.\d+), sum by \(([\w, ]+)\) ", target["expr"])
            assert match, target["expr"]
            quantiles.append(match.group(1))
            assert {"type", "le"} <= set(match.group(2).split(", "))
            (selector,) = read_promql(target["expr"]).selectors
            assert selector.metric == metric
        assert quantiles == ["0.5", "0.95"]


def test_the_proxy_panels_are_in_a_collapsed_row_of_uploads_bytes_and_errors(
    dashboard: dict[str, Any],
) -> None:
    (row,) = [p for p in dashboard["panels"] if p["title"] == PROXY_ROW]
    assert row["type"] == "row"
    assert row["collapsed"] is True
    metrics = {
        selector.metric
        for query in panel_queries({"panels": row["panels"]})
        for selector in read_promql(query.expr).selectors
    }
    assert {
        "elevate_import_proxy_imports_total",
        "elevate_import_proxy_bytes_total",
        "elevate_import_proxy_upstream_errors_total",
        "elevate_import_proxy_registration_failures_total",
    } <= metrics
    assert all(metric.startswith("elevate_import_proxy_") for metric in metrics)
    # Nothing of the proxy outside its row.
    outside = [p for p in dashboard["panels"] if p is not row]
    assert "elevate_import_proxy_" not in json.dumps(outside)


def test_counters_appear_only_inside_rate_or_increase(dashboard: dict[str, Any]) -> None:
    for query in panel_queries(dashboard) + annotation_queries(dashboard):
        for selector in read_promql(query.expr).selectors:
            if selector.metric.endswith(("_total", "_bucket", "_count", "_sum")):
                assert selector.function in {"rate", "increase"}, (query.where, selector.metric)


def test_queries_name_only_metrics_and_labels_of_the_contract(dashboard: dict[str, Any]) -> None:
    for query in panel_queries(dashboard) + annotation_queries(dashboard):
        reading = read_promql(query.expr)
        labels_in_scope: set[str] = set(TARGET_LABELS)
        for selector in reading.selectors:
            if selector.metric in PROMETHEUS_LABELS:
                known = PROMETHEUS_LABELS[selector.metric]
            else:
                assert selector.metric in CONTRACT_LABELS, (query.where, selector.metric)
                known = CONTRACT_LABELS[selector.metric] | TARGET_LABELS
            if known is not None:
                # A matcher on a label the metric lacks matches nothing (or everything).
                assert set(selector.matchers) <= known, (query.where, selector.metric)
                labels_in_scope |= known
        if not any(s.metric == "ALERTS" for s in reading.selectors):
            assert reading.grouping_labels <= labels_in_scope, query.where


def test_the_promql_reader_finds_selectors_functions_and_labels() -> None:
    reading = read_promql(
        'sum by (code) (rate(a_total{job=~"$job", instance=~"x"}[5m])) '
        '/ on (job) group_left () b{job="j"} > bool 0.2 # comment'
    )
    assert [(s.metric, s.function, s.range) for s in reading.selectors] == [
        ("a_total", "rate", "5m"),
        ("b", None, None),
    ]
    assert reading.selectors[0].matchers == {"job": ("=~", "$job"), "instance": ("=~", "x")}
    assert reading.grouping_labels == {"code", "job"}
    topk = read_promql("topk by (id) (1, elevate_import_info)").selectors[0]
    assert topk.function == "topk"


def test_the_provisioning_examples_load_the_dashboard_from_a_folder_and_add_prometheus() -> None:
    provisioning = REPO / "grafana" / "provisioning"
    dashboards = yaml.safe_load((provisioning / "dashboards.yml").read_text(encoding="utf-8"))
    assert dashboards["apiVersion"] == 1
    (provider,) = dashboards["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
    datasources = yaml.safe_load((provisioning / "datasources.yml").read_text(encoding="utf-8"))
    assert datasources["apiVersion"] == 1
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus"
    # $__rate_interval is only right if Grafana knows how often the exporter is scraped.
    prometheus = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text("utf-8"))
    (job,) = prometheus["scrape_configs"]
    assert source["jsonData"]["timeInterval"] == job["scrape_interval"]
