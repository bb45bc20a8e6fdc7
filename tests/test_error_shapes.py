"""Every error condition through every HTTP protocol: each answer in that protocol's shape.

wanwu's `/predict` answers `{"error": {"code", "message"}}`, TorchServe's `/predictions`
`{"code", "type", "message"}`, OIP's `/v2` `{"error": "<message>"}`; all with wanwu's status
codes, and `Retry-After` on every 503. The body-size refusal of the Gunicorn intake is checked
under real Gunicorn in tests/test_protocols_gunicorn.py.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import torch

from app.engine import Engine
from app.model import Classifier
from app.web import create_app
from benchkit.images import image_bytes
from tests.conftest import make_settings

JPEG = image_bytes(seed=0)
# TorchServe's exception names, as its own frontend reports them.
TS_TYPES = {
    401: "InvalidKeyException",
    404: "ModelNotFoundException",
    405: "MethodNotAllowedException",
    413: "RequestEntityTooLargeException",
    415: "UnsupportedMediaTypeException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
    504: "RequestTimeoutException",
}


@dataclass(frozen=True)
class Protocol:
    name: str
    path: Callable[[str], str]  # model name -> the infer path
    send: Callable  # (client, path, images, headers) -> response
    check: Callable[[dict, int, str], None]  # (body, status, wanwu code)


def _rest_send(client, path, images, headers):
    if len(images) == 1:
        return client.post(path, data=images[0], content_type="image/jpeg", headers=headers)
    if not images:
        return client.post(path, data=b"", content_type="image/jpeg", headers=headers)
    files = {"file": [(io.BytesIO(i), f"{n}.jpg") for n, i in enumerate(images)]}
    return client.post(path, data=files, content_type="multipart/form-data", headers=headers)


def _ts_send(client, path, images, headers):
    if len(images) <= 1:
        return client.put(path, data=images[0] if images else b"", headers=headers)
    files = {"data": [(io.BytesIO(i), f"{n}.jpg") for n, i in enumerate(images)]}
    return client.post(path, data=files, content_type="multipart/form-data", headers=headers)


def _oip_send(client, path, images, headers):
    data = [base64.b64encode(i).decode() for i in images]
    tensor = {"name": "IMAGE", "datatype": "BYTES", "shape": [len(images)], "data": data}
    return client.post(path, json={"inputs": [tensor]}, headers=headers)


def _rest_check(body: dict, status: int, code: str) -> None:
    assert list(body) == ["error"] and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code and body["error"]["message"]


def _ts_check(body: dict, status: int, code: str) -> None:
    assert set(body) == {"code", "type", "message"} and body["message"]
    expected = "ResourceNotFoundException" if code == "not_found" else TS_TYPES.get(status)
    assert body["code"] == status and body["type"] == (expected or "BadRequestException")


def _oip_check(body: dict, status: int, code: str) -> None:
    assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"]


PROTOCOLS = [
    Protocol("rest", lambda model: "/predict", _rest_send, _rest_check),
    Protocol("torchserve", lambda model: f"/predictions/{model}", _ts_send, _ts_check),
    Protocol("oip", lambda model: f"/v2/models/{model}/infer", _oip_send, _oip_check),
]


def assert_shape(protocol: Protocol, response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    body = response.get_json()
    protocol.check(body, status, code)
    if status == 503:
        assert response.headers["Retry-After"] == "1"
    return body


@pytest.fixture(params=PROTOCOLS, ids=lambda p: p.name)
def protocol(request) -> Protocol:
    return request.param


# (name, app settings, images sent, status, wanwu code): conditions one request shows.
REQUEST_CASES = [
    ("bad_key", {"api_keys": ("k",)}, [JPEG], 401, "unauthorized"),
    ("no_image", {}, [], 400, "no_image"),
    ("corrupt_image", {}, [JPEG[:300]], 400, "undecodable_image"),
    ("not_an_image", {}, [b"hello, this is text"], 415, "unsupported_media_type"),
    ("too_many_files", {"max_files": 2}, [JPEG] * 3, 413, "too_many_files"),
    ("too_many_pixels", {"max_pixels": 224 * 224}, [JPEG], 413, "image_too_large"),
    ("body_too_large", {"max_upload_mb": 0.001}, [JPEG], 413, "payload_too_large"),
]


@pytest.mark.parametrize(
    ("name", "overrides", "images", "status", "code"),
    REQUEST_CASES,
    ids=[c[0] for c in REQUEST_CASES],
)
def test_request_errors(start_app, protocol, name, overrides, images, status, code):
    client = start_app(**overrides).test_client()
    response = protocol.send(client, protocol.path("tiny"), images, {})
    body = assert_shape(protocol, response, status, code)
    if status == 413:  # every size refusal names the setting that raises it
        assert "WANWU_MAX_" in str(body), body


def test_routing_errors(client, protocol):
    path = protocol.path("tiny")
    assert_shape(protocol, client.get(path), 405, "method_not_allowed")
    assert_shape(protocol, client.post(path + "/x/y"), 404, "not_found")
    if protocol.name != "rest":  # /predict names no model
        missing = protocol.send(client, protocol.path("nope"), [JPEG], {})
        assert_shape(protocol, missing, 404, "model_not_found")


def test_not_ready_and_overloaded(tiny_model_path, start_app, protocol):
    settings = make_settings(tiny_model_path)
    cold = create_cold_app(settings)
    assert_shape(protocol, protocol.send(cold, protocol.path("tiny"), [JPEG], {}), 503, "not_ready")
    app = start_app()
    engine = app.extensions["wanwu.core"].engine
    with engine.admit(engine.settings.queue_max, time.monotonic()):  # every place held
        response = protocol.send(app.test_client(), protocol.path("tiny"), [JPEG], {})
    assert_shape(protocol, response, 503, "overloaded")


def create_cold_app(settings):
    """An app whose engine was never started: its model is not warm."""
    return create_app(settings, Engine(Classifier.load(settings.model), settings)).test_client()


def test_model_failure(start_app, protocol, monkeypatch):
    app = start_app()
    backend = app.extensions["wanwu.core"].engine.classifier.backend

    def broken(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")

    monkeypatch.setattr(backend, "module", broken)
    response = protocol.send(app.test_client(), protocol.path("tiny"), [JPEG], {})
    assert_shape(protocol, response, 500, "internal")


def test_deadline(start_app, protocol, monkeypatch):
    app = start_app(max_wait_ms=0, timeout_ms=1)
    engine = app.extensions["wanwu.core"].engine
    backend = engine.classifier.backend
    original, gate, entered = backend.module, threading.Event(), threading.Event()

    def gated(x: torch.Tensor) -> torch.Tensor:
        entered.set()
        gate.wait(30)
        return original(x)

    monkeypatch.setattr(backend, "module", gated)
    # A first image, with a deadline a minute away, holds the model.
    with engine.admit(1, time.monotonic() + 60) as reservation:
        blocker = reservation.submit(torch.zeros(3, 224, 224))
    assert entered.wait(30)
    with ThreadPoolExecutor(1) as pool:
        sent = pool.submit(protocol.send, app.test_client(), protocol.path("tiny"), [JPEG], {})
        until(lambda: engine.batcher.queued == 1)  # admitted: its 1 ms deadline has started
        queued = time.monotonic()
        until(lambda: time.monotonic() > queued + 0.001)  # and has passed
        gate.set()
        response = sent.result(30)
    blocker.result(30)
    assert_shape(protocol, response, 504, "timeout")


def until(condition: Callable[[], bool]) -> None:
    """Wait for a state of the service (30 s at most)."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "the service never reached the expected state"
        time.sleep(0.001)
