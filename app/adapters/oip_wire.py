"""OIP v2 over REST on the wire: a body read into the core's `InferRequest`, an answer written.

Policy: the body is a JSON header, then binary tensor data when `Inference-Header-Content-
Length` says where the header ends (what tritonclient sends); `Inference-Header-Content-Length:
0` makes the whole body one image. Only the structure is read here (a JSON object, the lists
of inputs and outputs); each value is checked where it is used (app/adapters/oip_tensors.py,
tensor_io.py), the same for REST and gRPC. An answer is JSON, with the binary outputs' bytes
after it when any output is binary. A compressed body is a 415.
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, request

from app import bounds, errors
from app.core.types import InferInput, InferOutput, InferRequest, RequestedOutput

HEADER_LENGTH = "Inference-Header-Content-Length"


def read_body() -> tuple[dict[str, Any] | None, memoryview]:
    """The request's JSON header and the binary data after it (the binary-data extension);
    None and the whole body when `Inference-Header-Content-Length: 0` makes it one image."""
    encoding = request.headers.get("Content-Encoding", "identity").lower()
    if encoding not in ("", "identity"):
        raise errors.UnsupportedMediaType(
            f"Content-Encoding {encoding} is not accepted; send the body uncompressed."
        )
    body = memoryview(request.get_data(cache=False))
    raw_length = request.headers.get(HEADER_LENGTH)
    if raw_length is None:
        return _json(body), body[len(body) :]
    try:
        length = bounds.parse_count(raw_length, len(body))
    except ValueError as e:
        raise errors.BadRequest(
            f"{HEADER_LENGTH} is a byte count within the body: it {e}."
        ) from None
    if length == 0:
        return None, body
    return _json(body[:length]), body[length:]


def _json(data: bytes | memoryview) -> dict[str, Any]:
    try:
        header = bounds.loads_json(bytes(data))
    except ValueError as e:
        raise errors.BadRequest(f"The request is not valid JSON: {str(e)[:200]}.") from None
    if not isinstance(header, dict):
        raise errors.BadRequest("The request must be a JSON object.")
    if "id" in header and not _is_text(header["id"]):
        # The answer echoes it: only text the answer can hold (as Triton: a string).
        raise errors.BadRequest("'id' must be a string of Unicode text.")
    return header


def _is_text(value: Any) -> bool:
    """A str that UTF-8 can write (JSON's \\ud800 escape decodes to one it cannot)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def infer_request(header: dict[str, Any], binary: memoryview) -> InferRequest:
    """The JSON header and the binary data after it as the core's request."""
    inputs, outputs = header.get("inputs"), header.get("outputs")
    if outputs is not None and (
        not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs)
    ):
        raise errors.BadRequest("'outputs' must be a list of objects.")
    return InferRequest(
        [_input(t) for t in inputs] if isinstance(inputs, list) else None,
        None
        if outputs is None
        else [RequestedOutput(o.get("name"), o.get("parameters")) for o in outputs],
        header.get("parameters"),
        binary,
    )


def _input(tensor: Any) -> InferInput | None:
    if not isinstance(tensor, dict):
        return None
    return InferInput(
        tensor.get("name"),
        tensor.get("datatype"),
        tensor.get("shape"),
        tensor.get("parameters"),
        tensor.get("data"),
    )


def answer(header: dict[str, Any], name: str, version: str, outputs: list[InferOutput]) -> Response:
    """The infer response: JSON, with the binary outputs' bytes after it when there are any."""
    answered: dict[str, Any] = {"model_name": name, "model_version": version}
    if "id" in header:
        answered["id"] = header["id"]
    answered["outputs"], blobs = [], []
    for output in outputs:
        description: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": output.shape,
        }
        if output.raw is None:
            description["data"] = output.data
        else:
            description["parameters"] = {"binary_data_size": len(output.raw)}
            blobs.append(output.raw)
        answered["outputs"].append(description)
    body = current_app.json.dumps(answered).encode()
    if not blobs:
        return Response(body, content_type="application/json")
    response = Response(body + b"".join(blobs), content_type="application/octet-stream")
    response.headers[HEADER_LENGTH] = str(len(body))
    return response
