"""The KEDA and KServe manifests: well-formed, and consistent with the app they run."""

from __future__ import annotations

import dataclasses
import json
import re

import jsonschema
import pytest
import yaml

from app import metrics
from app.settings import Settings, SettingsError
from tests.conftest import ROOT

KEDA = ROOT / "deploy" / "k8s" / "keda" / "scaledobject.yaml"
KSERVE = ROOT / "deploy" / "kserve"


def load(path):
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def runtime() -> dict:
    return load(KSERVE / "servingruntime.yaml")


def exported_metrics() -> set[str]:
    """The name of every metric app.metrics defines (a counter's without `_total`)."""
    return {
        family.name
        for value in vars(metrics).values()
        if isinstance(value, metrics.Gauge | metrics.Counter | metrics.Histogram)
        for family in value.describe()
    }


def test_keda_scales_the_deployment_on_a_metric_the_app_exports():
    scaled = load(KEDA)
    deployment = load(ROOT / "deploy" / "k8s" / "deployment.yaml")
    assert scaled["kind"] == "ScaledObject"
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    [prometheus] = [t for t in scaled["spec"]["triggers"] if t["type"] == "prometheus"]
    series = set(re.findall(r"wanwu_\w+", prometheus["metadata"]["query"]))
    assert series == {"wanwu_model_queue_depth"} and series <= exported_metrics()
    assert float(prometheus["metadata"]["threshold"]) > 0


def test_kserve_runtime_serves_the_repository_kserve_mounts(runtime):
    assert runtime["kind"] == "ServingRuntime"
    assert runtime["spec"]["protocolVersions"] == ["v2", "grpc-v2"]
    [container] = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container"  # the name KServe looks for
    env = {e["name"]: e["value"] for e in container["env"]}
    known = {f.metadata["env"] for f in dataclasses.fields(Settings)}
    assert set(env) <= known, set(env) - known
    assert env["WANWU_MODEL_REPOSITORY"] == "/mnt/models"  # where KServe mounts storageUri
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http1": 8080, "grpc-v2": 8081}  # KServe's HTTP and gRPC ports
    assert env["WANWU_BIND"].endswith(f":{ports['http1']}")
    assert env["WANWU_GRPC_BIND"].endswith(f":{ports['grpc-v2']}")
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == ports["http1"]
    # With admin keys the management API listens too: valid settings, on a port of its own.
    settings = Settings.from_env({**env, "WANWU_ADMIN_KEYS": "k"})
    assert settings.management_bind.startswith("127.0.0.1:")
    assert not settings.management_bind.endswith(tuple(f":{p}" for p in ports.values()))


def test_the_management_port_may_not_be_the_grpc_port():
    with pytest.raises(SettingsError, match="WANWU_MANAGEMENT_BIND=127.0.0.1:8085"):
        Settings.from_env({"WANWU_GRPC_BIND": "0.0.0.0:8081", "WANWU_ADMIN_KEYS": "k"})


def strict(schema: object) -> object:
    """`schema` refusing fields it does not name, as kubeconform -strict reads a CRD's schema."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    tightened = {key: strict(value) for key, value in schema.items()}
    if "properties" in schema and "additionalProperties" not in schema:
        if not schema.get("x-kubernetes-preserve-unknown-fields"):
            tightened["additionalProperties"] = False
    return tightened


def crd_errors(doc: dict) -> list[str]:
    """What KServe's own CRD schema for the document's kind and version finds wrong in it."""
    version = doc["apiVersion"].rsplit("/", 1)[1]
    path = KSERVE / "schemas" / f"{doc['kind'].lower()}_{version}.json"
    validator = jsonschema.Draft4Validator(strict(json.loads(path.read_text())))
    errors = validator.iter_errors(doc)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


@pytest.mark.parametrize("manifest", ["servingruntime.yaml", "inferenceservice.yaml"])
def test_kserve_manifests_validate_against_kserves_crds(manifest):
    doc = load(KSERVE / manifest)
    assert crd_errors(doc) == []
    # The check has teeth: a misspelt field, a port number as a string.
    spec = doc["spec"]
    assert crd_errors({**doc, "spec": {**spec, "protocolVersion": "v2"}})
    if doc["kind"] == "ServingRuntime":
        [container] = spec["containers"]
        port = {"name": "grpc-v2", "containerPort": "8081"}
        broken = {**spec, "containers": [{**container, "ports": [port]}]}
        assert crd_errors({**doc, "spec": broken}) == [
            "spec.containers.0.ports.0.containerPort: '8081' is not of type 'integer'"
        ]


def test_kserve_probes_are_routes_the_app_answers(runtime, client):
    [container] = runtime["spec"]["containers"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert client.get(container[probe]["httpGet"]["path"]).status_code == 200


def test_inference_service_uses_the_runtime(runtime):
    service = load(KSERVE / "inferenceservice.yaml")
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["modelFormat"]["name"] in formats
    assert model["storageUri"].startswith(("pvc://", "s3://", "gs://"))
