"""TorchServe's inference and management API through Flask's test client, over the tiny model."""

from __future__ import annotations

import base64
import io

import pytest
import torch
from PIL import Image

from benchkit.images import image_bytes
from tests.conftest import make_settings

URL = "/predictions/tiny"


def assert_ts_error(response, status: int, type_: str) -> dict:
    """TorchServe's error shape: {"code", "type", "message"}."""
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["code"] == status and body["type"] == type_ and body["message"]
    return body


def top5(client, data: bytes) -> dict[str, float]:
    """/predict's top-5 of the same image, as TorchServe's {label: probability}."""
    response = client.post("/predict?topk=5", data=data, content_type="image/jpeg")
    return {p["label"]: p["score"] for p in response.get_json()["predictions"]}


@pytest.mark.parametrize("method", ["PUT", "POST"])
def test_raw_body_gets_top5_label_probabilities_like_predict(client, method):
    image = image_bytes()
    # `curl -T kitten.jpg` sends a PUT with no Content-Type.
    response = client.open(URL, method=method, data=image)
    assert response.status_code == 200
    answer = response.get_json()
    assert list(answer) == list(top5(client, image))
    assert answer == pytest.approx(top5(client, image), abs=1e-6)


def test_multipart_data_or_file_field_and_several_images(client):
    image = image_bytes()
    for field in ("data", "file"):
        response = client.post(URL, data={field: (io.BytesIO(image), "kitten.jpg")})
        assert response.get_json() == pytest.approx(top5(client, image), abs=1e-6)
    images = [image_bytes(seed=s) for s in range(3)]
    files = {"data": [(io.BytesIO(d), f"{n}.jpg") for n, d in enumerate(images)]}
    answers = client.post(URL, data=files).get_json()
    assert [list(a) for a in answers] == [list(top5(client, d)) for d in images]


def test_base64_text_and_json_string_bodies(client):
    image = image_bytes()
    encoded = base64.b64encode(image).decode()
    expected = top5(client, image)
    text = client.post(URL, data=encoded, content_type="text/plain")
    assert text.get_json() == pytest.approx(expected, abs=1e-6)
    as_json = client.post(URL, json=encoded)
    assert as_json.get_json() == pytest.approx(expected, abs=1e-6)
    assert_ts_error(
        client.post(URL, data="not base64!", content_type="text/plain"), 400, "BadRequestException"
    )
    assert_ts_error(client.post(URL, json={"data": 1}), 400, "BadRequestException")


def test_version_path_and_unknown_model_or_version(client):
    version = client.get("/v1/model").get_json()["version"]
    assert client.put(f"{URL}/{version}", data=image_bytes()).status_code == 200
    body = assert_ts_error(
        client.put("/predictions/resnet", data=b"x"), 404, "ModelNotFoundException"
    )
    assert "tiny" in body["message"]
    assert_ts_error(client.put(f"{URL}/9.9", data=b"x"), 404, "ModelNotFoundException")


def test_bad_bodies_are_4xx_in_torchserve_shape(client):
    assert_ts_error(client.put(URL, data=b""), 400, "BadRequestException")
    assert_ts_error(
        client.put(URL, data=b"%PDF-1.4 not an image"), 415, "UnsupportedMediaTypeException"
    )
    assert_ts_error(
        client.post(URL, data={"other": (io.BytesIO(image_bytes()), "a.jpg")}),
        400,
        "BadRequestException",
    )


def test_limits_are_413(start_app):
    client = start_app(max_upload_mb=0.01, max_files=2).test_client()
    assert_ts_error(client.put(URL, data=b"x" * 20_000), 413, "RequestEntityTooLargeException")
    files = {"data": [(io.BytesIO(image_bytes(size=(32, 32), seed=s)), "a.jpg") for s in range(3)]}
    assert_ts_error(client.post(URL, data=files), 413, "RequestEntityTooLargeException")


def test_api_keys_guard_predictions(start_app):
    client = start_app(api_keys=("k1",)).test_client()
    assert_ts_error(client.put(URL, data=image_bytes()), 401, "InvalidKeyException")
    ok = client.put(URL, data=image_bytes(), headers={"Authorization": "Bearer k1"})
    assert ok.status_code == 200
    assert client.get("/ping").status_code == 200


def test_overload_is_503_with_retry_after(start_app):
    app = start_app(max_batch=1, queue_max=1)
    held = app.extensions["wanwu.core"].engine.batcher.reserve(1, 1e12)  # the only place is taken
    try:
        response = app.test_client().put(URL, data=image_bytes())
        assert_ts_error(response, 503, "ServiceUnavailableException")
        assert response.headers["Retry-After"] == "1"
    finally:
        held.__exit__(None, None, None)


def test_ping_and_an_unready_worker(tiny_model_path, client):
    from app.engine import Engine
    from app.model import Classifier
    from app.web import create_app

    assert client.get("/ping").get_json() == {"status": "Healthy"}
    settings = make_settings(tiny_model_path)
    cold = create_app(settings, Engine(Classifier.load(tiny_model_path), settings)).test_client()
    response = cold.get("/ping")
    assert response.status_code == 503 and response.get_json() == {"status": "Unhealthy"}
    assert "Retry-After" in response.headers
    assert_ts_error(cold.put(URL, data=image_bytes()), 503, "ServiceUnavailableException")


def test_management_list_and_describe_on_the_management_listener(start_app):
    client = start_app(admin_keys=("admin",)).test_client()
    # What the intake says of a connection on WANWU_MANAGEMENT_BIND (app.listeners).
    on_management = {
        "environ_base": {"wanwu.listener": "management"},
        "headers": {"Authorization": "Bearer admin"},
    }
    assert client.get("/models", **on_management).get_json() == {
        "models": [{"modelName": "tiny", "modelUrl": "tiny.pt"}]
    }
    [model] = client.get("/models/tiny", **on_management).get_json()
    assert model["modelName"] == "tiny" and model["batchSize"] == 4
    assert model["runtime"] == "torchscript" and model["isDefault"]
    assert model["status"] == "Healthy" and model["workers"][0]["status"] == "READY"
    assert model["jobQueueStatus"] == {"remainingCapacity": 16, "pendingRequests": 0}
    assert_ts_error(client.get("/models/nope", **on_management), 404, "ModelNotFoundException")
    refused = client.get("/models", environ_base={"wanwu.listener": "management"})
    assert_ts_error(refused, 401, "InvalidKeyException")


def test_management_calls_on_the_inference_port_are_404_naming_where_they_are(client):
    calls = [
        client.get("/models"),
        client.get("/models/tiny"),
        client.post("/models?url=squeezenet.mar"),
        client.put("/models/tiny?min_worker=2"),
        client.delete("/models/tiny"),
        client.get("/models/tiny/all"),
        client.put("/models/tiny/1.0/set-default"),
    ]
    for response in calls:
        body = assert_ts_error(response, 404, "ResourceNotFoundException")
        assert "WANWU_MANAGEMENT_BIND" in body["message"]


def test_a_base64_image_in_a_multipart_field_is_read_up_to_the_upload_limit(client):
    """Flask caps form fields at 500 kB unless told; the upload limit is what bounds one."""
    noise = (torch.rand(400, 400, 3) * 255).to(torch.uint8).numpy()
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    assert len(encoded) > 500_000
    answer = client.post(URL, data={"data": encoded}, content_type="multipart/form-data")
    assert answer.status_code == 200 and len(answer.get_json()) == 5  # the stock top-5
