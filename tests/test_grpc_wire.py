"""gRPC's typed tensor contents read into the core's request: counted before they are read."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from app import errors
from app.adapters import grpc_wire, tensor_io
from app.grpc_proto import grpc_service_pb2 as pb
from app.repository.triton import plan, read_config
from app.tensor_model import TensorModel
from benchkit import triton_repo


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> TensorModel:
    folder = triton_repo.scaled(tmp_path_factory.mktemp("repo"))  # y = x * scale
    return TensorModel.load(plan(folder, "1", read_config(folder), "cpu"))


def typed(x: object, x_shape: list[int]) -> pb.ModelInferRequest:
    """A ModelInfer request as a plain gRPC client may build it: numbers in fp32_contents."""
    request = pb.ModelInferRequest(model_name="two")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=x_shape)
    tensor.contents.fp32_contents.extend(x)
    scale = request.inputs.add(name="scale", datatype="FP32", shape=[1, 1])
    scale.contents.fp32_contents.append(3.0)
    return request


def test_typed_contents_are_served(two):
    rows = tensor_io.rows(two, grpc_wire.infer_request(typed([1.0, 2.0], [1, 2])))
    (y,) = two(two.collate(rows))[0]
    assert y.tolist() == [3.0, 6.0]


def test_typed_contents_their_shape_does_not_hold_are_refused_unread(two):
    request = typed(np.arange(1_000_000, dtype=np.float32), [1, 2])
    tracemalloc.start()
    try:
        with pytest.raises(errors.BadRequest, match="unexpected number of elements 1000000"):
            tensor_io.rows(two, grpc_wire.infer_request(request))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # as a list, the values would be about 32 MB of Python floats


@pytest.mark.parametrize("whose", ["Request", "Input", "Output"])
def test_a_parameter_map_past_the_bound_is_refused_unread(whose):
    request = typed([1.0, 2.0], [1, 2])
    params = {
        "Request": request.parameters,
        "Input": request.inputs[0].parameters,
        "Output": request.outputs.add(name="y").parameters,
    }[whose]
    for i in range(100_000):
        params[f"p{i}"].string_param = "x" * 16
    tracemalloc.start()
    try:
        with pytest.raises(errors.BadRequest, match=f"{whose} parameters hold 100000 entries"):
            grpc_wire.infer_request(request)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # as a dict, the entries would be about 20 MB of Python objects
