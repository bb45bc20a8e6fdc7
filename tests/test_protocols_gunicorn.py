"""Real Gunicorn, real clients: tritonclient for OIP v2, TorchServe's documented calls via requests.

Each answer must match /predict's for the same image: the same top-1, the same scores.
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from benchkit.images import image_bytes, sample_photos

pytestmark = pytest.mark.integration
UPLOAD_LIMIT_MB = 4  # above any sample photo; the refusal test sends a larger length


@pytest.fixture(scope="module")
def server(tiny_model_path, gunicorn):
    with gunicorn(
        workers=1,
        model=tiny_model_path,
        max_upload_mb=UPLOAD_LIMIT_MB,
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    """A few real photos where ../shared has them, plus generated ones, as files on disk."""
    folder = tmp_path_factory.mktemp("photos")
    made = []
    for n in range(2):
        path = folder / f"gen{n}.jpg"
        path.write_bytes(image_bytes(seed=n))
        made.append(path)
    return sample_photos()[::40] + made


@pytest.fixture(scope="module")
def triton_client(server):
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    yield client
    client.close()


def predict_top5(server, data: bytes) -> list[dict]:
    response = requests.post(
        f"{server.url}/predict?topk=5",
        data=data,
        headers={"Content-Type": "image/jpeg"},
        timeout=60,
    )
    response.raise_for_status()
    return response.json()["predictions"]


def test_tritonclient_health_and_metadata(triton_client):
    assert triton_client.is_server_live()
    assert triton_client.is_server_ready()
    assert triton_client.is_model_ready("tiny")
    assert not triton_client.is_model_ready("resnet50")
    metadata = triton_client.get_server_metadata()
    assert set(metadata["extensions"]) >= {"binary_tensor_data", "classification"}
    model = triton_client.get_model_metadata("tiny")
    assert model["inputs"][0]["name"] == "IMAGE" and model["outputs"][0]["name"] == "PROBS"


def test_tritonclient_binary_infer_matches_predict(server, triton_client, photos):
    images = [p.read_bytes() for p in photos]
    tensor = triton.InferInput("IMAGE", [len(images), 1], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_).reshape(-1, 1))
    probs = triton_client.infer("tiny", [tensor]).as_numpy("PROBS")
    assert probs.shape == (len(images), 1000)
    for row, data in zip(probs, images, strict=True):
        top = predict_top5(server, data)
        assert int(row.argmax()) == top[0]["index"]
        for p in top:
            assert row[p["index"]] == pytest.approx(p["score"], abs=1e-6)


def test_tritonclient_classification_matches_predict(server, triton_client, photos):
    images = [p.read_bytes() for p in photos]
    tensor = triton.InferInput("IMAGE", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_))
    requested = triton.InferRequestedOutput("PROBS", class_count=5)
    classes = triton_client.infer("tiny", [tensor], outputs=[requested]).as_numpy("PROBS")
    for row, data in zip(classes, images, strict=True):
        # Triton's image_client.py reads each element as "score:index:label".
        parsed = [c.decode().split(":", 2) for c in row]
        top = predict_top5(server, data)
        assert [int(index) for _, index, _ in parsed] == [p["index"] for p in top]
        assert [label for _, _, label in parsed] == [p["label"] for p in top]
        assert [float(s) for s, _, _ in parsed] == pytest.approx(
            [p["score"] for p in top], abs=2e-6
        )


def test_tritonclient_sees_errors_with_their_status(triton_client):
    tensor = triton.InferInput("IMAGE", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"%PDF-1.4 not an image"], dtype=np.object_))
    with pytest.raises(InferenceServerException) as error:
        triton_client.infer("tiny", [tensor])
    assert error.value.status() == "415" and "IMAGE[0]" in error.value.message()
    with pytest.raises(InferenceServerException) as error:
        triton_client.infer("resnet50", [tensor])
    assert error.value.status() == "404"


def test_torchserve_curl_put_and_multipart_post_match_predict(server, photos):
    url = f"{server.url}/predictions/tiny"
    assert requests.get(f"{server.url}/ping", timeout=10).json() == {"status": "Healthy"}
    for path in photos:
        expected = predict_top5(server, path.read_bytes())
        # curl -T kitten.jpg http://127.0.0.1:8080/predictions/tiny
        with open(path, "rb") as f:
            put = requests.put(url, data=f, timeout=60)
        # curl -X POST http://127.0.0.1:8080/predictions/tiny -F "data=@kitten.jpg"
        with open(path, "rb") as f:
            post = requests.post(url, files={"data": f}, timeout=60)
        for response in (put, post):
            assert response.status_code == 200, response.text
            answer = response.json()
            assert list(answer) == [p["label"] for p in expected]  # most probable first
            assert list(answer.values()) == pytest.approx([p["score"] for p in expected], abs=1e-6)
    missing = requests.put(f"{server.url}/predictions/nope", data=b"x", timeout=10)
    assert missing.status_code == 404 and missing.json()["type"] == "ModelNotFoundException"


def test_metrics_count_each_protocol_under_its_route(server, triton_client):
    tensor = triton.InferInput("IMAGE", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([image_bytes()], dtype=np.object_))
    triton_client.infer("tiny", [tensor])
    requests.put(f"{server.url}/predictions/tiny", data=image_bytes(), timeout=60)
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    assert 'route="/predictions/<model_name>",status="200"' in text
    assert 'route="/v2/models/<model_name>/infer",status="200"' in text


@pytest.mark.parametrize(
    ("path", "shape"),
    [
        ("/predict", lambda body: body["error"]["code"] == "payload_too_large"),
        ("/predictions/tiny", lambda body: body["type"] == "RequestEntityTooLargeException"),
        ("/v2/models/tiny/infer", lambda body: list(body) == ["error"]),
    ],
)
def test_the_intake_refuses_a_large_body_in_the_protocol_shape(server, path, shape):
    # Refused from the headers alone: the body is never sent.
    connection = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=30)
    try:
        connection.putrequest("POST", f"{path}?x=1")
        connection.putheader("Content-Type", "image/jpeg")
        connection.putheader("Content-Length", str(UPLOAD_LIMIT_MB * 1024 * 1024 + 1))
        connection.endheaders()
        response = connection.getresponse()
        body = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == 413 and shape(body), body
    assert "WANWU_MAX_UPLOAD_MB" in json.dumps(body)
