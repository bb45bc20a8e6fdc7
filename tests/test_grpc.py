"""OIP v2 over gRPC with the real tritonclient.grpc, against real Gunicorn and in-process.

Each answer must match /predict's for the same image; each error has its status code.
"""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import psutil
import pytest
import requests
import torch
import tritonclient.grpc as triton
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from tritonclient.grpc import model_config_pb2 as model_config
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from benchkit.grpc_stubs import PROTO_DIR, STUBS, generate
from benchkit.grpcload import (
    grpc_server,
    image_tensor,
    own_connection,
    reserved_port,
    sockets_by_worker,
    wait_listening,
)
from benchkit.images import image_bytes, sample_photos

pytestmark = pytest.mark.integration

KEY = "grpc-test-key"
BEARER = {"authorization": f"Bearer {KEY}"}


def test_committed_stubs_are_what_grpcio_tools_generates(tmp_path):
    for path in generate(tmp_path):
        assert path.read_bytes() == (PROTO_DIR / path.name).read_bytes(), path.name
    assert sorted(p.name for p in PROTO_DIR.glob("*_pb2*.py")) == sorted(STUBS)


def test_stubs_describe_what_tritonclient_speaks():
    """Byte-identical descriptors: both stub sets load in one process, and the wire agrees."""
    from app.grpc_proto import grpc_service_pb2, model_config_pb2

    assert grpc_service_pb2.DESCRIPTOR.serialized_pb == service_pb2.DESCRIPTOR.serialized_pb
    assert model_config_pb2.DESCRIPTOR.serialized_pb == model_config.DESCRIPTOR.serialized_pb


# -- against Gunicorn ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tiny_model_path, tmp_path_factory):
    with grpc_server(
        tmp_path_factory.mktemp("grpc"),
        workers=2,
        model=tiny_model_path,
        api_keys=KEY,
        max_upload_mb=1,
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    client = triton.InferenceServerClient(server.grpc_address)
    yield client
    client.close()


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    """A few real photos where ../shared has them, and generated ones."""
    return [p.read_bytes() for p in sample_photos()[::40]] + [image_bytes(seed=n) for n in (0, 1)]


def predict_top5(server, data: bytes) -> list[dict]:
    response = requests.post(
        f"{server.url}/predict?topk=5",
        data=data,
        headers={"Content-Type": "image/jpeg", "Authorization": f"Bearer {KEY}"},
        timeout=60,
    )
    response.raise_for_status()
    return response.json()["predictions"]


def status_of(call, *args, **kwargs) -> str:
    with pytest.raises(InferenceServerException) as error:
        call(*args, **kwargs)
    return error.value.status()


def test_health_and_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("tiny")
    assert not client.is_model_ready("resnet50")
    assert set(client.get_server_metadata(as_json=True)["extensions"]) >= {"classification"}
    model = client.get_model_metadata("tiny", as_json=True)
    assert model["name"] == "tiny" and model["platform"]
    assert model["inputs"] == [{"name": "IMAGE", "datatype": "BYTES", "shape": ["-1"]}]
    assert model["outputs"] == [{"name": "PROBS", "datatype": "FP32", "shape": ["-1", "1000"]}]
    assert status_of(client.get_model_metadata, "resnet50") == "StatusCode.NOT_FOUND"


def test_infer_matches_predict(server, client, images):
    probs = client.infer("tiny", [image_tensor(images)], headers=BEARER).as_numpy("PROBS")
    assert probs.shape == (len(images), 1000)
    for row, data in zip(probs, images, strict=True):
        top = predict_top5(server, data)
        indices = [p["index"] for p in top]
        assert row.argmax() == indices[0]
        assert np.allclose(row[indices], [p["score"] for p in top], rtol=0, atol=1e-6)


def test_classification_extension_matches_predict(server, client, images):
    # A [N, 1] input, as Triton's image_client sends it.
    tensor = triton.InferInput("IMAGE", [len(images), 1], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_).reshape(-1, 1))
    wanted = triton.InferRequestedOutput("PROBS", class_count=5)
    answer = client.infer("tiny", [tensor], outputs=[wanted], headers=BEARER, request_id="r7")
    assert answer.get_response().id == "r7"
    for row, data in zip(answer.as_numpy("PROBS"), images, strict=True):
        scores, indices, labels = zip(*(c.decode().split(":", 2) for c in row), strict=True)
        top = predict_top5(server, data)  # "score:index:label", most probable first
        assert list(labels) == [p["label"] for p in top]
        assert list(map(int, indices)) == [p["index"] for p in top]
        assert np.allclose(np.array(scores, float), [p["score"] for p in top], rtol=0, atol=1e-6)


def test_errors_have_their_status_codes(server, client):
    image = [image_tensor([image_bytes()])]
    assert status_of(client.infer, "tiny", image) == "StatusCode.UNAUTHENTICATED"
    wrong = {"authorization": "Bearer nope"}
    assert status_of(client.infer, "tiny", image, headers=wrong) == "StatusCode.UNAUTHENTICATED"
    assert status_of(client.infer, "resnet50", image, headers=BEARER) == "StatusCode.NOT_FOUND"
    pdf = [image_tensor([b"%PDF-1.4 not an image"])]
    with pytest.raises(InferenceServerException) as error:
        client.infer("tiny", pdf, headers=BEARER)
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "IMAGE[0]" in error.value.message()
    fp32 = triton.InferInput("IMAGE", [1], "FP32")
    fp32.set_data_from_numpy(np.zeros(1, dtype=np.float32))
    assert status_of(client.infer, "tiny", [fp32], headers=BEARER) == "StatusCode.INVALID_ARGUMENT"
    # Over WANWU_MAX_UPLOAD_MB (1 here): gRPC refuses the message before it is read.
    big = [image_tensor([bytes(2 * 1024 * 1024)])]
    assert status_of(client.infer, "tiny", big, headers=BEARER) == "StatusCode.RESOURCE_EXHAUSTED"
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    route = 'route="/inference.GRPCInferenceService/ModelInfer"'
    for status in ("OK", "UNAUTHENTICATED", "NOT_FOUND", "INVALID_ARGUMENT"):
        assert f'{route},status="{status}"' in text


def test_every_worker_serves_the_port(server):
    # The kernel spreads connections over the workers' sockets (SO_REUSEPORT): with 24, all
    # on one of two workers has a chance of 2 ** -23.
    clients = [own_connection(server.grpc_address) for _ in range(24)]
    assert all(c.is_server_ready() for c in clients)
    held = sockets_by_worker(server.worker_pids(), server.grpc_port, psutil.CONN_ESTABLISHED)
    for c in clients:
        c.close()
    # At least these 24 (the module's client may hold one more).
    assert sum(held.values()) >= 24 and all(held.values()), held


def test_reload_hands_the_port_to_new_workers(tiny_model_path, gunicorn):
    with reserved_port() as port:
        with gunicorn(workers=1, model=tiny_model_path, grpc_bind=f"127.0.0.1:{port}") as srv:
            [old] = srv.worker_pids()
            srv.signal(signal.SIGHUP)  # new workers start beside the old, which then exit
            wait_until(lambda: srv.worker_pids() not in ([], [old]), "no new worker started")
            wait_until(lambda: old not in srv.worker_pids(), "the old worker never exited")
            wait_listening(srv.worker_pids(), port)
            client = own_connection(f"127.0.0.1:{port}")
            answer = client.infer("tiny", [image_tensor([image_bytes()])])
            client.close()
    assert answer.as_numpy("PROBS").shape == (1, 1000)


# -- in-process: states Gunicorn cannot be held in -----------------------------------------------


def infer_request(images: list[bytes]) -> service_pb2.ModelInferRequest:
    """A ModelInfer request as a plain gRPC client builds it: images in bytes_contents."""
    request = service_pb2.ModelInferRequest(model_name="tiny")
    tensor = request.inputs.add(name="IMAGE", datatype="BYTES", shape=[len(images)])
    tensor.contents.bytes_contents.extend(images)
    return request


@pytest.fixture
def serve(start_app):
    """Start an app over the tiny model and its gRPC server; a raw stub and tritonclient."""
    from app.adapters import grpc as adapter

    servers = []

    def factory(**settings):
        with reserved_port() as port:
            app = start_app(grpc_bind=f"127.0.0.1:{port}", **settings)
            servers.append(adapter.serve(app.extensions["wanwu.core"]))
            address = f"127.0.0.1:{port}"
        channel = grpc.insecure_channel(address)
        return app, service_pb2_grpc.GRPCInferenceServiceStub(channel), address

    yield factory
    for server in servers:
        server.stop(None).wait()


def test_full_queue_is_resource_exhausted_with_retry_info(serve):
    _, stub, _ = serve(max_batch=2, queue_max=2)
    images = [image_bytes(seed=n) for n in range(3)]  # more than the queue admits at once
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(infer_request(images), timeout=30)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    [detail] = rpc_status.from_call(error.value).details
    retry = error_details_pb2.RetryInfo()
    assert detail.Unpack(retry) and retry.retry_delay.seconds == 1
    assert ("grpc-retry-pushback-ms", "1000") in error.value.trailing_metadata()


def wait_until(condition, failure: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.01)


class HeldModel:
    """The engine's model, held in a first forward pass (of one image) until `release()`."""

    def __init__(self, engine, monkeypatch) -> None:
        original, self.sizes, self.lock = engine.classifier.module, [], threading.Lock()

        def model(x: torch.Tensor) -> torch.Tensor:
            self.sizes.append(x.shape[0])
            with self.lock:  # the forward pass waits while the test holds the lock
                return original(x)

        monkeypatch.setattr(engine.classifier.backend, "module", model)
        self.lock.acquire()
        with engine.admit(1, time.monotonic()) as reservation:
            self.first = reservation.submit(torch.zeros(3, 224, 224))
        wait_until(lambda: self.sizes == [1], "the first image never reached the model")

    def release(self) -> None:
        self.lock.release()
        self.first.result(30)


def test_grpc_and_http_requests_share_one_forward_pass(serve, monkeypatch):
    app, _, address = serve(max_batch=2, max_wait_ms=0)
    engine = app.extensions["wanwu.core"].engine
    held = HeldModel(engine, monkeypatch)  # so that the two protocols' images queue behind it
    client = triton.InferenceServerClient(address)
    with ThreadPoolExecutor(2) as pool:
        over_grpc = pool.submit(client.infer, "tiny", [image_tensor([image_bytes(seed=0)])])
        over_http = pool.submit(
            app.test_client().post,
            "/predict",
            data=image_bytes(seed=1),
            content_type="image/jpeg",
        )
        wait_until(lambda: engine.batcher.queued == 2, "the two images never queued together")
        held.release()
        assert over_grpc.result(30).as_numpy("PROBS").shape == (1, 1000)
        assert over_http.result(30).status_code == 200
    client.close()
    assert held.sizes == [1, 2]


def test_expired_request_is_deadline_exceeded(serve, monkeypatch):
    app, _, address = serve(max_batch=2, max_wait_ms=0, timeout_ms=100)
    engine = app.extensions["wanwu.core"].engine
    held = HeldModel(engine, monkeypatch)
    client = triton.InferenceServerClient(address)
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(client.infer, "tiny", [image_tensor([image_bytes()])])
        wait_until(lambda: engine.batcher.queued == 1, "the image never queued")
        queued = time.monotonic()
        # The request arrived before it queued, so its 100 ms deadline has passed after this.
        wait_until(lambda: time.monotonic() > queued + 0.1, "the clock stopped")
        held.release()
        with pytest.raises(InferenceServerException) as error:
            call.result(30)
    client.close()
    assert error.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert held.sizes == [1]  # the expired image never reached the model


def test_rate_limit_counts_an_address_over_its_connections(serve):
    _, _, address = serve(rate_limit="2/hour")

    def call() -> None:  # each on a connection of its own: another port, the same address
        options = [("grpc.use_local_subchannel_pool", 1)]
        with grpc.insecure_channel(address, options=options) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            stub.ModelInfer(infer_request([image_bytes()]), timeout=30)

    with pytest.raises(grpc.RpcError) as error:
        for _ in range(3):  # two are answered within the hour
            call()
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "2/hour" in error.value.details()
    [detail] = rpc_status.from_call(error.value).details
    assert detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR)


def test_stopping_worker_is_unavailable_with_retry_info(serve):
    app, stub, _ = serve()
    app.extensions["wanwu.core"].engine.batcher.stop(10)
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(infer_request([image_bytes()]), timeout=30)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    [detail] = rpc_status.from_call(error.value).details
    assert detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR)


def test_an_output_parameter_without_a_value_is_absent_not_an_error(serve):
    _, stub, _ = serve()
    request = infer_request([image_bytes()])
    request.outputs.add(name="PROBS").parameters["classification"].SetInParent()
    answer = stub.ModelInfer(request, timeout=30)
    assert answer.outputs[0].datatype == "FP32"  # all scores, as with no classification asked
