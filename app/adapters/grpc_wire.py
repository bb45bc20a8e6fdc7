"""OIP v2 over gRPC on the wire: a ModelInferRequest read into the core's `InferRequest`,
the core's outputs written into a ModelInferResponse.

Policy: each input's contents are read as they came, raw (`raw_input_contents`, one entry per
input, as tritonclient sends them) or typed (`contents`: BYTES elements as bytes, numbers as
numbers; FP16 and BF16 only raw); parameters become the plain values OIP's JSON would hold.
Every output is answered in `raw_output_contents`. Values are checked where they are used
(app/adapters/oip_tensors.py, tensor_io.py), the same for REST and gRPC.
"""

from __future__ import annotations

from typing import Any

from app import errors
from app.adapters import oip_tensors
from app.core.types import InferInput, InferOutput, InferRequest, RequestedOutput
from app.grpc_proto import grpc_service_pb2 as pb


def _parameters(params: Any, whose: str, drop: str = "") -> dict[str, Any]:
    """An InferParameter map as the plain values OIP's JSON would hold, less `drop`; counted
    before any entry is read (oip_tensors.MAX_PARAMETERS, as over REST)."""
    oip_tensors.count_parameters(len(params), whose)
    return {  # an InferParameter with no value set is absent, as a JSON null would be
        key: getattr(value, choice)
        for key, value in params.items()
        if (choice := value.WhichOneof("parameter_choice")) and key != drop
    }


def bound_images(request: pb.ModelInferRequest, most: int) -> None:
    """Refuse more encoded images in an image model's `bytes_contents` than `most`
    (WANWU_MAX_FILES) before they are read."""
    if len(request.inputs) == 1 and len(request.inputs[0].contents.bytes_contents) > most:
        raise errors.too_many_files(len(request.inputs[0].contents.bytes_contents), most)


def infer_request(request: pb.ModelInferRequest) -> InferRequest:
    """A ModelInferRequest as the core's request, read once: each input's raw or typed
    contents as they came, every output binary (raw_output_contents, whatever an output's
    `binary_data` says); the request's parameters (`explain`) bounded as over HTTP."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise errors.BadRequest("raw_input_contents must hold one entry per input.")
    parameters = _parameters(request.parameters, "Request")
    outputs = [
        RequestedOutput(o.name, _parameters(o.parameters, "Output", drop="binary_data"))
        for o in request.outputs
    ]
    return InferRequest(
        [_input(tensor, raw[i] if raw else None) for i, tensor in enumerate(request.inputs)],
        outputs or None,
        {**parameters, "binary_data_output": True},
    )


# InferTensorContents' field for each datatype (FP16 and BF16 travel raw only).
_CONTENTS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "INT8": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _input(tensor: Any, raw: bytes | None) -> InferInput:
    """One input, its raw contents or its typed contents' values.

    The values stay protobuf's repeated field, read only once counted against a shape the
    model accepts: as a Python list, 20 MB of FP32 would be about 160 MB of objects.
    """
    parameters = _parameters(tensor.parameters, "Input")
    if raw is not None:
        return InferInput(tensor.name, tensor.datatype, list(tensor.shape), parameters, raw=raw)
    field = _CONTENTS.get(tensor.datatype)
    if field is None:
        raise errors.BadRequest(f"input '{tensor.name}' is {tensor.datatype}: send it raw.")
    values = getattr(tensor.contents, field)
    return InferInput(tensor.name, tensor.datatype, list(tensor.shape), parameters, values)


def answer(request: Any, model: Any, outputs: list[InferOutput]) -> pb.ModelInferResponse:
    """The infer response, every output in raw_output_contents."""
    answer = pb.ModelInferResponse(
        model_name=model.name, model_version=model.version, id=request.id
    )
    for output in outputs:
        answer.outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
        answer.raw_output_contents.append(output.raw)
    return answer
