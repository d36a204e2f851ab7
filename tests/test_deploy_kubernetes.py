"""deploy/kubernetes/: every manifest valid against the Kubernetes schemas, offline.

No cluster runs here. ``kubernetes-validate`` (a test extra) ships the API's JSON schemas:
every built-in resource is checked against them, strictly (an unknown field fails). KEDA's
``ScaledObject`` and ``TriggerAuthentication`` are custom resources, not in those schemas:
their shape is checked by the small schema below (the fields we use, and their types).
Then what the manifests say is checked against rdist itself: the commands parse with the
real CLI, the settings exist, the grace period outlasts the hand-off, the ports agree.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from rdist.config import load_config
from rdist.settings import BY_NAME, SETTINGS
from rdist.worker import handoff, nanny
from tests.test_deploy import rdist_command

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
#: The Kubernetes version validated against (kubernetes-validate ships its schemas).
K8S_VERSION = "1.33"


def documents() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                out.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return out


def resource(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"no single {kind}/{name} in deploy/kubernetes"
    return found[0]


def container(deployment: str) -> dict[str, Any]:
    spec = resource("Deployment", deployment)["spec"]["template"]["spec"]
    (only,) = spec["containers"]
    return dict(only)


BUILTIN = [(name, doc) for name, doc in documents() if not doc["apiVersion"].startswith("keda.sh")]
CUSTOM = [(name, doc) for name, doc in documents() if doc["apiVersion"].startswith("keda.sh")]

_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
_NAME_REF = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}},
    "additionalProperties": False,
}
_METADATA = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}, "labels": _STRINGS},
    "additionalProperties": False,
}
#: KEDA's custom resources as its CRDs define the fields used here (keda.sh/v1alpha1)
KEDA_SCHEMAS: dict[str, dict[str, Any]] = {
    "ScaledObject": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "kind": {"const": "ScaledObject"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["scaleTargetRef", "triggers"],
                "additionalProperties": False,
                "properties": {
                    "scaleTargetRef": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "apiVersion": {"type": "string"},
                            "kind": {"type": "string"},
                            "name": {"type": "string"},
                        },
                        "additionalProperties": False,
                    },
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "pollingInterval": {"type": "integer", "minimum": 1},
                    "cooldownPeriod": {"type": "integer", "minimum": 0},
                    "advanced": {
                        "type": "object",
                        "properties": {"horizontalPodAutoscalerConfig": {"type": "object"}},
                        "additionalProperties": False,
                    },
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["type", "metadata"],
                            "properties": {
                                "type": {"enum": ["metrics-api", "prometheus"]},
                                "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                                "metadata": _STRINGS,
                                "authenticationRef": _NAME_REF,
                            },
                            "additionalProperties": False,
                        },
                    },
                },
            },
        },
        "additionalProperties": False,
    },
    "TriggerAuthentication": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "kind": {"const": "TriggerAuthentication"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "properties": {
                    "secretTargetRef": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["parameter", "name", "key"],
                            "properties": {
                                "parameter": {"type": "string"},
                                "name": {"type": "string"},
                                "key": {"type": "string"},
                            },
                            "additionalProperties": False,
                        },
                    }
                },
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    },
}


# -- against the schemas ----------------------------------------------------------------------
def test_manifests_exist_and_each_resource_is_named_once() -> None:
    names = [name for name, _ in documents()]
    assert len(names) == len(set(names)) and len(BUILTIN) >= 10 and len(CUSTOM) == 2


@pytest.mark.parametrize("name, doc", BUILTIN, ids=[n for n, _ in BUILTIN])
def test_builtin_resources_validate_against_the_kubernetes_schemas(
    name: str, doc: dict[str, Any]
) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("name, doc", CUSTOM, ids=[n for n, _ in CUSTOM])
def test_keda_resources_have_the_shape_of_their_crds(name: str, doc: dict[str, Any]) -> None:
    jsonschema.validate(doc, KEDA_SCHEMAS[doc["kind"]])


def test_the_validation_refuses_a_misspelt_field() -> None:
    """The checks above can fail: an unknown field is an error, in both kinds of check."""
    bad = yaml.safe_load(yaml.safe_dump(resource("Deployment", "rdist-worker")))
    bad["spec"]["template"]["spec"]["terminationGracePeriod"] = 60
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
    scaled = yaml.safe_load(yaml.safe_dump(resource("ScaledObject", "rdist-worker")))
    scaled["spec"]["maxReplicas"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, KEDA_SCHEMAS["ScaledObject"])


# -- against rdist ----------------------------------------------------------------------------
def expanded(args: list[str], env: dict[str, str]) -> list[str]:
    """``$(VAR)`` in container args, as the kubelet expands it."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in args]


@pytest.mark.parametrize("deployment", ["rdist-scheduler", "rdist-worker", "rdist-dashboard"])
def test_every_command_parses_with_the_cli(deployment: str) -> None:
    spec = container(deployment)
    argv = expanded(spec["args"], {"POD_IP": "10.1.2.3", "POD_NAME": "rdist-worker-abc"})
    assert "$(" not in " ".join(argv)  # every variable used is defined in the pod
    rdist_command(argv)
    assert "--redis-url" not in argv  # the URL (and its password) comes from the Secret


def env_names(deployment: str) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(deployment)["env"]}


@pytest.mark.parametrize("deployment", ["rdist-scheduler", "rdist-worker", "rdist-dashboard"])
def test_roles_read_the_url_from_the_secret_and_known_settings_only(deployment: str) -> None:
    env = env_names(deployment)
    assert env["RDIST_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "rdist",
        "key": "redis-url",
    }
    known = {s.env for s in SETTINGS} | {a for s in SETTINGS for a in s.aliases}
    known |= {"RDIST_CONFIG"}
    assert {n for n in env if n.startswith("RDIST_")} <= known


def test_workers_advertise_their_pod_ip() -> None:
    spec = container("rdist-worker")
    env = env_names("rdist-worker")
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    args = spec["args"]
    assert args[args.index("--contact-host") + 1] == "$(POD_IP)"
    limit = env["RDIST_WORKER__MEMORY_LIMIT"]["valueFrom"]["resourceFieldRef"]
    assert limit == {"containerName": "worker", "resource": "limits.memory"}


def test_the_config_map_holds_known_settings(tmp_path: Path) -> None:
    text = resource("ConfigMap", "rdist-config")["data"]["rdist.yaml"]
    (tmp_path / "rdist.yaml").write_text(text)
    config = load_config(env={"RDIST_CONFIG": str(tmp_path / "rdist.yaml"), "HOME": "/none"})
    from_file = [k for k, source in config.sources.items() if source.startswith("file")]
    assert from_file and all(k in BY_NAME for k in from_file)
    parsed = yaml.safe_load(text)
    assert sum(len(v) for v in parsed.values()) == len(from_file)


def test_the_data_port_agrees_between_config_container_and_network_policy(tmp_path: Path) -> None:
    text = resource("ConfigMap", "rdist-config")["data"]["rdist.yaml"]
    port = yaml.safe_load(text)["worker"]["port"]
    assert yaml.safe_load(text)["worker"]["host"] == "0.0.0.0"  # reachable from other pods
    assert [p["containerPort"] for p in container("rdist-worker")["ports"]] == [port]
    policy = resource("NetworkPolicy", "rdist-worker-data")["spec"]
    assert policy["podSelector"]["matchLabels"] == {"app.kubernetes.io/component": "worker"}
    assert [p["port"] for rule in policy["ingress"] for p in rule["ports"]] == [port]


def test_workers_get_longer_to_leave_than_the_hand_off_takes() -> None:
    grace = resource("Deployment", "rdist-worker")["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ]
    assert grace > nanny.STOP_GRACE_SECONDS > handoff.BUDGET_SECONDS


def test_two_schedulers_one_leading_one_standing_by() -> None:
    scheduler = resource("Deployment", "rdist-scheduler")
    assert scheduler["spec"]["replicas"] == 2
    assert container("rdist-scheduler")["args"] == ["scheduler"]


def test_probes_watch_every_serving_role() -> None:
    worker, dashboard = container("rdist-worker"), container("rdist-dashboard")
    assert worker["readinessProbe"]["tcpSocket"]["port"] == "data"
    assert dashboard["readinessProbe"]["httpGet"]["path"] == "/health"
    assert all("livenessProbe" in c for c in (worker, dashboard))


def test_keda_scales_the_workers_from_the_dashboards_adaptive_target() -> None:
    scaled = resource("ScaledObject", "rdist-worker")["spec"]
    assert scaled["scaleTargetRef"]["name"] == "rdist-worker"
    (trigger,) = scaled["triggers"]
    meta = trigger["metadata"]
    assert meta["valueLocation"] == "rdist_adaptive_target" and meta["format"] == "prometheus"
    service = resource("Service", "rdist-dashboard")
    (port,) = service["spec"]["ports"]
    assert meta["url"] == f"http://rdist-dashboard.rdist.svc:{port['port']}/metrics"
    # one worker per unit of the target; the token the dashboard asks for, from the Secret
    assert trigger["metricType"] == "AverageValue" and meta["targetValue"] == "1"
    auth = resource("TriggerAuthentication", trigger["authenticationRef"]["name"])
    (ref,) = auth["spec"]["secretTargetRef"]
    assert (ref["parameter"], ref["name"], ref["key"]) == ("token", "rdist", "dashboard-token")
    token = env_names("rdist-dashboard")["RDIST_DASHBOARD_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert token == {"name": "rdist", "key": "dashboard-token"}


def test_the_scaled_object_reads_the_metric_the_dashboard_serves() -> None:
    """KEDA's trigger names ``rdist_adaptive_target`` at the dashboard's ``/metrics``: that
    is the exact line rdist.adapt writes there, in Prometheus text format."""
    from rdist.adapt import exposition

    (trigger,) = resource("ScaledObject", "rdist-worker")["spec"]["triggers"]
    metadata = trigger["metadata"]
    assert metadata["format"] == "prometheus" and metadata["url"].endswith("/metrics")
    served = {
        line.split()[0]: float(line.split()[1])
        for line in exposition(3).splitlines()
        if line and not line.startswith("#")
    }
    assert served == {metadata["valueLocation"]: 3.0}
