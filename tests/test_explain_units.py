"""Explanations in process, over tiny seeded models: the shapes, the refusals with their reason
on every protocol, the explanation queue's own limit, the crop box, the target parameter."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from app import errors, explain
from app.artifact import read_manifest
from app.export import formats
from benchkit.images import image_bytes
from tests.conftest import TinyNet, write_tiny_manifest


def export_tiny(path: Path, module: torch.nn.Module) -> Path:
    """Export `module` as app.export traces a model: explain method and plan recorded."""
    fields = formats.save_traced(module.eval(), 224)(path)
    write_tiny_manifest(path, "torchscript-trace", **fields)
    return path


@pytest.fixture(scope="module")
def explainable_path(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return export_tiny(tmp_path_factory.mktemp("tinyx") / "tinyx.pt", TinyNet())


@pytest.fixture(scope="module")
def flat_head_path(tmp_path_factory) -> Path:
    """A head over the flattened feature map, not its average: not explainable."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 2, kernel_size=16, stride=16),
        torch.nn.Flatten(),
        torch.nn.Linear(2 * 14 * 14, 1000),
    )
    return export_tiny(tmp_path_factory.mktemp("flat") / "flat.pt", net)


def jpeg() -> dict:
    return {"data": image_bytes(size=(320, 240)), "content_type": "image/jpeg"}


def test_the_export_records_the_feature_layer_and_the_reason_when_there_is_none(
    explainable_path, flat_head_path
):
    assert read_manifest(explainable_path)["explain"] == {
        "method": "explain",
        "cam": "pooled-linear",
        "feature_layer": "conv",
        "feature_shape": [8, 14, 14],
        "head": "fc",
    }
    flat = read_manifest(flat_head_path)["explain"]
    assert flat["method"] is None and "not global-average-pooled" in flat["reason"]


def test_explain_answers_a_heatmap_per_class_and_the_crop_box(start_app, explainable_path):
    client = start_app(explainable_path).test_client()
    response = client.post("/explain?topk=2", **jpeg())
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    first, second = body["explanations"]
    assert first["score"] >= second["score"] and body["model"]["name"] == "tinyx"
    heat = np.asarray(first["heatmap"])
    assert heat.shape == (14, 14) and heat.min() >= 0 and heat.max() == 1
    # The centre crop: 224/256 of the short side (240), centred on the 320-pixel width.
    left, top, right, bottom = first["box"]
    assert bottom - top == pytest.approx(210, abs=0.1)
    assert right - left == pytest.approx(210, abs=0.5) and left + right == pytest.approx(320, abs=1)
    predicted = client.post("/predict?topk=2", **jpeg()).get_json()["predictions"]
    assert [p["index"] for p in predicted] == [first["index"], second["index"]]
    several = client.post(
        "/explain", data={"file": [(io.BytesIO(image_bytes(seed=s)), f"{s}.jpg") for s in (1, 2)]}
    ).get_json()
    assert [r["filename"] for r in several["results"]] == ["1.jpg", "2.jpg"]


def test_models_that_cannot_explain_say_why_on_every_protocol(
    start_app, tiny_model_path, flat_head_path
):
    for path, why in (
        (tiny_model_path, "records no feature layer"),
        (flat_head_path, "not global-average-pooled"),
    ):
        client = start_app(path).test_client()
        name = path.stem
        b64 = base64.b64encode(jpeg()["data"]).decode()
        wanwu = client.post("/explain", **jpeg())
        torchserve = client.post(f"/explanations/{name}", **jpeg())
        kserve = client.post(f"/v1/models/{name}:explain", json={"instances": [b64]})
        oip = client.post(
            f"/v2/models/{name}/infer",
            json={
                "inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [1], "data": [b64]}],
                "parameters": {"explain": True},
            },
        )
        assert {r.status_code for r in (wanwu, torchserve, kserve, oip)} == {501}
        assert wanwu.get_json()["error"]["code"] == "not_explainable"
        assert why in wanwu.get_json()["error"]["message"]
        assert torchserve.get_json()["type"] == "ModelNotExplainableException"
        assert why in kserve.get_json()["error"] and why in oip.get_json()["error"]


def test_explanations_have_their_own_queue_limit(start_app, explainable_path):
    app = start_app(explainable_path, explain_queue_max=1)
    with app.extensions["wanwu.core"].engine.explaining(1):  # the one place is taken
        client = app.test_client()
        response = client.post("/explain", **jpeg())
        assert response.status_code == 503 and response.headers["Retry-After"] == "1"
        assert "WANWU_EXPLAIN_QUEUE_MAX" in response.get_json()["error"]["message"]
        assert client.post("/predict", **jpeg()).status_code == 200
    assert app.test_client().post("/explain", **jpeg()).status_code == 200


def test_a_target_is_an_index_or_a_label_in_any_language():
    labels = {"en": ["cat", "dog"], "zh": ["猫", "狗"]}
    assert [explain.target(t, labels) for t in ("1", "dog", "猫", "01")] == [1, 1, 0, 1]
    for bad in ("2", "-1", "bird", "9" * 5000):
        with pytest.raises(errors.InvalidParameter, match="target"):
            explain.target(bad, labels)


def test_a_map_without_positive_evidence_stays_zero():
    cams = torch.tensor([[[-1.0, -2.0]], [[0.5, 2.0]]])
    assert explain.heatmap(cams, 0).tolist() == [[0.0, 0.0]]
    assert explain.heatmap(cams, 1).tolist() == [[0.25, 1.0]]
