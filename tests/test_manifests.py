"""The Kubernetes manifests: well-formed, and consistent with the app they deploy."""

from __future__ import annotations

import copy
import re

import kubernetes_validate
import pytest
import yaml

from app.settings import Settings
from tests.conftest import ROOT

K8S = ROOT / "deploy" / "k8s"
REQUIRED = {
    "Deployment": [
        "spec.selector.matchLabels",
        "spec.template.metadata.labels",
        "spec.template.spec.containers",
    ],
    "Service": ["spec.selector", "spec.ports"],
    "HorizontalPodAutoscaler": ["spec.scaleTargetRef.name", "spec.maxReplicas", "spec.metrics"],
    "PodDisruptionBudget": ["spec.selector.matchLabels"],
}


def load_all() -> dict[str, dict]:
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


def dig(doc: dict, dotted: str):
    for key in dotted.split("."):
        doc = doc[key]
    return doc


def cpus(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


@pytest.fixture(scope="module")
def docs():
    return load_all()


def test_every_kind_is_there_with_its_required_fields(docs):
    assert set(docs) == set(REQUIRED)
    for kind, fields in REQUIRED.items():
        assert docs[kind]["apiVersion"] and docs[kind]["metadata"]["name"] == "wanwu"
        for field in fields:
            assert dig(docs[kind], field), f"{kind} lacks {field}"


def test_selectors_and_targets_line_up(docs):
    labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert docs["Deployment"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert docs["Service"]["spec"]["selector"].items() <= labels.items()
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == "wanwu"
    ports = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert docs["Service"]["spec"]["ports"][0]["targetPort"] in {p["name"] for p in ports}


def test_container_matches_the_app(docs, client):
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    known = {name for name, _, _ in Settings.describe()} | {"PROMETHEUS_MULTIPROC_DIR"}
    assert set(env) <= known, set(env) - known
    settings = Settings.from_env(env)  # the values are valid settings
    limit = cpus(container["resources"]["limits"]["cpu"])
    assert settings.worker_processes * settings.torch_threads == limit
    assert cpus(container["resources"]["requests"]["cpu"]) == limit  # no CPU throttling
    for probe, path in (
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
        ("startupProbe", "/readyz"),
    ):
        assert container[probe]["httpGet"]["path"] == path
        assert client.get(path).status_code == 200
    assert container["ports"][0]["containerPort"] == int(Settings().bind.rsplit(":", 1)[1])
    annotations = docs["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert client.get(annotations["prometheus.io/path"]).status_code == 200
    graceful = int(
        re.search(r"graceful_timeout = (\d+)", (ROOT / "gunicorn.conf.py").read_text()).group(1)
    )
    assert pod["terminationGracePeriodSeconds"] > graceful


def test_grpc_port_is_served_and_exposed(docs):
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    port = int(Settings.from_env(env).grpc_bind.rsplit(":", 1)[1])
    assert {"name": "grpc", "containerPort": port} in container["ports"]
    service = {p["name"]: p for p in docs["Service"]["spec"]["ports"]}
    assert service["grpc"]["targetPort"] == "grpc"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"WANWU_GRPC_BIND=0.0.0.0:{port}" in dockerfile
    assert re.search(rf"^EXPOSE .*\b{port}\b", dockerfile, re.M)


def test_admin_keys_come_from_an_optional_secret_and_stay_on_loopback(docs):
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    [admin] = [e for e in container["env"] if e["name"] == "WANWU_ADMIN_KEYS"]
    assert "value" not in admin  # never a key written into the manifest
    assert admin["valueFrom"]["secretKeyRef"]["optional"] is True  # no Secret: no management
    bind = {e["name"]: e.get("value") for e in container["env"]}.get("WANWU_MANAGEMENT_BIND")
    assert (bind or Settings().management_bind).startswith("127.0.0.1:")


def test_every_manifest_is_valid_kubernetes(docs):
    """Each object against Kubernetes' own schemas, strictly: a misspelt field fails too."""
    for doc in docs.values():
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    pod = copy.deepcopy(docs["Deployment"])
    pod["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRoot"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True)


def test_the_root_is_read_only_and_what_it_writes_is_an_empty_dir(docs):
    """As the image check runs the image: /tmp and the metrics folder on emptyDirs."""
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    hardened = container["securityContext"]
    assert hardened["readOnlyRootFilesystem"] is True
    assert hardened["allowPrivilegeEscalation"] is False
    assert hardened["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    for path in ("/tmp", env["PROMETHEUS_MULTIPROC_DIR"]):
        assert mounts[path] in empty_dirs, path
