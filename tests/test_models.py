"""The service follows its model: class count, labels and languages come from the manifest."""

from __future__ import annotations

import pytest

from app.artifact import ArtifactError, read_manifest, write_manifest
from app.model import Classifier
from benchkit.images import image_bytes
from tests.conftest import save_tiny_model


@pytest.fixture(scope="module")
def two_classes(tmp_path_factory):
    """A trained 2-class model with English labels only."""
    path = tmp_path_factory.mktemp("two") / "catdog.pt"
    return save_tiny_model(path, {"en": ["cat", "dog"]})


@pytest.fixture(scope="module")
def thirty_seven(tmp_path_factory):
    """A trained 37-class model with labels in both languages."""
    path = tmp_path_factory.mktemp("pets") / "pets.pt"
    labels = {"en": [f"breed {i}" for i in range(37)], "zh": [f"品种{i}" for i in range(37)]}
    return save_tiny_model(path, labels)


def predict(client, query: str = ""):
    return client.post(f"/predict{query}", data=image_bytes(), content_type="image/jpeg")


def test_a_two_class_model_answers_top_2_by_default(start_app, two_classes):
    client = start_app(model=two_classes).test_client()
    body = predict(client).get_json()
    assert sorted(p["label"] for p in body["predictions"]) == ["cat", "dog"]
    assert abs(sum(p["score"] for p in body["predictions"]) - 1) < 1e-5
    assert body["model"] == {"name": "catdog", "version": body["model"]["version"], "trained": True}
    assert len(predict(client, "?topk=1").get_json()["predictions"]) == 1


@pytest.mark.parametrize(("fixture", "high"), [("two_classes", 2), ("thirty_seven", 20)])
def test_topk_range_follows_the_class_count(start_app, request, fixture, high):
    client = start_app(model=request.getfixturevalue(fixture)).test_client()
    assert len(predict(client, f"?topk={high}").get_json()["predictions"]) == high
    refused = predict(client, f"?topk={high + 1}")
    assert refused.status_code == 422
    assert f"from 1 to {high}" in refused.get_json()["error"]["message"]
    document = client.get("/openapi.json").get_json()
    topk = document["paths"]["/predict"]["post"]["parameters"][0]["schema"]
    assert topk["maximum"] == high and topk["default"] == min(3, high)


def test_lang_zh_on_a_model_without_chinese_labels_is_a_422(start_app, two_classes):
    """Documented choice: refuse, naming the model's languages, rather than answer in English."""
    client = start_app(model=two_classes).test_client()
    response = predict(client, "?lang=zh")
    assert response.status_code == 422
    message = response.get_json()["error"]["message"]
    assert message == "lang must be one of en (model catdog has no Chinese labels); got 'zh'."
    assert predict(client, "?lang=fr").get_json()["error"]["message"] == (
        "lang must be one of en; got 'fr'."
    )
    document = client.get("/openapi.json").get_json()
    assert document["paths"]["/predict"]["post"]["parameters"][1]["schema"]["enum"] == ["en"]


def test_chinese_labels_come_from_the_manifest(start_app, thirty_seven):
    client = start_app(model=thirty_seven).test_client()
    top = predict(client, "?lang=zh").get_json()["predictions"][0]
    assert top["label"] == f"品种{top['index']}"


def test_model_description_page_and_metrics_name_the_model(start_app, two_classes):
    client = start_app(model=two_classes).test_client()
    info = client.get("/v1/model").get_json()
    assert info["name"] == "catdog" and info["classes"] == 2 and info["languages"] == ["en"]
    assert "labels" not in info["manifest"] and info["manifest"]["num_classes"] == 2
    document = client.get("/openapi.json").get_json()
    assert "Model catdog (torchscript, 2 classes" in document["info"]["description"]
    assert document["components"]["schemas"]["Prediction"]["properties"]["index"]["maximum"] == 1
    page = client.get("/").get_data(as_text=True)
    assert "catdog · 2 classes ·" in page and 'data-languages="en"' in page
    assert "Untrained model" not in page  # the banner is for untrained models only
    metrics = client.get("/metrics").get_data(as_text=True).splitlines()
    series = [line for line in metrics if line.startswith("wanwu_model_info{")]
    assert any('name="catdog"' in line and 'classes="2"' in line for line in series), series


def test_an_untrained_model_keeps_its_banner(client):
    page = client.get("/").get_data(as_text=True)
    assert "Untrained model" in page and "tiny · 1000 classes ·" in page


def test_a_first_format_manifest_still_loads(tiny_model_path):
    manifest = read_manifest(tiny_model_path)
    assert manifest["labels"] == "imagenet-1k" and "languages" not in manifest
    classifier = Classifier.load(tiny_model_path)
    assert classifier.num_classes == 1000 and classifier.languages == ("en", "zh")
    assert classifier.labels("zh")[388] == "大熊猫"


def test_labels_that_do_not_match_the_class_count_are_refused(tmp_path, two_classes):
    path = tmp_path / "bad.pt"
    path.write_bytes(two_classes.read_bytes())
    manifest = read_manifest(two_classes)
    del manifest["artifact_sha256"], manifest["manifest_version"]
    write_manifest(path, **{**manifest, "labels": {"en": ["cat", "dog", "eel"]}})
    with pytest.raises(ArtifactError, match="3 en labels for 2 classes; re-export"):
        Classifier.load(path)
