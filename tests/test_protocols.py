"""Every protocol is one service: one batcher, one set of metrics."""

from __future__ import annotations

import base64
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import torch
from prometheus_client.parser import text_string_to_metric_families

from benchkit.images import image_bytes

OIP_REQUEST = {
    "inputs": [
        {
            "name": "IMAGE",
            "shape": [1],
            "datatype": "BYTES",
            "data": [base64.b64encode(image_bytes(seed=1)).decode()],
        }
    ]
}


def wait_for(condition, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the service never reached the expected state"
        time.sleep(0.01)


def test_torchserve_and_oip_requests_share_one_forward_pass(start_app, monkeypatch):
    app = start_app(max_batch=4, max_wait_ms=0)
    engine = app.extensions["wanwu.core"].engine
    classifier = engine.classifier
    original = classifier.module
    gate, entered, sizes = threading.Event(), threading.Event(), []

    def gated(x: torch.Tensor) -> torch.Tensor:
        sizes.append(x.shape[0])
        entered.set()
        gate.wait(30)
        return original(x)

    monkeypatch.setattr(classifier.backend, "module", gated)
    # A first image holds the model, so the two protocols' images queue behind it.
    with engine.admit(1, time.monotonic()) as reservation:
        blocker = reservation.submit(torch.zeros(3, 224, 224))
    assert entered.wait(30)
    with ThreadPoolExecutor(2) as pool:
        torchserve = pool.submit(
            app.test_client().put, "/predictions/tiny", data=image_bytes(seed=0)
        )
        oip = pool.submit(app.test_client().post, "/v2/models/tiny/infer", json=OIP_REQUEST)
        wait_for(lambda: engine.batcher.queued == 2)  # both decoded and waiting
        gate.set()
        assert torchserve.result(30).status_code == 200
        assert oip.result(30).status_code == 200
    blocker.result(30)
    assert sizes == [1, 2]


def test_request_metrics_tell_the_protocols_apart_by_route(client):
    assert client.put("/predictions/tiny", data=image_bytes()).status_code == 200
    assert client.post("/v2/models/tiny/infer", json=OIP_REQUEST).status_code == 200
    assert client.put("/predictions/nope", data=image_bytes()).status_code == 404
    text = client.get("/metrics").get_data(as_text=True)
    [requests] = [f for f in text_string_to_metric_families(text) if f.name == "wanwu_requests"]
    seen = {
        (s.labels["route"], s.labels["status"])
        for s in requests.samples
        if s.name == "wanwu_requests_total" and s.value > 0
    }
    assert {
        ("/predictions/<model_name>", "200"),
        ("/predictions/<model_name>", "404"),
        ("/v2/models/<model_name>/infer", "200"),
    } <= seen
