"""The KEDA and KServe manifests: well-formed, and consistent with the app they run."""

from __future__ import annotations

import dataclasses
import re

import pytest
import yaml

from app import metrics
from app.settings import Settings
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
    assert runtime["kind"] == "ServingRuntime" and runtime["spec"]["protocolVersions"] == ["v2"]
    [container] = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container"  # the name KServe looks for
    env = {e["name"]: e["value"] for e in container["env"]}
    known = {f.metadata["env"] for f in dataclasses.fields(Settings)}
    assert set(env) <= known, set(env) - known
    assert env["WANWU_MODEL_REPOSITORY"] == "/mnt/models"  # where KServe mounts storageUri
    [port] = container["ports"]
    assert env["WANWU_BIND"].endswith(f":{port['containerPort']}")
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == port["containerPort"]


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
