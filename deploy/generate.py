#!/usr/bin/env python3
"""Make the Kubernetes resources that are copies of the alert rules and the dashboard.

    python deploy/generate.py                    # rewrite the generated files in the repository
    python deploy/generate.py --check            # change nothing; exit 1 if they are out of date
    python deploy/generate.py --runbook-base-url https://git.example/mirror/blob/main \\
        --output-dir my-monitoring/              # an operator's copy, with their links

The sources are prometheus/alerts.yml and grafana/elevate-imports.json. Their links (every
alert's runbook_url, the dashboard's links) start with DEFAULT_BASE_URL, the repository's
files on GitHub; --runbook-base-url puts another base in its place, where a copy of
README.md and docs/ is published for the on-call to reach. Nothing else changes.

Without --output-dir the PrometheusRule and the dashboard ConfigMap under deploy/kubernetes/
are written (tests/test_kubernetes.py fails when they differ from what this makes). With
it, the directory also gets alerts.yml and elevate-imports.json with the new links, for
Prometheus and Grafana outside Kubernetes.

Standard library and PyYAML only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
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


# -- the alert rules ---------------------------------------------------------------------


def alert_groups(base: str) -> list[dict[str, Any]]:
    """The rule groups of alerts.yml, each runbook_url under ``base``."""
    groups: list[dict[str, Any]] = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    for group in groups:
        for rule in group["rules"]:
            annotations = rule.get("annotations", {})
            if "runbook_url" in annotations:
                where = f"{ALERTS.name}, {rule.get('alert', rule.get('record'))}"
                annotations["runbook_url"] = rebase(annotations["runbook_url"], base, where)
    return groups


def alerts_file(base: str) -> str:
    """alerts.yml with the new base, comments and layout kept: only runbook_url lines change."""
    lines = []
    for number, line in enumerate(ALERTS.read_text(encoding="utf-8").splitlines(True), 1):
        match = _RUNBOOK_LINE.match(line)
        if match:
            url = rebase(match["url"], base, f"{ALERTS.name}:{number}")
            line = f"{match['head']}{url}\n"
        lines.append(line)
    text = "".join(lines)
    if yaml.safe_load(text)["groups"] != alert_groups(base):
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


def dashboard(base: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for links in _link_lists(loaded):
        for link in links:
            if isinstance(link, dict) and "url" in link:
                where = f"{DASHBOARD.name}, link {link.get('title', '')!r}"
                link["url"] = rebase(link["url"], base, where)
    return loaded


def dashboard_file(base: str) -> str:
    # The layout of the committed file: two-space indent, a final line break.
    return json.dumps(dashboard(base), indent=2, ensure_ascii=False) + "\n"


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


def prometheus_rule(base: str) -> str:
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": _metadata(NAME, "alerts"),
        "spec": {"groups": alert_groups(base)},
    }
    return _document(ALERTS, rule)


def dashboard_config_map(base: str) -> str:
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            # Grafana's dashboard sidecar loads every ConfigMap with this label; with its
            # folderAnnotation set to grafana_folder it files the dashboard there.
            **_metadata(f"{NAME}-dashboard", "dashboard", grafana_dashboard="1"),
            "annotations": {"grafana_folder": "Elevate"},
        },
        "data": {DASHBOARD_KEY: dashboard_file(base)},
    }
    return _document(DASHBOARD, config_map)


def outputs(base: str, output_dir: Path | None) -> dict[Path, str]:
    if output_dir is None:
        return {RULE_FILE: prometheus_rule(base), DASHBOARD_FILE: dashboard_config_map(base)}
    return {
        output_dir / ALERTS.name: alerts_file(base),
        output_dir / DASHBOARD.name: dashboard_file(base),
        output_dir / RULE_FILE.name: prometheus_rule(base),
        output_dir / DASHBOARD_FILE.name: dashboard_config_map(base),
    }


# -- the command -------------------------------------------------------------------------


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python deploy/generate.py",
        description="Make the PrometheusRule and the Grafana dashboard ConfigMap from "
        "prometheus/alerts.yml and grafana/elevate-imports.json.",
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
        files = outputs(base, args.output_dir)
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
