#!/usr/bin/env python3
"""Make the Kubernetes resources that are copies of the alert rules and the dashboard.

    python deploy/generate.py                    # rewrite the generated files in the repository
    python deploy/generate.py --check            # change nothing; exit 1 if they are out of date
    python deploy/generate.py --runbook-base-url https://git.example/mirror/blob/main \\
        --slo-objective 0.995 --quiet-after 30h --metric-labels feed_name \\
        --output-dir my-monitoring/              # an operator's copy, with their values

The sources are prometheus/alerts.yml and grafana/elevate-imports.json. Their links (every
alert's runbook_url, the dashboard's links) start with DEFAULT_BASE_URL, the repository's
files on GitHub; --runbook-base-url puts another base in its place, where a copy of
README.md and docs/ is published for the on-call to reach.

Part of alerts.yml is itself made here, from the rule options (--metric-labels,
--quiet-after, --slo-objective, --slo-min-errors): everything below its GENERATED_MARKER
line (the success SLO and the "feed went quiet" alert), and the `group_left (...)` label
list on each line of the hand-written alerts that ends with OWNER_MARKER. The repository's
alerts.yml is what the defaults make, so `--check` also fails when someone edited a made
part by hand.

Without --output-dir alerts.yml (links left at the default base), the PrometheusRule and
the dashboard ConfigMap under deploy/kubernetes/ are written (tests/test_kubernetes.py fails
when they differ from what this makes with the defaults). With it, the directory gets
alerts.yml, elevate-imports.json and the two Kubernetes files, for Prometheus and Grafana
outside Kubernetes and for values of your own.

Standard library and PyYAML only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BASE_URL = "https://github.com/elevate-import-exporter/elevate-import-exporter/blob/main"
ALERTS = REPO / "prometheus" / "alerts.yml"
DASHBOARD = REPO / "grafana" / "elevate-imports.json"
COMPONENTS = REPO / "deploy" / "kubernetes" / "components"
RULE_FILE = COMPONENTS / "prometheus-operator" / "prometheusrule.yaml"
DASHBOARD_FILE = COMPONENTS / "grafana-dashboard" / "dashboard-configmap.yaml"
NAME = "elevate-import-exporter"
DASHBOARD_KEY = "elevate-imports.json"

# Characters that would break out of a YAML scalar, a Prometheus template ({{ }}) or an
# HTML attribute, or that a URL carries only percent-encoded.
_UNSAFE = re.compile(r'[\s"<>\\^`{|}\x00-\x1f\x7f]|[^\x00-\x7f]')
_RUNBOOK_LINE = re.compile(r"^(?P<head>\s*runbook_url:\s*)(?P<url>\S+)\s*$")


# Everything below this line of alerts.yml is made by rule_section().
GENERATED_MARKER = "# ---- Made by deploy/generate.py from its options: do not edit below. ----"
# A hand-written alert line ending so has its `group_left (...)` list set to --metric-labels.
OWNER_MARKER = "# OWNER LABELS"
_OWNER_LINE = re.compile(
    r"group_left \([^)]*\)(?= +" + re.escape(OWNER_MARKER) + r" *$)", re.MULTILINE
)

# The labels the exporter refuses for --imports.metric-labels (docs/contract.md): they are
# its own labels or Prometheus' target labels.
RESERVED_LABELS = frozenset(
    {"id", "type", "status", "le", "source", "label", "cluster", "job", "instance"}
)
MAX_METRIC_LABELS = 4
_LABEL_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")

# The success SLO's windows, and its multi-window multi-burn-rate alerts (the Google SRE
# workbook's): (burn rate, long window, short window). A burn rate of 1 spends exactly the
# error budget of 30 days in 30 days; 14.4 spends 2 % of it in one hour.
SLO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
PAGE_BURNS = ((14.4, "1h", "5m"), (6.0, "6h", "30m"))
TICKET_BURNS = ((3.0, "1d", "2h"), (1.0, "3d", "6h"))
ERROR_STATUSES = "FAILURE|ABORTED|NOT_FOUND"
SLO_BY = "cluster, job, type"


class GenerateError(Exception):
    """A source or a parameter that the generator cannot use; the message says which."""


def checked_base_url(text: str) -> str:
    """``text`` without a trailing slash, if it is an absolute http(s) URL fit for a base."""
    base = text.rstrip("/")
    if _UNSAFE.search(base):
        raise GenerateError(
            f"--runbook-base-url {text!r}: spaces, quotes, braces and non-ASCII characters "
            "must be percent-encoded"
        )
    parts = urlsplit(base)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise GenerateError(f"--runbook-base-url {text!r}: not an http:// or https:// URL")
    if "?" in base or "#" in base or parts.username or parts.password:
        raise GenerateError(
            f"--runbook-base-url {text!r}: a base takes no query, fragment or credentials"
        )
    return base


def rebase(url: str, base: str, where: str) -> str:
    prefix = DEFAULT_BASE_URL + "/"
    if not url.startswith(prefix):
        raise GenerateError(f"{where}: {url} does not start with {prefix}")
    return base + "/" + url[len(prefix) :]


# -- the rule options --------------------------------------------------------------------


@dataclass(frozen=True)
class RuleOptions:
    """The values the made parts of alerts.yml are built from; the defaults ship."""

    metric_labels: tuple[str, ...] = ("feed_name", "team")
    quiet_after: str = "26h"
    slo_objective: float = 0.99
    slo_min_errors: int = 2

    @property
    def quiet_seconds(self) -> int:
        return duration_seconds(self.quiet_after)


def checked_metric_labels(text: str) -> tuple[str, ...]:
    """The names of ``--metric-labels``, held to the exporter's own rules for its allowlist."""
    names = tuple(name.strip() for name in text.split(",")) if text.strip() else ()
    for name in names:
        if not _LABEL_NAME.fullmatch(name) or name.startswith("__") or len(name) > 64:
            raise GenerateError(f"--metric-labels {text!r}: {name!r} is not a label name")
        if name in RESERVED_LABELS:
            raise GenerateError(f"--metric-labels {text!r}: {name!r} is reserved")
    if len(set(names)) != len(names):
        raise GenerateError(f"--metric-labels {text!r}: a name is given twice")
    if len(names) > MAX_METRIC_LABELS:
        raise GenerateError(f"--metric-labels {text!r}: at most {MAX_METRIC_LABELS} names")
    return names


def duration_seconds(text: str) -> int:
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise GenerateError(f"--quiet-after {text!r}: not a duration such as 26h or 1d12h")
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise GenerateError(f"--quiet-after {text!r}: must be longer than 0s")
    return total


def checked_objective(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    # NaN fails both comparisons, so "nan" is refused with the rest.
    if not 0 < value < 1:
        raise GenerateError(f"--slo-objective {text!r}: must be a number between 0 and 1")
    return value


def checked_min_errors(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise GenerateError(f"--slo-min-errors {text!r}: must be a whole number of at least 1")
    return int(text)


# -- the alert rules ---------------------------------------------------------------------


# The made part of alerts.yml. <<name>> is a value from _render's arguments; everything
# else, Prometheus' {{ }} templates included, is copied as it is.
_SECTION = """<<marker>>
#
# Made with: --metric-labels '<<labels>>' --quiet-after <<quiet_after>>
#            --slo-objective <<objective>> --slo-min-errors <<min_errors>>
# To change them, see "Changing the generated rules" in docs/runbook.md.
#
# Import success SLO: of the imports that reach a final status, <<percent>> succeed.
# Errors are FAILURE, ABORTED and NOT_FOUND; the ratios are by cluster, job and type
# (instance is summed away, so two replicas watching the same imports count each
# import twice on both sides of the ratio and leave it unchanged; the owner labels
# are summed away too: per feed, imports are too few for a ratio to mean anything).
# A window without any finished import records nothing rather than 0/0.
#
# Imports are rare events. In an hour with one finished import, one failure is an
# error ratio of 100 %: 100 times a 1 % budget. So the burn-rate alerts also want
# at least <<min_errors>> failed imports in their long window (--slo-min-errors); a single
# failure is ElevateImportFailed's business, and a nightly feed that keeps failing
# is caught over the 3-day window.

  - name: elevate-import-slo
    rules:<<records>>
<<fast>><<slow>>
  # A feed that stops pushing starts no import, so no per-id alert can see it: the time
  # of the last success per type and owner labels (<<owners>>) can. The gauge is
  # restored from the exporter's store at start-up, so restarts and retention do not
  # reset it; "> 0" leaves out what never succeeded (the failure alerts cover it).
  - name: elevate-import-feeds
    rules:
      - alert: ElevateImportFeedQuiet
        expr: |
          time() - max by (<<quiet_by>>) (
            elevate_import_last_final_timestamp_seconds{status="SUCCESS"} > 0
          )
          > <<quiet_seconds>>
        labels:
          severity: warning
        annotations:
          summary: >-
            No Elevate import of a type or feed has succeeded for more than <<quiet_after>>
          description: >-
            The last successful {{ with $labels.type }}{{ . }} {{ end }}import{{ with
            $labels.feed_name }} of feed {{ . }}{{ end }} seen by {{ $labels.job }}{{ with
            $labels.cluster }} in cluster {{ . }}{{ end }} ended {{ $value | humanizeDuration }}
            ago, longer than the threshold of <<quiet_after>>: the feed may have stopped pushing.
          runbook_url: <<base>>/docs/runbook.md#elevateimportfeedquiet
"""

_RECORD = """
      - record: elevate_import:<<kind>>_ratio:rate<<window>>
        expr: |
          sum by (<<by>>) (rate(elevate_import_finished_total{<<matcher>>}[<<window>>]))
          /
          (sum by (<<by>>) (rate(elevate_import_finished_total[<<window>>])) > 0)"""

_BURN_ALERT = """
      - alert: <<name>>
        # The <<kind>> pair of the multi-window multi-burn-rate alerts:
        # <<pairs>>; at these rates the
        # 30-day error budget is gone in <<days>> days. The long window makes it
        # significant, the short one makes it resolve soon after the failures stop.
        # Imports are rare, so the short window is often empty: then the alert fires
        # for at most the short window after each failure while the long one burns.
        expr: |
<<expr>>
        labels:
          severity: <<severity>>
        annotations:
          summary: Elevate imports fail <<summary>>
          description: >-
            {{ $value | humanizePercentage }} of the {{ with $labels.type }}{{ . }}
            {{ end }}imports watched by {{ $labels.job }}{{ with $labels.cluster }} in
            cluster {{ . }}{{ end }} ended in FAILURE, ABORTED or NOT_FOUND over the last
            <<longs>>: more than <<rates>> times the <<budget>> that the <<percent>> success
            objective allows, with at least <<min_errors>> failed imports.
          runbook_url: <<base>>/docs/runbook.md#<<anchor>>
"""

_BURN_CLAUSE = """          (
            elevate_import:error_ratio:rate<<long>> > <<threshold>>
            and elevate_import:error_ratio:rate<<short>> > <<threshold>>
            and sum by (<<by>>) (
              increase(elevate_import_finished_total{<<errors>>}[<<long>>])
            ) > <<floor>>
          )"""


def _render(template: str, **values: object) -> str:
    return re.sub(r"<<(\w+)>>", lambda match: str(values[match[1]]), template)


def _percent(ratio: float) -> str:
    return f"{ratio * 100:g}%"


def _burn_alert(
    name: str, severity: str, burns: tuple[tuple[float, str, str], ...], options: RuleOptions
) -> str:
    objective = options.slo_objective
    kind, summary = (
        ("page", "fast enough to spend a month's error budget in days")
        if severity == "critical"
        else ("ticket", "more often than their success objective allows")
    )
    clauses = [
        _render(
            _BURN_CLAUSE,
            long=long,
            short=short,
            threshold=f"({burn:g} * (1 - {objective!r}))",
            by=SLO_BY,
            errors=f'status=~"{ERROR_STATUSES}"',
            # Counts are extrapolated to the window's edges: "at least N" is "more than
            # N - 0.5", which one failure never reaches and N failures always do.
            floor=f"{options.slo_min_errors - 0.5:g}",
        )
        for burn, long, short in burns
    ]
    return _render(
        _BURN_ALERT,
        name=name,
        anchor=name.lower(),
        kind=kind,
        severity=severity,
        summary=summary,
        pairs=" or ".join(f"{b:g}x over {long} and {short}" for b, long, short in burns),
        days=" or ".join(f"{30 / b:.3g}" for b, _, _ in burns),
        longs=" or ".join(long for _, long, _ in burns),
        rates=" or ".join(f"{b:g}" for b, _, _ in burns),
        expr="\n          or\n".join(clauses),
        budget=_percent(1 - objective),
        percent=_percent(objective),
        min_errors=options.slo_min_errors,
        base=DEFAULT_BASE_URL,
    )


def rule_section(options: RuleOptions) -> str:
    """The made part of alerts.yml: the success SLO and the "feed went quiet" alert."""
    records = "".join(
        _render(_RECORD, kind=kind, window=window, by=SLO_BY, matcher=matcher)
        for window in SLO_WINDOWS
        for kind, matcher in (
            ("error", f'status=~"{ERROR_STATUSES}"'),
            ("success", 'status="SUCCESS"'),
        )
    )
    return _render(
        _SECTION,
        marker=GENERATED_MARKER,
        labels=",".join(options.metric_labels),
        owners=", ".join(options.metric_labels) or "none",
        quiet_after=options.quiet_after,
        quiet_seconds=options.quiet_seconds,
        quiet_by=", ".join(("cluster", "job", "type", *options.metric_labels)),
        objective=repr(options.slo_objective),
        percent=_percent(options.slo_objective),
        min_errors=options.slo_min_errors,
        records=records,
        fast=_burn_alert("ElevateImportErrorBudgetFastBurn", "critical", PAGE_BURNS, options),
        slow=_burn_alert("ElevateImportErrorBudgetSlowBurn", "warning", TICKET_BURNS, options),
        base=DEFAULT_BASE_URL,
    )


def alerts_source(options: RuleOptions) -> str:
    """alerts.yml as the options make it, links at the default base."""
    text = ALERTS.read_text(encoding="utf-8")
    head, marker, _ = text.partition(GENERATED_MARKER)
    if not marker:
        raise GenerateError(f"{ALERTS.name}: no line {GENERATED_MARKER!r}")
    owners = f"group_left ({', '.join(options.metric_labels)})"
    head, count = _OWNER_LINE.subn(owners, head)
    if count == 0:
        raise GenerateError(f"{ALERTS.name}: no `group_left (...) {OWNER_MARKER}` line")
    return head + rule_section(options)


def alert_groups(base: str, options: RuleOptions) -> list[dict[str, Any]]:
    """The rule groups of alerts.yml, each runbook_url under ``base``."""
    groups: list[dict[str, Any]] = yaml.safe_load(alerts_source(options))["groups"]
    for group in groups:
        for rule in group["rules"]:
            annotations = rule.get("annotations", {})
            if "runbook_url" in annotations:
                where = f"{ALERTS.name}, {rule.get('alert', rule.get('record'))}"
                annotations["runbook_url"] = rebase(annotations["runbook_url"], base, where)
    return groups


def alerts_file(base: str, options: RuleOptions) -> str:
    """alerts.yml with the new base, comments and layout kept: only runbook_url lines change."""
    lines = []
    for number, line in enumerate(alerts_source(options).splitlines(True), 1):
        match = _RUNBOOK_LINE.match(line)
        if match:
            url = rebase(match["url"], base, f"{ALERTS.name}:{number}")
            line = f"{match['head']}{url}\n"
        lines.append(line)
    text = "".join(lines)
    if yaml.safe_load(text)["groups"] != alert_groups(base, options):
        raise GenerateError(f"{ALERTS.name}: a runbook_url is not on a line of its own")
    return text


# -- the dashboard -----------------------------------------------------------------------


def _link_lists(node: Any) -> Iterator[list[Any]]:
    """Every list of links: the dashboard's, a panel's, and data links in field config."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "links" and isinstance(value, list):
                yield value
            yield from _link_lists(value)
        if node.get("id") == "links" and isinstance(node.get("value"), list):
            yield node["value"]
    elif isinstance(node, list):
        for item in node:
            yield from _link_lists(item)


def dashboard(base: str, options: RuleOptions | None = None) -> dict[str, Any]:
    options = options or RuleOptions()
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for links in _link_lists(loaded):
        for link in links:
            if isinstance(link, dict) and "url" in link:
                where = f"{DASHBOARD.name}, link {link.get('title', '')!r}"
                link["url"] = rebase(link["url"], base, where)
    # The error budget panel and the age of the last success state the rules' numbers:
    # the same options set them, so the dashboard never contradicts the alerts.
    for variable in loaded.get("templating", {}).get("list", []):
        if variable.get("name") == "objective" and variable.get("type") == "constant":
            variable["query"] = repr(options.slo_objective)
    for step in _quiet_steps(loaded):
        step["value"] = options.quiet_seconds
    return loaded


def _quiet_steps(node: Any) -> Iterator[dict[str, Any]]:
    """The red threshold step of each "Age" column of the last-success table."""
    if isinstance(node, dict):
        if str(node.get("title", "")).startswith("Last success"):
            for override in node.get("fieldConfig", {}).get("overrides", []):
                if override.get("matcher", {}).get("options") != "Age":
                    continue
                for prop in override.get("properties", []):
                    if prop.get("id") == "thresholds":
                        yield from (s for s in prop["value"]["steps"] if s.get("color") == "red")
        for value in node.values():
            yield from _quiet_steps(value)
    elif isinstance(node, list):
        for item in node:
            yield from _quiet_steps(item)


def dashboard_file(base: str, options: RuleOptions | None = None) -> str:
    # The layout of the committed file: two-space indent, a final line break.
    return json.dumps(dashboard(base, options), indent=2, ensure_ascii=False) + "\n"


# -- the Kubernetes objects --------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL, the dashboard's JSON) as literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def _document(source: Path, content: dict[str, Any]) -> str:
    body = yaml.dump(content, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    header = (
        f"# Generated by deploy/generate.py from {source.relative_to(REPO)}: do not edit,\n"
        "# run `python deploy/generate.py` instead.\n"
    )
    return header + body


def _metadata(name: str, component: str, **labels: str) -> dict[str, Any]:
    return {
        "name": name,
        "labels": {
            "app.kubernetes.io/name": NAME,
            "app.kubernetes.io/component": component,
            **labels,
        },
    }


def prometheus_rule(base: str, options: RuleOptions) -> str:
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": _metadata(NAME, "alerts"),
        "spec": {"groups": alert_groups(base, options)},
    }
    return _document(ALERTS, rule)


def dashboard_config_map(base: str, options: RuleOptions | None = None) -> str:
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            # Grafana's dashboard sidecar loads every ConfigMap with this label; with its
            # folderAnnotation set to grafana_folder it files the dashboard there.
            **_metadata(f"{NAME}-dashboard", "dashboard", grafana_dashboard="1"),
            "annotations": {"grafana_folder": "Elevate"},
        },
        "data": {DASHBOARD_KEY: dashboard_file(base, options)},
    }
    return _document(DASHBOARD, config_map)


def outputs(base: str, output_dir: Path | None, options: RuleOptions) -> dict[Path, str]:
    if output_dir is None:
        # alerts.yml is also the source: its links stay at the default base.
        return {
            ALERTS: alerts_file(DEFAULT_BASE_URL, options),
            RULE_FILE: prometheus_rule(base, options),
            DASHBOARD_FILE: dashboard_config_map(base, options),
        }
    return {
        output_dir / ALERTS.name: alerts_file(base, options),
        output_dir / DASHBOARD.name: dashboard_file(base, options),
        output_dir / RULE_FILE.name: prometheus_rule(base, options),
        output_dir / DASHBOARD_FILE.name: dashboard_config_map(base, options),
    }


# -- the command -------------------------------------------------------------------------


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python deploy/generate.py",
        description="Make the success SLO and quiet-feed part of prometheus/alerts.yml "
        "from the rule options, and the PrometheusRule and the Grafana dashboard ConfigMap "
        "from prometheus/alerts.yml and grafana/elevate-imports.json.",
    )
    parser.add_argument(
        "--runbook-base-url",
        default=DEFAULT_BASE_URL,
        metavar="URL",
        help="where README.md and docs/runbook.md are published; every runbook_url and "
        f"dashboard link starts with it (default: {DEFAULT_BASE_URL})",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        metavar="DIR",
        help="write alerts.yml, elevate-imports.json and the two Kubernetes files here "
        "instead of the repository's generated files",
    )
    defaults = RuleOptions()
    parser.add_argument(
        "--metric-labels",
        default=",".join(defaults.metric_labels),
        metavar="NAME,...",
        help="the exporter's --imports.metric-labels that the per-import alerts join from "
        "elevate_import_labels and the quiet alert groups by; '' for none "
        f"(default: {','.join(defaults.metric_labels)})",
    )
    parser.add_argument(
        "--quiet-after",
        default=defaults.quiet_after,
        metavar="DURATION",
        help="ElevateImportFeedQuiet fires when a type or feed has had no successful import "
        f"for longer than this, e.g. 26h, 1d12h, 90m (default: {defaults.quiet_after})",
    )
    parser.add_argument(
        "--slo-objective",
        default=repr(defaults.slo_objective),
        metavar="RATIO",
        help="the share of finished imports that should succeed, between 0 and 1; sets "
        f"every burn-rate threshold (default: {defaults.slo_objective!r})",
    )
    parser.add_argument(
        "--slo-min-errors",
        default=str(defaults.slo_min_errors),
        metavar="N",
        help="the burn-rate alerts also want at least N failed imports in their long "
        f"window; 1 turns this off (default: {defaults.slo_min_errors})",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 naming each file that differs from what would be written",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    try:
        base = checked_base_url(args.runbook_base_url)
        options = RuleOptions(
            metric_labels=checked_metric_labels(args.metric_labels),
            quiet_after=args.quiet_after,
            slo_objective=checked_objective(args.slo_objective),
            slo_min_errors=checked_min_errors(args.slo_min_errors),
        )
        duration_seconds(options.quiet_after)  # refused here, before anything is made
        files = outputs(base, args.output_dir, options)
    except (GenerateError, OSError, yaml.YAMLError, json.JSONDecodeError) as exc:
        print(f"generate.py: {exc}", file=sys.stderr)
        return 2
    stale = [
        path
        for path, text in files.items()
        if not path.is_file() or path.read_text(encoding="utf-8") != text
    ]
    if args.check:
        for path in stale:
            print(f"out of date: {path} (run `python deploy/generate.py`)", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[path], encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
