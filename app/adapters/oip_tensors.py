"""OIP v2 tensors of an image model: the IMAGE input's encoded images, the PROBS output.

Policy (docs/MIGRATING.md): one input, `IMAGE`, a BYTES tensor `[N]` or `[N, 1]` of encoded
images, as binary data (each element a little-endian u32 length, then its bytes: Triton's
BYTES layout, over REST and in gRPC's raw contents alike) or as JSON base64 strings; one
output, `PROBS`, FP32 `[N, classes]` or, with the classification extension, BYTES `[N, k]` of
`"score:index:label"` with six decimals, as Triton formats it. Malformed tensors are 400s.
Both wires reach here as the core's types (`app.core.types`): the checks are the same.

Every list and count a client sends is bounded before work is done for it: one input, each
output named at most once (so at most the model's outputs: an answer is never a multiple of
what the model computed), and at most MAX_PARAMETERS entries in any `parameters` object.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from app import errors
from app.adapters import common
from app.core.types import InferInput, InferOutput, InferRequest, RequestedOutput
from app.model import Classifier

INPUT, OUTPUT = "IMAGE", "PROBS"
MAX_PARAMETERS = 16  # Triton reads a handful per request, input or output; none needs more
_NOT_BASE64 = f"In JSON, each {INPUT} element must be a base64 string of an encoded image."


@dataclass(frozen=True)
class Output:
    classification: int | None  # top-k as "score:index:label" strings, or None: all scores
    binary: bool


def images(request: InferRequest, most: int) -> list[bytes]:
    """Return the encoded images of the one input, from binary data, base64 JSON strings or
    gRPC's bytes; a shape of more than `most` (WANWU_MAX_FILES) is refused before anything is
    split."""
    inputs = request.inputs
    if inputs is None or len(inputs) != 1 or inputs[0] is None:
        raise errors.BadRequest(f"Send exactly one input, {INPUT!r}.")
    tensor = inputs[0]
    if tensor.name != INPUT:
        raise errors.BadRequest(f"Unknown input {tensor.name!r}: the input is {INPUT!r}.")
    if tensor.datatype != "BYTES":
        raise errors.BadRequest(f"{INPUT} must be BYTES (encoded images).")
    shape = tensor.shape
    if (
        not isinstance(shape, list)
        or len(shape) not in (1, 2)
        or not all(type(d) is int for d in shape)
        or shape[1:] not in ([], [1])
        or shape[0] < 0
    ):
        raise errors.BadRequest(f"The shape of {INPUT} must be [N] or [N, 1]; got {shape!r}.")
    if shape[0] > most:
        raise errors.too_many_files(shape[0], most)
    parameters = bounded_parameters(tensor.parameters, "Input")
    binary = _binary(tensor, parameters, request.binary)
    if binary is not None:
        elements = deserialize_bytes(binary, shape[0])
    else:
        elements = _flatten(tensor.data)
    if len(elements) != shape[0]:  # counted before any base64 is decoded
        held = f"more than {shape[0]}" if len(elements) > shape[0] else len(elements)
        raise errors.BadRequest(f"{INPUT} has shape {shape} but holds {held} elements.")
    if binary is not None:
        return elements
    # JSON's strings are base64; gRPC's bytes_contents are the encoded images themselves.
    return [v if isinstance(v, bytes) else common.base64_image(v, _NOT_BASE64) for v in elements]


def _binary(
    tensor: InferInput, parameters: dict[str, Any], following: memoryview
) -> bytes | memoryview | None:
    """The input's bytes in Triton's layout: its raw contents (gRPC), or over REST all the
    binary data after the JSON, sized by `binary_data_size` (or sent without `data`); None
    when its elements are JSON's."""
    if tensor.raw is not None:
        return tensor.raw
    if "binary_data_size" not in parameters and not (following and tensor.data is None):
        return None
    size = parameters.get("binary_data_size", len(following))
    if type(size) is not int or size != len(following):
        raise errors.BadRequest(
            f"binary_data_size is {size!r} but {len(following)} bytes follow the JSON."
        )
    return following


def deserialize_bytes(data: bytes | memoryview, most: int) -> list[bytes]:
    """Split a BYTES tensor: each element a u32 little-endian length, then its bytes; one
    element past `most` ends the split (the caller refuses the count)."""
    images, offset = [], 0
    while offset < len(data) and len(images) <= most:
        if offset + 4 > len(data):
            raise errors.BadRequest("The binary BYTES tensor ends inside a length prefix.")
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise errors.BadRequest("The binary BYTES tensor ends inside an element.")
        images.append(bytes(data[offset : offset + length]))
        offset += length
    return images


def is_typed_contents(data: Any) -> bool:
    """Whether `data` is gRPC's typed contents, protobuf's flat repeated field: a sequence
    that JSON never makes (its sequences are lists and strings)."""
    return isinstance(data, Sequence) and not isinstance(data, list | str | bytes)


def _flatten(data: Any) -> Sequence[Any]:
    if is_typed_contents(data):  # gRPC's bytes_contents: flat, counted before read
        return data
    if not isinstance(data, list):
        raise errors.BadRequest(f"{INPUT} needs 'data' (a list of base64 strings) or binary data.")
    flat: list[Any] = []
    for item in data:
        flat.extend(_flatten(item) if isinstance(item, list) else [item])
    return flat


def bounded_parameters(value: Any, whose: str) -> dict[str, Any]:
    """A `parameters` object (absent: empty) of at most MAX_PARAMETERS entries; else a 400."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise errors.BadRequest(f"{whose} parameters must be a JSON object.")
    count_parameters(len(value), whose)
    return value


def count_parameters(count: int, whose: str) -> None:
    """A 400 for more than MAX_PARAMETERS entries in a `parameters` object."""
    if count > MAX_PARAMETERS:
        raise errors.BadRequest(
            f"{whose} parameters hold {count} entries; at most {MAX_PARAMETERS} are taken."
        )


def outputs(request: InferRequest) -> list[Output]:
    """Return the requested outputs; all of them (one) when none are named."""
    binary = binary_output(request)
    requested = named_outputs(request)
    if requested is None:
        return [Output(None, binary)]
    for output in requested:
        if output.name != OUTPUT:
            raise errors.BadRequest(f"Unknown output {output.name!r}: the output is {OUTPUT!r}.")
    return [choice(output, binary) for output in requested]


def binary_output(request: InferRequest) -> bool:
    """Whether outputs are binary unless they say otherwise (`binary_data_output`)."""
    parameters = bounded_parameters(request.parameters, "Request")
    return parameters.get("binary_data_output", False) is True


def named_outputs(request: InferRequest) -> list[RequestedOutput] | None:
    """The outputs the request names, None when it names none; a name given twice is a 400
    before anything is computed (an answer is never a multiple of what the model made)."""
    requested = request.outputs
    if requested is None:
        return None
    names = Counter(o.name for o in requested if isinstance(o.name, str))
    for name, count in names.items():
        if count > 1:
            raise errors.BadRequest(
                f"Output {name!r} is requested {count} times: name each output once."
            )
    return requested


def choice(output: RequestedOutput, binary_default: bool) -> Output:
    """How one requested output is answered: its classification's k, binary or JSON."""
    params = bounded_parameters(output.parameters, "Output")
    k = params.get("classification")
    if k is not None and (type(k) is not int or k < 1):
        raise errors.BadRequest(f"classification must be an integer >= 1; got {k!r}.")
    return Output(k, params.get("binary_data", binary_default) is True)


def serialize_bytes(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def tensor(probs: torch.Tensor, output: Output, labels: tuple[str, ...]) -> InferOutput:
    """Return one output, JSON or binary as asked."""
    if output.classification is None:
        shape = list(probs.shape)
        if output.binary:
            return InferOutput(OUTPUT, "FP32", shape, raw=probs.numpy().astype("<f4").tobytes())
        return InferOutput(OUTPUT, "FP32", shape, data=probs.flatten().tolist())
    k = min(output.classification, probs.shape[1])
    items = [
        f"{p['score']:.6f}:{p['index']}:{p['label']}"
        for row in probs
        for p in common.top_k(row, k, labels)
    ]
    shape = [probs.shape[0], k]
    if output.binary:
        return InferOutput(OUTPUT, "BYTES", shape, raw=serialize_bytes([i.encode() for i in items]))
    return InferOutput(OUTPUT, "BYTES", shape, data=items)


def metadata(classifier: Classifier) -> dict[str, Any]:
    """The model's metadata: name, version, platform, and its input and output tensors."""
    return {
        "name": classifier.name,
        "versions": [classifier.version],
        "platform": classifier.platform,
        "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, classifier.num_classes]}],
    }
