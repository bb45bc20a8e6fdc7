"""Open Inference Protocol v2 through Flask's test client, with bodies tritonclient encodes."""

from __future__ import annotations

import base64
import gzip
import json

import numpy as np
import pytest
import tritonclient.http as triton

from benchkit.images import image_bytes
from tests.conftest import make_settings

INFER = "/v2/models/tiny/infer"


def assert_oip_error(response, status: int) -> str:
    """OIP's error shape: {"error": message}."""
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"]
    return body["error"]


def images_input(images: list[bytes], binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("IMAGE", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=binary)
    return tensor


def triton_infer(client, inputs, outputs=None, headers=None) -> triton.InferResult:
    """Encode and decode the way tritonclient does; only the transport is Flask's."""
    body, json_size = triton.InferenceServerClient.generate_request_body(inputs, outputs)
    headers = dict(headers or {})
    if json_size is not None:
        headers["Inference-Header-Content-Length"] = str(json_size)
    response = client.post(INFER, data=body, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    length = response.headers.get("Inference-Header-Content-Length")
    return triton.InferenceServerClient.parse_response_body(
        response.get_data(), header_length=int(length) if length else None
    )


def predict_top(client, data: bytes, k: int) -> list[dict]:
    response = client.post(f"/predict?topk={k}", data=data, content_type="image/jpeg")
    return response.get_json()["predictions"]


def test_health_server_and_model_metadata(client):
    assert client.get("/v2/health/live").get_json() == {"live": True}
    assert client.get("/v2/health/ready").get_json() == {"ready": True}
    assert client.get("/v2").get_json()["extensions"] == [
        "binary_tensor_data",
        "classification",
        "model_configuration",
        "statistics",
    ]
    meta = client.get("/v2/models/tiny").get_json()
    assert meta["platform"] == "pytorch_torchscript"
    assert meta["inputs"] == [{"name": "IMAGE", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "PROBS", "datatype": "FP32", "shape": [-1, 1000]}]
    [version] = meta["versions"]
    assert client.get(f"/v2/models/tiny/versions/{version}").get_json() == meta
    assert client.get("/v2/models/tiny/ready").get_json() == {"name": "tiny", "ready": True}
    assert client.get(f"/v2/models/tiny/versions/{version}/ready").status_code == 200
    assert_oip_error(client.get("/v2/models/other"), 404)
    assert_oip_error(client.get("/v2/models/tiny/versions/0/ready"), 404)


def test_binary_probabilities_match_predict(client):
    images = [image_bytes(seed=s) for s in range(2)]
    result = triton_infer(client, [images_input(images)])
    probs = result.as_numpy("PROBS")
    assert probs.shape == (2, 1000) and probs.dtype == np.float32
    for row, data in zip(probs, images, strict=True):
        for p in predict_top(client, data, 5):
            assert row[p["index"]] == pytest.approx(p["score"], abs=1e-6)
        assert int(row.argmax()) == predict_top(client, data, 1)[0]["index"]


def test_classification_extension_binary_and_json(client):
    images = [image_bytes(seed=s) for s in range(2)]
    requested = triton.InferRequestedOutput("PROBS", class_count=3)
    classes = triton_infer(client, [images_input(images)], [requested]).as_numpy("PROBS")
    assert classes.shape == (2, 3)
    for row, data in zip(classes, images, strict=True):
        expected = [
            f"{p['score']:.6f}:{p['index']}:{p['label']}" for p in predict_top(client, data, 3)
        ]
        assert [c.decode() for c in row] == expected
    # The same in JSON: base64 strings in, classification strings out.
    request = {
        "id": "r1",
        "inputs": [
            {
                "name": "IMAGE",
                "shape": [2, 1],
                "datatype": "BYTES",
                "data": [[base64.b64encode(d).decode()] for d in images],
            }
        ],
        "outputs": [{"name": "PROBS", "parameters": {"classification": 3}}],
    }
    answer = client.post(INFER, json=request).get_json()
    assert answer["id"] == "r1" and answer["model_name"] == "tiny"
    [output] = answer["outputs"]
    assert output["datatype"] == "BYTES" and output["shape"] == [2, 3]
    assert output["data"] == [c.decode() for row in classes for c in row]


def test_json_probabilities_and_a_raw_binary_request(client):
    image = image_bytes()
    request = {
        "inputs": [
            {
                "name": "IMAGE",
                "shape": [1],
                "datatype": "BYTES",
                "data": [base64.b64encode(image).decode()],
            }
        ]
    }
    [output] = client.post(INFER, json=request).get_json()["outputs"]
    assert output["datatype"] == "FP32" and output["shape"] == [1, 1000]
    top = predict_top(client, image, 1)[0]
    assert output["data"][top["index"]] == pytest.approx(top["score"], abs=1e-6)
    raw = client.post(INFER, data=image, headers={"Inference-Header-Content-Length": "0"})
    assert raw.get_json()["outputs"][0]["data"] == pytest.approx(output["data"], abs=1e-6)


def test_malformed_requests_are_400(client):
    image = base64.b64encode(image_bytes()).decode()

    def tensor(**fields):
        return {
            "inputs": [
                {"name": "IMAGE", "shape": [1], "datatype": "BYTES", "data": [image], **fields}
            ]
        }

    assert_oip_error(client.post(INFER, data=b"{nope", content_type="application/json"), 400)
    assert_oip_error(client.post(INFER, json=[1]), 400)
    assert_oip_error(client.post(INFER, json={"inputs": []}), 400)
    assert "IMAGE" in assert_oip_error(client.post(INFER, json=tensor(name="INPUT__0")), 400)
    assert_oip_error(client.post(INFER, json=tensor(datatype="FP32")), 400)
    assert_oip_error(client.post(INFER, json=tensor(shape=[2])), 400)
    assert_oip_error(client.post(INFER, json=tensor(shape=[1, 3, 224])), 400)
    assert_oip_error(client.post(INFER, json=tensor(data=["%%%"])), 400)
    assert_oip_error(client.post(INFER, json=tensor(data=[1])), 400)
    # The answer echoes `id`: a number, or text no UTF-8 answer can hold, is refused first.
    for ident in (10**30, 1.5, [1], "\ud800"):  # json.dumps writes "\\ud800", JSON's escape
        body = json.dumps({**tensor(), "id": ident})
        response = client.post(INFER, data=body, content_type="application/json")
        assert "'id'" in assert_oip_error(response, 400)
    bad_output = {**tensor(), "outputs": [{"name": "LOGITS"}]}
    assert "PROBS" in assert_oip_error(client.post(INFER, json=bad_output), 400)
    bad_k = {**tensor(), "outputs": [{"name": "PROBS", "parameters": {"classification": 0}}]}
    assert_oip_error(client.post(INFER, json=bad_k), 400)
    # Binary data cut short: the length prefix promises more than follows.
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "IMAGE",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": 8},
                }
            ]
        }
    ).encode()
    cut = header + b"\xff\x00\x00\x00abcd"
    headers = {"Inference-Header-Content-Length": str(len(header))}
    assert_oip_error(client.post(INFER, data=cut, headers=headers), 400)
    headers = {"Inference-Header-Content-Length": "999999"}
    assert_oip_error(client.post(INFER, data=header, headers=headers), 400)


def test_not_an_image_is_415_and_compression_is_refused(client):
    request = {
        "inputs": [
            {
                "name": "IMAGE",
                "shape": [1],
                "datatype": "BYTES",
                "data": [base64.b64encode(b"%PDF-1.4").decode()],
            }
        ]
    }
    assert "IMAGE[0]" in assert_oip_error(client.post(INFER, json=request), 415)
    body = gzip.compress(json.dumps(request).encode())
    assert_oip_error(client.post(INFER, data=body, headers={"Content-Encoding": "gzip"}), 415)


def test_keys_limits_and_overload(start_app):
    client = start_app(api_keys=("k1",), max_files=2, max_upload_mb=0.05).test_client()
    request = {
        "inputs": [
            {
                "name": "IMAGE",
                "shape": [1],
                "datatype": "BYTES",
                "data": [base64.b64encode(image_bytes(size=(32, 32))).decode()],
            }
        ]
    }
    assert_oip_error(client.post(INFER, json=request), 401)
    auth = {"Authorization": "Bearer k1"}
    assert client.post(INFER, json=request, headers=auth).status_code == 200
    assert client.get("/v2/health/ready").status_code == 200  # health needs no key
    three = [image_bytes(size=(32, 32), seed=s) for s in range(3)]
    body, size = triton.InferenceServerClient.generate_request_body([images_input(three)])
    headers = {**auth, "Inference-Header-Content-Length": str(size)}
    assert_oip_error(client.post(INFER, data=body, headers=headers), 413)
    assert_oip_error(client.post(INFER, data=b"x" * 60_000, headers=auth), 413)

    app = start_app(max_batch=1, queue_max=1)
    held = app.extensions["wanwu.core"].engine.batcher.reserve(1, 1e12)  # the only place is taken
    try:
        response = app.test_client().post(INFER, json={**request})
        assert_oip_error(response, 503)
        assert response.headers["Retry-After"] == "1"
    finally:
        held.__exit__(None, None, None)


def test_an_unready_worker_is_503(tiny_model_path):
    from app.engine import Engine
    from app.model import Classifier
    from app.web import create_app

    settings = make_settings(tiny_model_path)
    cold = create_app(settings, Engine(Classifier.load(tiny_model_path), settings)).test_client()
    assert cold.get("/v2/health/live").status_code == 200
    assert_oip_error(cold.get("/v2/health/ready"), 503)
    assert_oip_error(cold.get("/v2/models/tiny/ready"), 503)


def test_a_tensor_over_the_file_limit_is_refused_before_it_is_split(start_app):
    client = start_app(max_files=2).test_client()
    header = {"inputs": [{"name": "IMAGE", "shape": [1_000_000], "datatype": "BYTES"}]}
    elements = b"".join(len(b"x").to_bytes(4, "little") + b"x" for _ in range(5))
    for shape, status, says in (([1_000_000], 413, "WANWU_MAX_FILES"), ([2], 400, "more than 2")):
        header["inputs"][0]["shape"] = shape
        head = json.dumps(header).encode()
        response = client.post(
            INFER, data=head + elements, headers={"Inference-Header-Content-Length": str(len(head))}
        )
        assert says in assert_oip_error(response, status)
