"""Bounded requests against real Gunicorn and its real gRPC server: what a client names is
checked before work is done for it, and a refused request leaves its connection usable."""

from __future__ import annotations

import base64
import http.client
import json

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from app.adapters.oip_tensors import MAX_PARAMETERS, serialize_bytes
from benchkit.grpcload import grpc_server
from benchkit.images import image_bytes

pytestmark = pytest.mark.integration

DRAIN = 64 * 1024  # what gunicorn's own parser discards of a body the application left unread


@pytest.fixture(scope="module")
def server(tiny_model_path, tmp_path_factory):
    with grpc_server(tmp_path_factory.mktemp("fences"), workers=1, model=tiny_model_path) as srv:
        yield srv


def big_image() -> bytes:
    """A real image several times the drain: an uncompressed BMP."""
    data = image_bytes("BMP", size=(400, 300))
    assert len(data) > 4 * DRAIN
    return data


def infer_json(server, header: dict) -> requests.Response:
    return requests.post(f"{server.url}/v2/models/tiny/infer", json=header, timeout=60)


def image_input() -> dict:
    data = base64.b64encode(image_bytes()).decode()
    return {"name": "IMAGE", "datatype": "BYTES", "shape": [1], "data": [data]}


def test_an_output_named_twice_is_400_over_http(server):
    answer = infer_json(server, {"inputs": [image_input()], "outputs": [{"name": "PROBS"}] * 10000})
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("Output 'PROBS' is requested 10000 times")
    once = infer_json(server, {"inputs": [image_input()], "outputs": [{"name": "PROBS"}]})
    assert once.status_code == 200 and len(once.json()["outputs"]) == 1


@pytest.mark.parametrize("where", ["request", "input", "output"])
def test_parameters_past_the_bound_are_400_over_http(server, where):
    too_many = {f"p{i}": i for i in range(MAX_PARAMETERS + 1)}
    header = {"inputs": [image_input()], "outputs": [{"name": "PROBS"}]}
    {"request": header, "input": header["inputs"][0], "output": header["outputs"][0]}[where][
        "parameters"
    ] = too_many
    answer = infer_json(server, header)
    assert answer.status_code == 400
    assert answer.json()["error"] == (
        f"{where.capitalize()} parameters hold {MAX_PARAMETERS + 1} entries; "
        f"at most {MAX_PARAMETERS} are taken."
    )


def grpc_image() -> triton_grpc.InferInput:
    tensor = triton_grpc.InferInput("IMAGE", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([image_bytes()], dtype=np.object_))
    return tensor


def test_an_output_named_twice_is_invalid_argument_over_grpc(server):
    client = triton_grpc.InferenceServerClient(server.grpc_address)
    try:
        outputs = [triton_grpc.InferRequestedOutput("PROBS")] * 10000
        with pytest.raises(InferenceServerException) as error:
            client.infer("tiny", [grpc_image()], outputs=outputs)
        assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "requested 10000 times" in error.value.message()
        with pytest.raises(InferenceServerException) as error:
            client.infer("tiny", [grpc_image()], parameters={f"p{i}": i for i in range(17)})
        assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "Request parameters hold 17 entries" in error.value.message()
        answer = client.infer("tiny", [grpc_image()], outputs=outputs[:1])
        assert answer.as_numpy("PROBS").shape == (1, 1000)
    finally:
        client.close()


def test_a_refused_request_leaves_tritonclients_connection_usable(server):
    client = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        big = triton_http.InferInput("IMAGE", [1], "BYTES")
        big.set_data_from_numpy(np.array([big_image()], dtype=np.object_))
        with pytest.raises(InferenceServerException) as error:  # refused before the body
            client.infer("nope", [big])
        assert error.value.status() == "404"
        wrong = triton_http.InferInput("PIXELS", [1], "BYTES")
        wrong.set_data_from_numpy(np.array([big_image()], dtype=np.object_))
        with pytest.raises(InferenceServerException) as error:
            client.infer("tiny", [wrong])
        assert error.value.status() == "400"
        answer = client.infer("tiny", [big])  # the same pooled connection, its next request
        assert answer.as_numpy("PROBS").shape == (1, 1000)
    finally:
        client.close()


def test_a_refused_predict_keeps_the_connection_it_promises(server):
    connection = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=60)
    try:
        body = big_image()
        connection.request("POST", "/predict?topk=99", body, {"Content-Type": "image/jpeg"})
        refused = connection.getresponse()
        assert refused.status == 422 and json.loads(refused.read())["error"]["code"]
        assert refused.getheader("Connection", "keep-alive").lower() != "close"
        sock = connection.sock
        connection.request("POST", "/predict", body, {"Content-Type": "image/jpeg"})
        answer = connection.getresponse()
        assert answer.status == 200 and json.loads(answer.read())["predictions"]
        assert connection.sock is sock  # not reconnected behind the test's back
    finally:
        connection.close()


def test_grpc_answers_raw_whatever_binary_data_says(server):
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name="tiny")
        request.inputs.add(name="IMAGE", datatype="BYTES", shape=[1])
        request.raw_input_contents.append(serialize_bytes([image_bytes()]))
        request.outputs.add(name="PROBS").parameters["binary_data"].bool_param = False
        answer = stub.ModelInfer(request, timeout=60)
    assert answer.outputs[0].shape == [1, 1000] and len(answer.raw_output_contents[0]) == 4000
