"""A model repository: two models served by real Gunicorn, routed by name on every protocol."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from app.artifact import ArtifactError
from app.repository import scan
from benchkit.images import image_bytes
from benchkit.server import GunicornServer
from tests.conftest import save_tiny_model

ALPHA = {"en": ["a0", "a1", "a2"]}
BETA = {"en": ["b0", "b1", "b2", "b3"]}


def add_version(root: Path, name: str, version: int, labels: dict[str, list[str]]) -> Path:
    """Export a tiny model into root/name/version/, as `python -m app.export` lays it out."""
    folder = root / name / str(version)
    folder.mkdir(parents=True)
    return save_tiny_model(folder / f"{name}.pt", labels)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """alpha at version 1; beta at versions 1 and 10 (10 serves: numbers, not text, order)."""
    root = tmp_path_factory.mktemp("repository")
    add_version(root, "alpha", 1, ALPHA)
    add_version(root, "beta", 1, {"en": ["old0", "old1"]})
    add_version(root, "beta", 10, BETA)
    (root / "README.txt").write_text("files beside the model folders are ignored")
    return root


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory):
    with GunicornServer(
        tmp_path_factory.mktemp("logs"), workers=1, model_repository=repository
    ) as running:
        yield running


def test_scan_serves_the_highest_version(repository):
    found = scan(repository)
    assert {name: version for name, (version, _) in found.items()} == {"alpha": "1", "beta": "10"}
    assert found["beta"][1] == repository / "beta" / "10" / "beta.pt"


@pytest.mark.parametrize(
    ("layout", "says"),
    [
        ({}, "holds no model folder"),
        ({"gamma/latest/gamma.pt": "x"}, "has no version folder"),
        ({"gamma/1/notes.txt": "x"}, "found 0"),
        (
            {
                "gamma/1/a.pt": "x",
                "gamma/1/a.json": "{}",
                "gamma/1/b.pt": "x",
                "gamma/1/b.json": "{}",
            },
            "found 2",
        ),
        ({"bad name/1/a.pt": "x"}, "must be letters"),
    ],
)
def test_a_malformed_repository_stops_start_up_naming_the_path(tmp_path, layout, says):
    for relative, text in layout.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    with pytest.raises(ArtifactError, match=says):
        scan(tmp_path)


def test_a_missing_repository_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match="is not a folder"):
        scan(tmp_path / "absent")


def labels_of(answer: dict) -> set[str]:
    return {p["label"] for p in answer["predictions"]}


def predict(server: GunicornServer, query: str = "") -> requests.Response:
    return requests.post(
        f"{server.url}/predict{query}", data=image_bytes(), headers={"Content-Type": "image/jpeg"}
    )


def test_predict_routes_by_model_and_names_the_version(server):
    default = predict(server).json()  # the first model by name
    assert default["model"] == {"name": "alpha", "version": "1", "trained": True}
    assert labels_of(default) <= set(ALPHA["en"])
    beta = predict(server, "?model=beta&topk=4").json()
    assert beta["model"] == {"name": "beta", "version": "10", "trained": True}
    assert labels_of(beta) == set(BETA["en"])
    assert predict(server, "?model=beta&version=10").status_code == 200

    old = predict(server, "?model=beta&version=1")
    assert old.status_code == 404 and "The served version is '10'" in old.json()["error"]["message"]
    unknown = predict(server, "?model=gamma")
    assert unknown.status_code == 404
    assert "Served models: alpha, beta." in unknown.json()["error"]["message"]


def test_torchserve_routes_by_model_and_lists_every_model(server):
    jpeg = image_bytes()
    answer = requests.put(f"{server.url}/predictions/beta/10", data=jpeg)
    assert answer.status_code == 200 and set(answer.json()) == set(BETA["en"])
    answer = requests.put(f"{server.url}/predictions/alpha", data=jpeg)
    assert set(answer.json()) == set(ALPHA["en"])
    unknown = requests.put(f"{server.url}/predictions/gamma", data=jpeg)
    assert unknown.status_code == 404
    assert unknown.json()["type"] == "ModelNotFoundException"
    assert "alpha, beta" in unknown.json()["message"]

    listed = requests.get(f"{server.url}/models").json()["models"]
    assert listed == [
        {"modelName": "alpha", "modelUrl": "alpha.pt"},
        {"modelName": "beta", "modelUrl": "beta.pt"},
    ]
    [described] = requests.get(f"{server.url}/models/beta").json()
    assert described["modelVersion"] == "10"


def test_oip_routes_by_model_and_version(server):
    request = {
        "inputs": [
            {
                "name": "IMAGE",
                "datatype": "BYTES",
                "shape": [1],
                "data": [base64.b64encode(image_bytes()).decode()],
            }
        ]
    }
    answer = requests.post(f"{server.url}/v2/models/beta/versions/10/infer", json=request).json()
    assert (answer["model_name"], answer["model_version"]) == ("beta", "10")
    assert answer["outputs"][0]["shape"] == [1, len(BETA["en"])]
    answer = requests.post(f"{server.url}/v2/models/alpha/infer", json=request).json()
    assert answer["outputs"][0]["shape"] == [1, len(ALPHA["en"])]

    assert requests.get(f"{server.url}/v2/models/alpha").json()["versions"] == ["1"]
    assert requests.get(f"{server.url}/v2/models/beta/ready").json()["ready"] is True
    unknown = requests.post(f"{server.url}/v2/models/gamma/infer", json=request)
    assert unknown.status_code == 404 and "alpha, beta" in unknown.json()["error"]


def test_queue_depth_and_in_flight_are_exported_per_model(server):
    predict(server, "?model=beta").raise_for_status()
    text = requests.get(f"{server.url}/metrics").text
    samples = {
        (s.name, s.labels.get("model"), s.labels.get("version")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    for gauge in ("wanwu_model_queue_depth", "wanwu_model_requests_in_flight"):
        # Each model's series exists from the start (alpha's too, whatever ran before), and
        # every request has been answered: nothing is queued or in flight any more.
        assert samples[(gauge, "alpha", "1")] == 0
        assert samples[(gauge, "beta", "10")] == 0
    assert samples[("wanwu_queue_depth", None, None)] == 0
