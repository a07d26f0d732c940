"""Several Elevate clusters: one exporter each, told apart by the target label ``cluster``.

The exporter does not know which cluster it watches; Prometheus gives each target its
``cluster`` label, from the static ``labels`` of prometheus/prometheus.yml or, in
Kubernetes, from a label of each exporter's Service that the ServiceMonitor of
deploy/kubernetes/examples/two-clusters/ relabels to ``cluster``.

First the example overlay, rendered and validated as tests/test_kubernetes.py does with
the others. Then two simulated clusters, production and staging, that both know import
7000 (a success in production, a failure in staging; staging also has an id that gets a
5xx every time), two exporter processes and a real Prometheus with the shipped rules
(only their ``for`` shortened). Prometheus runs twice: with the scrape config of
prometheus/prometheus.yml, and with the overlay's ServiceMonitor relabelings applied to
the labels Kubernetes discovery would give each Service's target; and once more with
staging's exporter not running.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

import tests.test_kubernetes as manifests
from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from tests.support import (
    answers_200,
    free_port,
    need_tool,
    prometheus_api,
    stop_process,
    wait_until,
)
from tests.test_dashboard import (
    CURRENT_TABLE,
    FAILED_TABLE,
    PARSE_VALUES,
    annotation_queries,
    load_dashboard,
    panel_queries,
    panel_titled,
    query_variables,
    substitute,
    variable_query,
)
from tests.test_kubernetes import (
    KINDS,
    KUBERNETES,
    OPERATOR_KINDS,
    PROMETHEUS_PODS,
    Object,
    admitted,
    container,
    env,
    exporter_down_job,
    one,
    render,
    validate_core,
    validate_custom,
    volume_of_path,
)
from tests.test_prometheus_end_to_end import rules_with_short_for

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = KUBERNETES / "examples" / "two-clusters"
PROMETHEUS_CONFIG = REPO / "prometheus" / "prometheus.yml"
# The overlay's label on each exporter's objects, which the ServiceMonitor turns into
# the target label `cluster`.
CLUSTER_LABEL = "elevate-import-exporter/cluster"
CLUSTERS = ("production", "staging")
JOB = "elevate-import-exporter"
WAIT = 60.0

# The same id in both clusters: Elevate's ids are per cluster.
SHARED = "7000"
RUNNING = "7001"  # production's, still in progress
SILENT = "7002"  # staging's, answered with a 5xx every time
FAILS_IN = "staging"
MESSAGE = "Import failed: attribute 'price' is not a number on line 17."


# -- the example overlay -----------------------------------------------------------------


@cache
def _rendered() -> tuple[Object, ...]:
    return tuple(render(EXAMPLE))


def rendered() -> list[Object]:
    return copy.deepcopy(list(_rendered()))


def of_cluster(objects: list[Object], cluster: str) -> list[Object]:
    return [o for o in objects if o["metadata"].get("labels", {}).get(CLUSTER_LABEL) == cluster]


def test_the_two_cluster_example_renders_an_exporter_per_cluster_and_one_rule_set() -> None:
    objects = rendered()
    assert {o["kind"] for o in objects} == KINDS | OPERATOR_KINDS | {"Namespace"}
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names))
    namespace = one(objects, "Namespace")["metadata"]["name"]
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {
        namespace
    }
    for cluster in CLUSTERS:
        own = of_cluster(objects, cluster)
        kinds = sorted(o["kind"] for o in own)
        assert kinds == sorted([*KINDS, "ConfigMap"]), cluster  # settings and ids
        assert all(f"-{cluster}" in o["metadata"]["name"] for o in own), cluster
    # Once for both exporters: two rule sets would fire every alert twice.
    assert sorted(o["kind"] for o in objects if o["kind"] in OPERATOR_KINDS) == sorted(
        OPERATOR_KINDS
    )
    dashboards = [o for o in objects if o["metadata"].get("labels", {}).get("grafana_dashboard")]
    assert len(dashboards) == 1


def test_every_object_of_the_two_cluster_example_validates_against_its_schema() -> None:
    for obj in rendered():
        try:
            if obj["kind"] in OPERATOR_KINDS:
                validate_custom(obj)
            else:
                validate_core(obj)
        except Exception as exc:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']}: {exc}")


def test_a_misspelt_relabeling_field_fails_the_crd_check() -> None:
    monitor = one(rendered(), "ServiceMonitor")
    (relabeling,) = monitor["spec"]["endpoints"][0]["relabelings"]
    relabeling["targetlabel"] = relabeling.pop("targetLabel")
    with pytest.raises(jsonschema.ValidationError):
        validate_custom(monitor)


def test_each_exporter_has_its_own_elevate_cluster_key_ids_and_store() -> None:
    objects = rendered()
    seen: dict[str, set[str]] = {"cluster": set(), "secret": set(), "ids": set(), "claim": set()}
    for cluster in CLUSTERS:
        own = of_cluster(objects, cluster)
        variables = env(own)  # from this cluster's own ConfigMap
        seen["cluster"].add(variables["ELEVATE_CLUSTER_ID"])
        assert "ELEVATE_BASE_URL" not in variables
        secret = volume_of_path(own, variables["ELEVATE_API_KEY_FILE"])[1]["secret"]
        assert secret["secretName"] == f"elevate-import-exporter-api-key-{cluster}"
        seen["secret"].add(secret["secretName"])
        ids = volume_of_path(own, variables["ELEVATE_IMPORT_IDS_FILE"])[1]["configMap"]["name"]
        one(own, "ConfigMap", ids)
        seen["ids"].add(ids)
        claim = volume_of_path(own, variables["ELEVATE_EXPORTER_STORAGE_PATH"])[1]
        one(own, "PersistentVolumeClaim", claim["persistentVolumeClaim"]["claimName"])
        seen["claim"].add(claim["persistentVolumeClaim"]["claimName"])
        assert container(own)["args"] == ["run"]
    # Two clusters, two keys, two id lists, and two stores (one writer each).
    assert {name: len(values) for name, values in seen.items()} == dict.fromkeys(seen, 2)


# The checks tests/test_kubernetes.py makes of every other rendering's exporter. Its
# checks of the Secret's and the ids ConfigMap's names expect them without a suffix;
# test_each_exporter_has_its_own_elevate_cluster_key_ids_and_store covers those here.
EXPORTER_CHECKS = [
    getattr(manifests, f"test_{name}")
    for name in (
        "the_pod_runs_as_the_images_user_non_root_with_a_read_only_root_and_no_capabilities",
        "the_image_is_the_released_version",
        "the_probes_ask_healthy_and_ready_on_the_named_port_10025",
        "the_request_covers_a_thousand_ids_and_the_limit_ten_thousand_and_the_proxy",
        "every_variable_and_flag_set_is_one_the_exporter_reads",
        "the_store_is_on_the_claim_at_data_with_one_replica_that_is_recreated",
        "the_service_reaches_the_pod_on_its_named_ports",
        "the_network_policy_names_only_ports_the_pod_has",
    )
]


@pytest.mark.parametrize("check", EXPORTER_CHECKS, ids=lambda check: check.__name__[5:])
@pytest.mark.parametrize("cluster", CLUSTERS)
def test_each_clusters_exporter_passes_the_checks_of_every_other_overlay(
    cluster: str, check: Any
) -> None:
    check(of_cluster(rendered(), cluster))


def pod_labels(objects: list[Object]) -> dict[str, str]:
    labels: dict[str, str] = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def test_each_service_deployment_and_policy_selects_only_its_own_clusters_pod() -> None:
    objects = rendered()
    production, staging = (of_cluster(objects, c) for c in CLUSTERS)
    for own, other in ((production, staging), (staging, production)):
        selectors = {
            "Deployment": one(own, "Deployment")["spec"]["selector"]["matchLabels"],
            # A Service reaching both pods would give one cluster's series the other's label.
            "Service": one(own, "Service")["spec"]["selector"],
            "NetworkPolicy": one(own, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
        }
        for kind, selector in selectors.items():
            assert selector.items() <= pod_labels(own).items(), kind
            assert not selector.items() <= pod_labels(other).items(), kind
        # The cluster label stays out of the rule's `from`: it still admits Prometheus.
        assert admitted(one(own, "NetworkPolicy")) == {PROMETHEUS_PODS: {"http"}}


def discovered_label(name: str) -> str:
    """How Prometheus' Kubernetes discovery names a label of a target's Service."""
    return "__meta_kubernetes_service_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", name)


def test_one_service_monitor_scrapes_both_services_and_relabels_their_label_to_cluster() -> None:
    objects = rendered()
    monitor = one(objects, "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    (relabeling,) = endpoint["relabelings"]
    assert relabeling["sourceLabels"] == [discovered_label(CLUSTER_LABEL)]
    assert relabeling["targetLabel"] == "cluster"
    for cluster in CLUSTERS:
        labels = one(of_cluster(objects, cluster), "Service")["metadata"]["labels"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert labels[CLUSTER_LABEL] == cluster
        # Both exporters are the job ElevateExporterDown watches; `cluster` tells them apart.
        assert labels[monitor["spec"]["jobLabel"]] == exporter_down_job()
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


# -- two clusters, two exporters, one Prometheus ------------------------------------------


def shipped_scrape_config() -> dict[str, Any]:
    (job,) = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))["scrape_configs"]
    found: dict[str, Any] = job
    return found


def test_the_example_scrape_config_labels_each_exporter_with_its_cluster() -> None:
    job = shipped_scrape_config()
    assert job["job_name"] == JOB
    groups = job["static_configs"]
    assert [group["labels"] for group in groups] == [{"cluster": c} for c in CLUSTERS]
    targets = [target for group in groups for target in group["targets"]]
    assert len(targets) == len(set(targets)) == len(CLUSTERS)


def simulated_imports(cluster: str) -> list[ScriptedImport]:
    if cluster == FAILS_IN:
        return [
            ScriptedImport(
                SHARED,
                (Step("WAITING", seconds=1.0), Step("FAILURE", message=MESSAGE)),
                type="PRODUCTS",
            )
        ]
    return [
        ScriptedImport(SHARED, (Step("IN_PROGRESS", queries=2), Step("SUCCESS")), type="PRODUCTS"),
        ScriptedImport(RUNNING, (Step("IN_PROGRESS"),), type="ADS"),
    ]


def cluster_ids(cluster: str) -> tuple[str, ...]:
    return (SHARED, SILENT) if cluster == FAILS_IN else (SHARED, RUNNING)


@dataclass
class Exporter:
    cluster: str
    address: str
    simulator: Simulator
    log: Path


def start_exporter(exporter: Exporter, key: str, cwd: Path) -> subprocess.Popen[bytes]:
    # Only the settings given here: none of the caller's ELEVATE_* variables.
    variables = {k: v for k, v in os.environ.items() if not k.startswith("ELEVATE_")}
    variables["ELEVATE_API_KEY"] = key
    with exporter.log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "elevate_import_exporter", "run"]
            + ["--elevate.base-url", exporter.simulator.url]
            + ["--elevate.min-poll-interval", "1s", "--elevate.retries", "0"]
            + ["--storage.path", ""]
            + [f"--elevate.import-id={i}" for i in cluster_ids(exporter.cluster)]
            + ["--web.listen-address", exporter.address],
            env=variables,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )


@pytest.fixture(scope="module")
def exporters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Exporter]]:
    """Production's and staging's simulator and exporter, each with a key of its own."""
    tmp = tmp_path_factory.mktemp("clusters")
    with ExitStack() as stack:
        found: dict[str, Exporter] = {}
        for cluster in CLUSTERS:
            simulator = Simulator(
                simulated_imports(cluster),
                api_key=f"{cluster}-key-3c1e",
                fail_ids=[SILENT] if cluster == FAILS_IN else [],
            )
            stack.enter_context(simulator)
            exporter = Exporter(
                cluster, f"127.0.0.1:{free_port()}", simulator, tmp / f"exporter-{cluster}.log"
            )
            # Unwound in reverse: each exporter stops before its simulator.
            stack.callback(stop_process, start_exporter(exporter, simulator.api_key, tmp))
            found[cluster] = exporter
        for exporter in found.values():
            url = f"http://{exporter.address}/-/ready"
            wait_until(partial(answers_200, url), timeout=WAIT, what=f"{url} ready")
        yield found


def from_prometheus_yml(exporters: dict[str, Exporter]) -> dict[str, Any]:
    """The shipped job, each group's target moved to the exporter of its cluster."""
    job = shipped_scrape_config()
    for group in job["static_configs"]:
        group["targets"] = [exporters[group["labels"]["cluster"]].address]
    # The scrapes at the global second, not the shipped minute.
    del job["scrape_interval"], job["scrape_timeout"]
    return job


def snake_case(name: str) -> str:
    return re.sub(r"[A-Z]", lambda upper: "_" + upper[0].lower(), name)


def from_service_monitor(exporters: dict[str, Exporter]) -> dict[str, Any]:
    """The overlay's ServiceMonitor for Services at the exporters' addresses.

    Kubernetes discovery gives each target its Service's labels as meta labels; static
    targets carry them here, and Prometheus applies the ServiceMonitor's relabelings as
    the Prometheus Operator writes them into its config (its own relabelings, which set
    namespace, service, pod and the job from jobLabel, are left out: the job is set here).
    """
    objects = rendered()
    monitor = one(objects, "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    groups = []
    services = [o for o in objects if o["kind"] == "Service"]
    for service in services:
        labels = service["metadata"]["labels"]
        groups.append(
            {
                "targets": [exporters[labels[CLUSTER_LABEL]].address],
                "labels": {discovered_label(k): v for k, v in labels.items()},
            }
        )
    relabelings = [
        {snake_case(key): value for key, value in step.items()} for step in endpoint["relabelings"]
    ]
    (job,) = {s["metadata"]["labels"][monitor["spec"]["jobLabel"]] for s in services}
    return {
        "job_name": job,
        "metrics_path": endpoint["path"],
        "static_configs": groups,
        "relabel_configs": relabelings,
    }


@dataclass
class Prometheus:
    url: str
    exporters: dict[str, Exporter]
    logs: list[Path]

    def api(self, path: str, **params: str) -> Any:
        return prometheus_api(self.url, path, **params)

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def firing(self, alertname: str) -> list[dict[str, str]]:
        alerts = self.api("alerts")["alerts"]
        return [
            a["labels"]
            for a in alerts
            if a["labels"]["alertname"] == alertname and a["state"] == "firing"
        ]

    def wait(self, probe: Any, what: str) -> Any:
        try:
            return wait_until(probe, timeout=WAIT, interval=0.5, what=what)
        except pytest.fail.Exception:
            tails = "\n".join(
                f"--- {p.name}:\n" + "\n".join(p.read_text(errors="replace").splitlines()[-12:])
                for p in self.logs
            )
            pytest.fail(f"timed out after {WAIT}s waiting for {what}\n{tails}")


SCRAPE_CONFIGS = {"prometheus.yml": from_prometheus_yml, "ServiceMonitor": from_service_monitor}


@contextmanager
def running_prometheus(
    tmp: Path, job: dict[str, Any], exporters: dict[str, Exporter]
) -> Iterator[Prometheus]:
    """A Prometheus with the shipped rules (their `for` shortened) and this one job."""
    binary = need_tool("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules_with_short_for(tmp))],
        "scrape_configs": [job],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    log = tmp / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp,
        )
    try:
        ready = Prometheus(
            f"http://127.0.0.1:{port}", exporters, [log, *(e.log for e in exporters.values())]
        )
        ready.wait(lambda: answers_200(f"{ready.url}/-/ready"), "Prometheus ready")
        yield ready
    finally:
        stop_process(process)


@pytest.fixture(scope="module", params=list(SCRAPE_CONFIGS))
def prometheus(
    request: pytest.FixtureRequest,
    exporters: dict[str, Exporter],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Prometheus]:
    tmp = tmp_path_factory.mktemp("prometheus")
    with running_prometheus(tmp, SCRAPE_CONFIGS[request.param](exporters), exporters) as ready:
        yield ready


def by_cluster(result: list[dict[str, Any]], label: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for sample in result:
        cluster = sample["metric"].get("cluster", "")
        assert cluster not in found, f"two series of cluster {cluster!r}: {result}"
        found[cluster] = sample["metric"][label]
    return found


def test_each_exporters_target_and_up_carry_its_cluster(prometheus: Prometheus) -> None:
    expected = {c: e.address for c, e in prometheus.exporters.items()}

    def both_up() -> dict[str, str] | None:
        found = by_cluster(prometheus.query(f'up{{job="{JOB}"}} == 1'), "instance")
        return found if len(found) == len(expected) else None

    assert prometheus.wait(both_up, "both targets up") == expected
    # And the exporter's own series, without a join.
    found = by_cluster(prometheus.query("elevate_import_up"), "instance")
    assert found == expected


def test_the_same_import_id_in_two_clusters_shows_as_two_imports_apart(
    prometheus: Prometheus,
) -> None:
    query = f'elevate_import_status{{id="{SHARED}", status=~"SUCCESS|FAILURE"}} == 1'

    def both_final() -> dict[str, str] | None:
        found = by_cluster(prometheus.query(query), "status")
        return found if len(found) == len(CLUSTERS) else None

    statuses = prometheus.wait(both_final, f"{SHARED} to end in both clusters")
    assert statuses == {"production": "SUCCESS", "staging": "FAILURE"}
    tracked = prometheus.query("sum by (cluster) (elevate_import_tracked_imports)")
    assert {s["metric"]["cluster"]: s["value"][1] for s in tracked} == dict.fromkeys(CLUSTERS, "2")
    running = prometheus.query(f'elevate_import_status{{id="{RUNNING}", status="IN_PROGRESS"}}')
    assert [s["metric"]["cluster"] for s in running] == ["production"]


def test_the_dashboards_cluster_variable_offers_both_clusters(prometheus: Prometheus) -> None:
    variables = {v["name"]: v for v in query_variables(load_dashboard())}
    assert "cluster" in variables, "the dashboard has no `cluster` variable"
    selector, label = variable_query(variables["cluster"])
    assert label == "cluster"

    def offered() -> set[str] | None:
        series = prometheus.api("series", **{"match[]": selector})
        found = {s["cluster"] for s in series if s.get("cluster")}
        return found if found == set(CLUSTERS) else None

    prometheus.wait(offered, f"{selector} to offer both clusters")


def dashboard_values(cluster: str) -> dict[str, str]:
    """Grafana's values with one cluster chosen and All for the other variables."""
    return {**PARSE_VALUES, "cluster": cluster, "__rate_interval": "10s", "__range": "1h"}


def table_rows(prometheus: Prometheus, title: str, cluster: str) -> set[tuple[str, str, str]]:
    (target, *_) = panel_titled(load_dashboard(), title)["targets"]
    result = prometheus.query(substitute(target["expr"], dashboard_values(cluster)))
    return {(s["metric"]["cluster"], s["metric"]["id"], s["metric"]["status"]) for s in result}


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_choosing_a_cluster_on_the_dashboard_shows_only_that_clusters_imports(
    prometheus: Prometheus, cluster: str
) -> None:
    final = {("production", SHARED, "SUCCESS"), ("staging", SHARED, "FAILURE")}
    prometheus.wait(
        lambda: final <= table_rows(prometheus, CURRENT_TABLE, ".*"), f"{SHARED} to end in both"
    )
    rows = table_rows(prometheus, CURRENT_TABLE, cluster)
    assert {row for row in rows if row[1] == SHARED} == {r for r in final if r[0] == cluster}
    failed = {("staging", SHARED, "FAILURE")} if cluster == FAILS_IN else set()
    assert table_rows(prometheus, FAILED_TABLE, cluster) == failed
    dashboard = load_dashboard()
    other = [
        query.where
        for query in panel_queries(dashboard) + annotation_queries(dashboard)
        for sample in prometheus.query(substitute(query.expr, dashboard_values(cluster)))
        if sample["metric"].get("cluster", cluster) != cluster
    ]
    assert other == [], "queries showing another cluster's series"


@pytest.mark.parametrize(
    ("alertname", "labels"),
    [
        ("ElevateImportFailed", {"id": SHARED, "type": "PRODUCTS", "message": MESSAGE}),
        ("ElevateImportPollFailing", {"id": SILENT}),
        ("ElevateApiServerErrors", {}),
    ],
)
def test_an_alert_of_one_cluster_fires_carrying_that_cluster(
    prometheus: Prometheus, alertname: str, labels: dict[str, str]
) -> None:
    firing = prometheus.wait(lambda: prometheus.firing(alertname), alertname)
    (alert,) = firing
    staging = prometheus.exporters[FAILS_IN]
    assert alert.items() >= labels.items()
    assert alert["instance"] == staging.address
    assert alert.get("cluster") == FAILS_IN, f"{alertname} lost the cluster label: {alert}"


def test_every_firing_alert_carries_the_cluster_of_its_exporter(prometheus: Prometheus) -> None:
    prometheus.wait(lambda: prometheus.firing("ElevateApiServerErrors"), "ElevateApiServerErrors")
    clusters = {e.address: c for c, e in prometheus.exporters.items()}
    alerts = [a for a in prometheus.api("alerts")["alerts"] if a["state"] == "firing"]
    assert alerts

    def lost(labels: dict[str, str]) -> bool:
        # An alert that keeps the instance must name its cluster; one aggregated over
        # instances (the error budget's) at least a cluster of the two.
        if "instance" in labels:
            return labels.get("cluster") != clusters[labels["instance"]]
        return labels.get("cluster") not in CLUSTERS

    assert sorted(a["labels"]["alertname"] for a in alerts if lost(a["labels"])) == []


def test_an_exporter_prometheus_cannot_scrape_fires_ElevateExporterDown_with_its_cluster(
    exporters: dict[str, Exporter], tmp_path: Path
) -> None:
    job = from_prometheus_yml(exporters)
    nobody = f"127.0.0.1:{free_port()}"  # staging's exporter is not running
    for group in job["static_configs"]:
        if group["labels"]["cluster"] == FAILS_IN:
            group["targets"] = [nobody]
    with running_prometheus(tmp_path, job, exporters) as prometheus:

        def down() -> list[dict[str, str]]:
            # Before the first scrape, absent(up) fires too (its `for` is shortened here),
            # with the job alone: that one is not the target's.
            alerts = prometheus.firing("ElevateExporterDown")
            return [a for a in alerts if "instance" in a]

        (alert,) = prometheus.wait(down, "ElevateExporterDown for the target")
        assert (alert.get("cluster"), alert["instance"], alert["job"]) == (FAILS_IN, nobody, JOB)
        # Production's exporter answers: its `up` is 1, under its own cluster.
        up = prometheus.query(f'up{{job="{JOB}"}} == 1')
        assert by_cluster(up, "instance") == {"production": exporters["production"].address}
