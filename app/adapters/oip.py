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

from flask import Blueprint, Response, g

from app import errors, openapi, statistics
from app.adapters import context, oip_infer, oip_tensors, oip_wire, tensor_io
from app.core import ready
from app.core.types import InferRequest
from app.model import Classifier
from app.tensor_model import TensorModel

bp = Blueprint("oip", __name__)

PATH_PREFIXES = ("/v2",)  # errors here answer in OIP's shape


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
    model, core = engine.classifier, context.core()
    header, binary = oip_wire.read_body()
    if isinstance(model, TensorModel):
        if header is None:
            raise errors.BadRequest(f"Model {model.name} takes tensors: send a JSON header.")
        request = oip_wire.infer_request(header, binary)
        g.classified, outputs = oip_infer.infer(core, model, engine, request, g.started)
    elif header is None:  # a raw binary request: the whole body is the one image
        header, request = {}, InferRequest(None)
        g.classified, outputs = oip_infer.classify(
            core, engine, request, [bytes(binary)], g.started
        )
    else:
        request = oip_wire.infer_request(header, binary)
        images = oip_tensors.images(request, core.settings.max_files)
        g.classified, outputs = oip_infer.classify(core, engine, request, images, g.started)
    return oip_wire.answer(header, model.name, model.version, outputs)


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
    engines = oip_infer.counted(context.core(), model_name, version)
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
    "name": oip_wire.HEADER_LENGTH,
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
