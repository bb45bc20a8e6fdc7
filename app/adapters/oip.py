"""Open Inference Protocol v2 (KServe, Triton) over REST, as `tritonclient.http` speaks it.

Policy:
- The model has one input, `IMAGE`: a BYTES tensor of encoded images, shape `[N]` or
  `[N, 1]`, sent through Triton's binary-data extension (`Inference-Header-Content-Length`,
  each element a little-endian u32 length then the bytes: what tritonclient sends) or as JSON
  strings holding base64. `Inference-Header-Content-Length: 0` makes the whole body one image.
- It has one output, `PROBS`: FP32 probabilities `[N, classes]`, or with the classification
  extension (`"classification": k`) BYTES `[N, k]` of `"score:index:label"`, score with six
  decimals, as Triton formats it. Outputs are binary where the request asks
  (`binary_data`, `binary_data_output`), JSON otherwise.
- Every error under /v2 is `{"error": message}` with wanwu's status codes (400 malformed, 401
  key, 404 model, 413 limits, 415 not an image, 503 + Retry-After not ready or full, 504
  deadline).
Every image goes through `app.core`: the same keys, limits, batcher and metrics as /predict.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import torch
from flask import Blueprint, Response, current_app, request

from app import errors
from app.adapters import common
from app.core import Upload

bp = Blueprint("oip", __name__)

PATH_PREFIXES = ("/v2",)  # errors here answer in OIP's shape

INPUT, OUTPUT = "IMAGE", "PROBS"
EXTENSIONS = ["binary_tensor_data", "classification"]
HEADER_LENGTH = "Inference-Header-Content-Length"
SERVER_VERSION = "1"
_NOT_BASE64 = f"In JSON, each {INPUT} element must be a base64 string of an encoded image."


@dataclass(frozen=True)
class _Output:
    classification: int | None  # top-k as "score:index:label" strings, or None: all scores
    binary: bool


# -- reading a request ---------------------------------------------------------------------------


def _read() -> tuple[dict[str, Any], list[bytes]]:
    """Return the request's JSON header and its encoded images."""
    encoding = request.headers.get("Content-Encoding", "identity").lower()
    if encoding not in ("", "identity"):
        raise errors.UnsupportedMediaType(
            f"Content-Encoding {encoding} is not accepted; send the body uncompressed."
        )
    body = request.get_data(cache=False)
    raw_length = request.headers.get(HEADER_LENGTH)
    if raw_length is None:
        header = _json(body)
        return header, _images(header, b"")
    if not raw_length.isdigit() or int(raw_length) > len(body):
        raise errors.BadRequest(
            f"{HEADER_LENGTH} must be a byte count within the body; got {raw_length!r}."
        )
    length = int(raw_length)
    if length == 0:  # a raw binary request: the whole body is the one image
        return {}, [body]
    header = _json(body[:length])
    return header, _images(header, memoryview(body)[length:])


def _json(data: bytes) -> dict[str, Any]:
    try:
        header = json.loads(data)
    except ValueError:
        raise errors.BadRequest("The request is not valid JSON.") from None
    if not isinstance(header, dict):
        raise errors.BadRequest("The request must be a JSON object.")
    return header


def _images(header: dict[str, Any], binary: bytes | memoryview) -> list[bytes]:
    """Return the encoded images of the one input, from binary data or base64 JSON strings."""
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise errors.BadRequest(f"Send exactly one input, {INPUT!r}.")
    tensor = inputs[0]
    if tensor.get("name") != INPUT:
        raise errors.BadRequest(f"Unknown input {tensor.get('name')!r}: the input is {INPUT!r}.")
    if tensor.get("datatype") != "BYTES":
        raise errors.BadRequest(f"{INPUT} must be BYTES (encoded images).")
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) not in (1, 2)
        or not all(type(d) is int for d in shape)
        or shape[1:] not in ([], [1])
        or shape[0] < 0
    ):
        raise errors.BadRequest(f"The shape of {INPUT} must be [N] or [N, 1]; got {shape!r}.")
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise errors.BadRequest("Input parameters must be a JSON object.")
    if "binary_data_size" in parameters or (binary and "data" not in tensor):
        size = parameters.get("binary_data_size", len(binary))
        if type(size) is not int or size != len(binary):
            raise errors.BadRequest(
                f"binary_data_size is {size!r} but {len(binary)} bytes follow the JSON."
            )
        images = _deserialize_bytes(binary)
    else:
        images = [common.base64_image(value, _NOT_BASE64) for value in _flatten(tensor.get("data"))]
    if len(images) != shape[0]:
        raise errors.BadRequest(f"{INPUT} has shape {shape} but holds {len(images)} elements.")
    return images


def _deserialize_bytes(data: bytes | memoryview) -> list[bytes]:
    """Split a BYTES tensor: each element a u32 little-endian length, then its bytes."""
    images, offset = [], 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise errors.BadRequest("The binary BYTES tensor ends inside a length prefix.")
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise errors.BadRequest("The binary BYTES tensor ends inside an element.")
        images.append(bytes(data[offset : offset + length]))
        offset += length
    return images


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise errors.BadRequest(f"{INPUT} needs 'data' (a list of base64 strings) or binary data.")
    flat: list[Any] = []
    for item in data:
        flat.extend(_flatten(item) if isinstance(item, list) else [item])
    return flat


def _outputs(header: dict[str, Any]) -> list[_Output]:
    """Return the requested outputs; all of them (one) when none are named."""
    parameters = header.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise errors.BadRequest("Request parameters must be a JSON object.")
    binary_default = parameters.get("binary_data_output", False) is True
    requested = header.get("outputs")
    if requested is None:
        return [_Output(None, binary_default)]
    if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
        raise errors.BadRequest("'outputs' must be a list of objects.")
    outputs = []
    for output in requested:
        if output.get("name") != OUTPUT:
            raise errors.BadRequest(
                f"Unknown output {output.get('name')!r}: the output is {OUTPUT!r}."
            )
        params = output.get("parameters") or {}
        if not isinstance(params, dict):
            raise errors.BadRequest("Output parameters must be a JSON object.")
        k = params.get("classification")
        if k is not None and (type(k) is not int or k < 1):
            raise errors.BadRequest(f"classification must be an integer >= 1; got {k!r}.")
        outputs.append(_Output(k, params.get("binary_data", binary_default) is True))
    return outputs


# -- writing a response --------------------------------------------------------------------------


def _serialize_bytes(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def _tensor(
    probs: torch.Tensor, output: _Output, names: tuple[str, ...]
) -> tuple[dict[str, Any], bytes | None]:
    """Return one output's JSON description and, when it is binary, its bytes."""
    if output.classification is None:
        description = {"name": OUTPUT, "datatype": "FP32", "shape": list(probs.shape)}
        if output.binary:
            return description, probs.numpy().astype("<f4").tobytes()
        return {**description, "data": probs.flatten().tolist()}, None
    k = min(output.classification, probs.shape[1])
    scores, indices = probs.topk(k, dim=1)
    items = [
        f"{float(s):.6f}:{int(i)}:{names[int(i)]}"
        for row_s, row_i in zip(scores, indices, strict=True)
        for s, i in zip(row_s, row_i, strict=True)
    ]
    description = {"name": OUTPUT, "datatype": "BYTES", "shape": [probs.shape[0], k]}
    if output.binary:
        return description, _serialize_bytes([item.encode() for item in items])
    return {**description, "data": items}, None


def error_body(error: errors.ApiError) -> dict[str, Any]:
    """OIP's error shape."""
    return {"error": error.message}


# -- endpoints -----------------------------------------------------------------------------------


@bp.get("/v2")
def server_metadata() -> Any:
    """Name the server and the protocol extensions it implements."""
    return {"name": "wanwu", "version": SERVER_VERSION, "extensions": EXTENSIONS}


@bp.get("/v2/health/live")
def live() -> Any:
    """The process answers."""
    return {"live": True}


@bp.get("/v2/health/ready")
def ready() -> Any:
    """200 once this worker's model is warm, else 503."""
    common.core().require_ready()
    return {"ready": True}


@bp.get("/v2/models/<model_name>")
@bp.get("/v2/models/<model_name>/versions/<version>")
def model_metadata(model_name: str, version: str | None = None) -> Any:
    """Describe the model's input and output tensors."""
    classifier = common.core().model(model_name, version).classifier
    return {
        "name": classifier.name,
        "versions": [classifier.version],
        "platform": classifier.platform,
        "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, classifier.num_classes]}],
    }


@bp.get("/v2/models/<model_name>/ready")
@bp.get("/v2/models/<model_name>/versions/<version>/ready")
def model_ready(model_name: str, version: str | None = None) -> Any:
    """200 once the model is warm in this worker, else 503."""
    engine = common.core().model(model_name, version)
    if not engine.ready:
        raise errors.NotReady("The model is still warming up.", retry_after=1)
    return {"name": model_name, "ready": True}


@bp.post("/v2/models/<model_name>/infer")
@bp.post("/v2/models/<model_name>/versions/<version>/infer")
def infer(model_name: str, version: str | None = None) -> Response:
    """Classify a BYTES tensor of encoded images; answer PROBS as requested."""
    common.authorize()
    engine = common.core().model(model_name, version)
    header, images = _read()
    outputs = _outputs(header)
    uploads = [Upload(image, f"{INPUT}[{i}]") for i, image in enumerate(images)]
    result = common.classify(uploads, engine)
    probs = torch.stack(result.probs)
    classifier = engine.classifier
    answer: dict[str, Any] = {"model_name": classifier.name, "model_version": classifier.version}
    if "id" in header:
        answer["id"] = header["id"]
    answer["outputs"], blobs = [], []
    for output in outputs:
        description, blob = _tensor(probs, output, classifier.labels("en"))
        if blob is not None:
            description["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        answer["outputs"].append(description)
    body = current_app.json.dumps(answer).encode()
    if not blobs:
        return Response(body, content_type="application/json")
    response = Response(body + b"".join(blobs), content_type="application/octet-stream")
    response.headers[HEADER_LENGTH] = str(len(body))
    return response
