"""The HTTP contract through Flask's test client, over the tiny seeded model."""

from __future__ import annotations

import io
import json
import logging
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from app import imaging, labels
from benchkit.images import image_bytes
from tests.conftest import INPUT_SPEC


def multipart(*files: tuple[bytes, str]) -> dict:
    return {"file": [(io.BytesIO(data), name) for data, name in files]}


def expected_top(app, data: bytes, k: int = 3) -> list[int]:
    """Top-k indices straight from the model, no batcher, no HTTP."""
    spec = INPUT_SPEC
    tensor = imaging.load(data, spec, 10**8)
    probs = app.extensions["wanwu.core"].engine.classifier(tensor[None])[0]
    return probs.topk(k).indices.tolist()


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    body = response.get_json()
    assert body["error"]["code"] == code and body["error"]["message"]
    return body


def test_multipart_upload_gets_sorted_top3(client):
    data = image_bytes()
    response = client.post("/predict", data=multipart((data, "a.jpg")))
    assert response.status_code == 200
    body = response.get_json()
    predictions = body["predictions"]
    assert len(predictions) == 3
    scores = [p["score"] for p in predictions]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert [p["index"] for p in predictions] == expected_top(client.application, data)
    assert predictions[0]["label"] == labels.names("en")[predictions[0]["index"]]
    assert body["model"] == {"name": "tiny", "version": body["model"]["version"], "trained": False}
    assert set(body["timing_ms"]) == {"queue", "inference", "total"}


def test_raw_body_and_topk(client):
    response = client.post("/predict?topk=5", data=image_bytes("PNG"), content_type="image/png")
    assert response.status_code == 200
    assert len(response.get_json()["predictions"]) == 5
    octet = client.post("/predict", data=image_bytes(), content_type="application/octet-stream")
    assert octet.status_code == 200


def test_several_files_get_one_result_each_in_order(client):
    files = [(image_bytes(seed=s), f"img{s}.jpg") for s in range(3)]
    response = client.post("/predict?topk=2", data=multipart(*files))
    assert response.status_code == 200
    results = response.get_json()["results"]
    assert [r["filename"] for r in results] == ["img0.jpg", "img1.jpg", "img2.jpg"]
    for (data, _), result in zip(files, results, strict=True):
        assert [p["index"] for p in result["predictions"]] == expected_top(
            client.application, data, 2
        )


def test_concurrent_requests_each_get_their_own_answer(start_app):
    app = start_app(max_batch=4, max_wait_ms=20)
    images = [image_bytes(seed=s) for s in range(12)]
    expected = [expected_top(app, data) for data in images]

    def call(data: bytes) -> list[int]:
        with app.test_client() as c:
            response = c.post("/predict", data=data, content_type="image/jpeg")
            assert response.status_code == 200
            return [p["index"] for p in response.get_json()["predictions"]]

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(call, images)) == expected


def test_chinese_labels(client):
    body = client.post("/predict?lang=zh", data=image_bytes(), content_type="image/jpeg").get_json()
    top = body["predictions"][0]
    assert top["label"] == labels.names("zh")[top["index"]]


@pytest.mark.parametrize("query", ["topk=0", "topk=21", "topk=three", "lang=fr"])
def test_bad_parameters_are_422_with_allowed_values(client, query):
    body = assert_error(
        client.post(f"/predict?{query}", data=image_bytes(), content_type="image/jpeg"),
        422,
        "invalid_parameter",
    )
    assert ("1 to 20" in body["error"]["message"]) or ("en, zh" in body["error"]["message"])


def test_bad_bodies_get_their_own_4xx(client):
    assert_error(client.post("/predict"), 400, "no_image")
    assert_error(client.post("/predict", data=b"", content_type="image/jpeg"), 400, "no_image")
    assert_error(
        client.post("/predict", data={"other": "x"}, content_type="multipart/form-data"),
        400,
        "no_image",
    )
    assert_error(
        client.post("/predict", data=b"hi", content_type="text/plain"),
        415,
        "unsupported_media_type",
    )
    assert_error(
        client.post("/predict", data=b"plain text", content_type="image/png"),
        415,
        "unsupported_media_type",
    )
    truncated = image_bytes(size=(640, 480))[:2000]
    body = assert_error(
        client.post("/predict", data=multipart((truncated, "cut.jpg"))), 400, "undecodable_image"
    )
    assert body["error"]["message"].startswith("cut.jpg:")


def test_limits_are_413(start_app):
    client = start_app(max_upload_mb=0.01, max_files=2).test_client()
    assert_error(
        client.post("/predict", data=b"x" * 20_000, content_type="image/jpeg"),
        413,
        "payload_too_large",
    )
    files = [(image_bytes(size=(32, 32), seed=s), f"{s}.jpg") for s in range(3)]
    assert_error(client.post("/predict", data=multipart(*files)), 413, "too_many_files")
    client = start_app(max_pixels=100_000).test_client()
    assert_error(
        client.post(
            "/predict", data=image_bytes("PNG", size=(1000, 1000)), content_type="image/png"
        ),
        413,
        "image_too_large",
    )


def test_overload_is_503_with_retry_after(start_app):
    app = start_app(max_batch=1, queue_max=1)
    engine = app.extensions["wanwu.core"].engine
    held = engine.batcher.reserve(1, 1e12)  # the only place in the queue is taken
    try:
        response = app.test_client().post("/predict", data=image_bytes(), content_type="image/jpeg")
        assert_error(response, 503, "overloaded")
        assert response.headers["Retry-After"] == "1"
    finally:
        held.__exit__(None, None, None)


def test_unready_worker_says_503(tiny_model_path):
    from app.engine import Engine
    from app.model import Classifier
    from app.web import create_app
    from tests.conftest import make_settings

    settings = make_settings(tiny_model_path)
    app = create_app(settings, Engine(Classifier.load(tiny_model_path), settings))
    client = app.test_client()
    assert_error(client.get("/readyz"), 503, "not_ready")
    response = client.post("/predict", data=image_bytes(), content_type="image/jpeg")
    assert_error(response, 503, "not_ready")
    assert "Retry-After" in response.headers
    assert client.get("/healthz").status_code == 200


def test_health_ready_and_model_info(client):
    assert client.get("/healthz").get_json()["model"]["trained"] is False
    assert client.get("/readyz").get_json() == {"status": "ready", "workers_ready": 1, "workers": 1}
    info = client.get("/v1/model").get_json()
    assert info["manifest"]["trained"] is False and info["device"] == "cpu"
    assert (info["precision"], info["precision_reason"]) == ("fp32", "WANWU_PRECISION=fp32")
    assert (info["format"], info["runtime"], info["platform"]) == (
        "torchscript",
        "torchscript",
        "pytorch_torchscript",
    )
    assert info["batching"]["max_batch"] == 4


def test_request_id_is_echoed_or_made(client):
    assert (
        client.get("/healthz", headers={"X-Request-ID": "abc-1"}).headers["X-Request-ID"] == "abc-1"
    )
    assert len(client.get("/healthz").headers["X-Request-ID"]) == 32


def test_unknown_route_and_method_are_json(client):
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/predict"), 405, "method_not_allowed")


def test_api_keys_guard_predict_only(start_app):
    client = start_app(api_keys=("k1", "k2")).test_client()
    image = image_bytes()
    assert_error(
        client.post("/predict", data=image, content_type="image/jpeg"), 401, "unauthorized"
    )
    assert_error(
        client.post(
            "/predict",
            data=image,
            content_type="image/jpeg",
            headers={"Authorization": "Bearer nope"},
        ),
        401,
        "unauthorized",
    )
    ok = client.post(
        "/predict", data=image, content_type="image/jpeg", headers={"Authorization": "Bearer k2"}
    )
    assert ok.status_code == 200
    assert client.get("/healthz").status_code == 200


def test_model_failure_is_a_500_and_the_worker_survives(start_app, monkeypatch):
    app = start_app()
    classifier = app.extensions["wanwu.core"].engine.classifier
    original = classifier.module

    def broken(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")

    monkeypatch.setattr(classifier.backend, "module", broken)
    client = app.test_client()
    assert_error(
        client.post("/predict", data=image_bytes(), content_type="image/jpeg"), 500, "internal"
    )
    monkeypatch.setattr(classifier.backend, "module", original)
    assert client.post("/predict", data=image_bytes(), content_type="image/jpeg").status_code == 200


def test_upload_page_renders_with_untrained_banner(client):
    page = client.get("/").get_data(as_text=True)
    assert 'type="file"' in page and "Untrained model" in page


def test_one_json_log_line_per_request_without_secrets(start_app, caplog):
    client = start_app(api_keys=("s3cret-key",)).test_client()
    with caplog.at_level(logging.INFO, logger="wanwu.access"):
        response = client.post(
            "/predict",
            data=image_bytes(),
            content_type="image/jpeg",
            headers={"X-Request-ID": "req-42", "Authorization": "Bearer s3cret-key"},
        )
    assert response.status_code == 200
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "wanwu.access"]
    assert len(lines) == 1
    line = lines[0]
    assert line["request_id"] == "req-42" and line["route"] == "/predict"
    assert line["status"] == 200 and line["images"] == 1 and line["batch_size"] == 1
    assert set(line["timing_ms"]) == {"queue", "inference", "total"}
    assert line["bytes_in"] > 0
    assert "s3cret-key" not in caplog.text


def test_metrics_can_require_a_key(start_app):
    client = start_app(api_keys=("k",), metrics_public=False).test_client()
    assert_error(client.get("/metrics"), 401, "unauthorized")
    scraped = client.get("/metrics", headers={"Authorization": "Bearer k"})
    assert scraped.status_code == 200 and b"wanwu_requests_total" in scraped.data
