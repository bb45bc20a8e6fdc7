"""Open Inference Protocol v2 (KServe, Triton) over REST, as `tritonclient.http` speaks it.

Policy:
- The one input `IMAGE` and output `PROBS` are as app/adapters/oip_tensors.py describes; over
  REST, binary tensor data follows the JSON header (`Inference-Header-Content-Length`, what
  tritonclient sends), and `Inference-Header-Content-Length: 0` makes the whole body one
  image. Outputs are binary where the request asks (`binary_data`, `binary_data_output`).
- A request parameter `explain: true` adds the HEATMAP output (app/adapters/oip_explain.py).
- Every error under /v2 is `{"error": message}` with wanwu's status codes (400 malformed, 401
  key, 404 model, 413 limits, 415 not an image, 503 + Retry-After not ready or full, 504
  deadline).
Every image goes through `app.core`: the same keys, limits, batcher and metrics as /predict.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, g, request

from app import bounds, errors, openapi, statistics
from app.adapters import context, oip_infer, oip_tensors, tensor_io
from app.core import ready
from app.engine import Engine
from app.model import Classifier
from app.tensor_model import TensorModel

bp = Blueprint("oip", __name__)

PATH_PREFIXES = ("/v2",)  # errors here answer in OIP's shape

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


def _read() -> tuple[dict[str, Any], list[bytes]]:
    """Return the request's JSON header and its encoded images."""
    header, binary = read_body()
    if header is None:  # a raw binary request: the whole body is the one image
        return {}, [bytes(binary)]
    return header, oip_tensors.images(header, binary, context.core().settings.max_files)


def _json(data: bytes | memoryview) -> dict[str, Any]:
    try:
        header = bounds.loads_json(bytes(data))
    except ValueError as e:
        raise errors.BadRequest(f"The request is not valid JSON: {str(e)[:200]}.") from None
    if not isinstance(header, dict):
        raise errors.BadRequest("The request must be a JSON object.")
    return header


def error_body(error: errors.ApiError) -> dict[str, Any]:
    """OIP's error shape."""
    return {"error": error.message}


# -- endpoints -----------------------------------------------------------------------------------


@bp.get("/v2")
def server_metadata() -> Any:
    """Name the server and the protocol extensions it implements."""
    return oip_infer.server_metadata()


@bp.get("/v2/health/live")
def live() -> Any:
    """The process answers."""
    return {"live": True}


@bp.get("/v2/health/ready")
def server_ready() -> Any:
    """200 once this worker's models are warm, else 503."""
    ready.require_worker(context.core().registry)
    return {"ready": True}


@bp.get("/v2/models/<model_name>")
@bp.get("/v2/models/<model_name>/versions/<version>")
def model_metadata(model_name: str, version: str | None = None) -> Any:
    """Describe the model's input and output tensors."""
    return tensor_io.metadata(context.core().model(model_name, version).classifier)


@bp.get("/v2/models/<model_name>/ready")
@bp.get("/v2/models/<model_name>/versions/<version>/ready")
def model_ready(model_name: str, version: str | None = None) -> Any:
    """200 once the model is warm in this worker, else 503."""
    ready.require_model(context.core().model(model_name, version))
    return {"name": model_name, "ready": True}


@bp.post("/v2/models/<model_name>/infer")
@bp.post("/v2/models/<model_name>/versions/<version>/infer")
def infer(model_name: str, version: str | None = None) -> Response:
    """Classify a BYTES tensor of encoded images and answer PROBS as requested; a Triton
    model's tensors run as its config says (app/adapters/tensor_io.py)."""
    context.authorize()
    engine = context.lease(model_name, version)
    if isinstance(engine.classifier, TensorModel):
        return _infer_tensors(engine.classifier, engine)
    header, images = _read()
    g.classified, described = oip_infer.classify(context.core(), engine, header, images, g.started)
    return _answer(header, engine, described)


def _infer_tensors(model: TensorModel, engine: Engine) -> Response:
    header, binary = read_body()
    if header is None:
        raise errors.BadRequest(f"Model {model.name} takes tensors: send a JSON header.")
    inputs = header.get("inputs")
    if not isinstance(inputs, list):
        raise errors.BadRequest("'inputs' must be a list of input tensors.")
    rows = tensor_io.rows(model, inputs, binary)
    core = context.core()
    g.classified, described = oip_infer.infer(core, model, engine, header, rows, g.started)
    return _answer(header, engine, described)


def _answer(header: dict[str, Any], engine: Engine, described: oip_infer.Described) -> Response:
    """The infer response: JSON, with the binary outputs' bytes after it when there are any."""
    model = engine.classifier
    answer: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if "id" in header:
        answer["id"] = header["id"]
    answer["outputs"], blobs = [], []
    for description, blob in described:
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


@bp.get("/v2/models/<model_name>/config")
@bp.get("/v2/models/<model_name>/versions/<version>/config")
def model_config(model_name: str, version: str | None = None) -> Any:
    """Triton's model configuration extension (app/statistics.py)."""
    return statistics.as_json(statistics.config(context.core().model(model_name, version)))


@bp.get("/v2/models/stats")
@bp.get("/v2/models/<model_name>/stats")
@bp.get("/v2/models/<model_name>/versions/<version>/stats")
def model_stats(model_name: str | None = None, version: str | None = None) -> Any:
    """Triton's statistics extension: every served model's, or one model's versions'."""
    registry = context.core().registry
    if model_name is None:
        engines = [e for name in registry.plans for e in registry.loaded(name)[1].values()]
    elif version is None:
        engines = list(registry.loaded(model_name)[1].values())
    else:
        engines = [context.core().model(model_name, version)]
    return statistics.as_json(statistics.statistics(engines))


_ERROR = {"$ref": "#/components/schemas/OipError"}
_TENSOR = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {"type": "string"},
        "parameters": {"type": "object"},
        "data": {"type": "array"},
    },
}
_INFER = {
    "summary": "OIP v2: classify a BYTES tensor of encoded images.",
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {"type": "array", "items": _TENSOR},
                        "outputs": {"type": "array", "items": _TENSOR},
                    },
                }
            },
            "application/octet-stream": openapi.BINARY,
        },
    },
    "responses": {
        "200": {
            "description": "PROBS: FP32 probabilities, or classification strings.",
            "content": {
                "application/json": {"schema": openapi.OPEN},
                "application/octet-stream": openapi.BINARY,
            },
        },
        **openapi.errors_in(_ERROR, 400, 401, 404, 413, 415, 500, 503, 504),
    },
}
_HEADER_LENGTH_PARAMETER = {
    "name": HEADER_LENGTH,
    "in": "header",
    "description": "Length of the JSON header when binary tensor data follows it.",
    "schema": {"type": "string"},
}


def openapi_paths(classifier: Classifier) -> tuple[openapi.Paths, openapi.Schemas]:
    """This adapter's paths, and OIP's error schema."""
    paths: openapi.Paths = {
        "/v2": openapi.get("OIP: server metadata and extensions.", {}),
        "/v2/health/live": openapi.get("OIP: the process answers.", {}),
        "/v2/health/ready": openapi.get(
            "OIP: this worker is ready.", openapi.errors_in(_ERROR, 503)
        ),
    }
    for prefix, names in (
        ("/v2/models/{model_name}", ("model_name",)),
        ("/v2/models/{model_name}/versions/{version}", ("model_name", "version")),
    ):
        params = openapi.path_params(*names)
        paths[prefix] = openapi.get("OIP: model metadata.", openapi.errors_in(_ERROR, 404), params)
        paths[f"{prefix}/ready"] = openapi.get(
            "OIP: the model is ready.", openapi.errors_in(_ERROR, 404, 503), params
        )
        paths[f"{prefix}/infer"] = {
            "post": {**_INFER, "parameters": [_HEADER_LENGTH_PARAMETER, *params]}
        }
        paths[f"{prefix}/config"] = openapi.get(
            "Triton: the model configuration (config.pbtxt as JSON).",
            openapi.errors_in(_ERROR, 404),
            params,
        )
        paths[f"{prefix}/stats"] = openapi.get(
            "Triton: inference and execution counts, queue and compute times.",
            openapi.errors_in(_ERROR, 404),
            params,
        )
    paths["/v2/models/stats"] = openapi.get("Triton: every served model's statistics.", {})
    schemas = {
        "OipError": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
        }
    }
    return paths, schemas
