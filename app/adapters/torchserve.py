"""TorchServe's inference API, on wanwu's inference port.

Policy: a client written for TorchServe 0.12 with the stock `image_classifier` handler works
unchanged (docs/MIGRATING.md lists what differs):
- `POST`/`PUT /predictions/{model}[/{version}]` take a raw image body (`curl -T` sends PUT),
  multipart fields `data` or `file`, or a base64 string (text/plain or a JSON string), as
  TorchServe's VisionHandler does; the answer is the top-5 `{label: probability}` object, a
  list of them when a multipart body holds several images.
- `POST /explanations/{model}[/{version}]` takes the same bodies and answers, per image, the
  heatmap of its top class (or of `?target=INDEX|LABEL`) as `/explain` shapes one: an object
  for one image, a list for several (docs/MIGRATING.md: what differs from Captum's).
- `GET /ping` says Healthy (200) once this worker is ready, Unhealthy (503) before.
- TorchServe's management API (`/models`) is app.adapters.management's, on its own listener.
- Every error under these paths is TorchServe's `{"code", "type", "message"}`, with wanwu's
  status codes (401, not TorchServe's 400, for a bad key; 415 for a non-image).
Every image goes through `app.core`: the same keys, limits, batcher and metrics as /predict.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, jsonify, request

from app import bounds, errors, openapi
from app.adapters import common, context
from app.core import ready
from app.core.types import Upload
from app.model import Classifier

bp = Blueprint("torchserve", __name__)

# Errors here answer in TorchServe's shape (/models: its management API's, on the other port).
PATH_PREFIXES = ("/predictions", "/explanations", "/ping", "/models")
TOPK = 5  # ImageClassifier.topk in TorchServe's stock handler
FIELDS = ("data", "file")  # multipart fields VisionHandler reads ("data"), and a common alias
_NOT_BASE64 = "A text or JSON body must be a base64-encoded image; this is not valid base64."

_TYPES = {
    "unauthorized": "InvalidKeyException",
    "model_not_found": "ModelNotFoundException",
    "not_found": "ResourceNotFoundException",
    "method_not_allowed": "MethodNotAllowedException",
    "payload_too_large": "RequestEntityTooLargeException",
    "image_too_large": "RequestEntityTooLargeException",
    "too_many_files": "RequestEntityTooLargeException",
    "unsupported_media_type": "UnsupportedMediaTypeException",
    "not_ready": "ServiceUnavailableException",
    "overloaded": "ServiceUnavailableException",
    "timeout": "RequestTimeoutException",
    "not_explainable": "ModelNotExplainableException",
    "request_timeout": "RequestTimeoutException",
    "rate_limited": "TooManyRequestsException",
    "internal": "InternalServerException",
}


def error_body(error: errors.ApiError) -> dict[str, Any]:
    """TorchServe's error shape."""
    return {
        "code": error.status,
        "type": _TYPES.get(error.code, "BadRequestException"),
        "message": error.message,
    }


def _uploads() -> list[Upload]:
    """Each image, read the ways TorchServe's handler reads them."""
    mimetype = request.mimetype
    if mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        uploads = context.files(FIELDS)
        uploads += [
            Upload(common.base64_image(v, _NOT_BASE64))
            for name in FIELDS
            for v in request.form.getlist(name)
        ]
        if uploads:
            return uploads
        if mimetype == "multipart/form-data":
            raise errors.NoImage("The multipart body has no 'data' or 'file' field.")
        raise errors.NoImage(
            "The body is form-urlencoded (what `curl -d`/`--data-binary` sends) and has no "
            "'data' field: send the image itself with `curl -T image.jpg`, or as multipart "
            "with `curl -F data=@image.jpg`."
        )
    if mimetype == "application/json":
        try:
            value = bounds.loads_json(request.get_data(cache=False))
        except ValueError:
            value = None
        if not isinstance(value, str):
            raise errors.NoImage("A JSON body must be one string: a base64-encoded image.")
        return [Upload(common.base64_image(value, _NOT_BASE64))]
    if mimetype.startswith("text/"):
        return [Upload(common.base64_image(request.get_data(cache=False).strip(), _NOT_BASE64))]
    # Anything else is the image itself, as in TorchServe: `curl -T` sends no Content-Type.
    data = request.get_data(cache=False)
    if not data:
        raise errors.NoImage("The request body is empty: send an image.")
    return [Upload(data)]


@bp.route("/predictions/<model_name>", methods=["POST", "PUT"])
@bp.route("/predictions/<model_name>/<version>", methods=["POST", "PUT"])
def predictions(model_name: str, version: str | None = None) -> Any:
    """Classify the request's images; answer top-5 {label: probability} per image."""
    context.authorize()
    engine = context.lease(model_name, version)
    result = context.classify(_uploads(), engine)
    names = engine.classifier.labels("en")
    k = min(TOPK, len(names))  # every class of a model with fewer
    answers = [
        {p["label"]: p["score"] for p in common.top_k(probs, k, names)} for probs in result.probs
    ]
    # Not jsonify: it sorts keys, and TorchServe lists labels most probable first.
    body = json.dumps(answers[0] if len(answers) == 1 else answers, ensure_ascii=False)
    return Response(body, content_type="application/json")


@bp.post("/explanations/<model_name>")
@bp.post("/explanations/<model_name>/<version>")
def explanations(model_name: str, version: str | None = None) -> Any:
    """Explain the request's images: each one's heatmap of its top class, or of `target`."""
    context.authorize()
    engine = context.lease(model_name, version)
    index = context.target(engine.classifier)
    result = context.explained(_uploads(), engine)
    answers = [e[0] for e in common.explanations(result, engine.classifier, 1, index)]
    return jsonify(answers[0] if len(answers) == 1 else answers)


@bp.get("/ping")
def ping() -> Any:
    """Healthy once this worker's model is warm; Unhealthy (503) before."""
    if ready.worker(context.core().registry):
        return {"status": "Healthy"}
    response = jsonify({"status": "Unhealthy"})
    response.status_code, response.headers["Retry-After"] = 503, "1"
    return response


_ERROR = {"$ref": "#/components/schemas/TorchServeError"}
_LABEL_SCORES = {"type": "object", "additionalProperties": {"type": "number"}}
_PREDICT = {
    "summary": "TorchServe: classify images; top-5 {label: probability} per image.",
    "requestBody": openapi.image_body(
        *FIELDS,
        required=False,
        other={
            media: {"schema": {"type": "string", "description": "Base64 image."}}
            for media in ("text/plain", "application/json")
        },
    ),
    "responses": {
        "200": openapi.json_response(
            "One object for one image, a list of them for several.",
            {"oneOf": [_LABEL_SCORES, {"type": "array", "items": _LABEL_SCORES}]},
        ),
        **openapi.errors_in(_ERROR, 400, 401, 404, 413, 415, 500, 503, 504),
    },
}


_EXPLAIN = {
    "summary": "TorchServe: explain images; per image, the heatmap of its top class.",
    "requestBody": _PREDICT["requestBody"],
    "responses": {
        "200": openapi.json_response(
            "One explanation for one image, a list of them for several.",
            {
                "oneOf": [
                    {"$ref": "#/components/schemas/Explanation"},
                    {"type": "array", "items": {"$ref": "#/components/schemas/Explanation"}},
                ]
            },
        ),
        **openapi.errors_in(_ERROR, 400, 401, 404, 413, 415, 422, 500, 501, 503, 504),
    },
}


def _operations(
    *methods: str, parameters: tuple[str, ...], query: tuple[dict, ...] = (), **operation: object
) -> dict:
    params = [*openapi.path_params(*parameters), *query]
    return {m: {**operation, "parameters": params} for m in methods}


def openapi_paths(classifier: Classifier) -> tuple[openapi.Paths, openapi.Schemas]:
    """This adapter's paths, and TorchServe's error schema."""
    model, version = ("model_name",), ("model_name", "version")
    paths = {
        "/predictions/{model_name}": _operations("post", "put", parameters=model, **_PREDICT),
        "/predictions/{model_name}/{version}": _operations(
            "post", "put", parameters=version, **_PREDICT
        ),
        "/explanations/{model_name}": _operations(
            "post", parameters=model, query=(openapi.TARGET,), **_EXPLAIN
        ),
        "/explanations/{model_name}/{version}": _operations(
            "post", parameters=version, query=(openapi.TARGET,), **_EXPLAIN
        ),
        "/ping": {
            "get": {
                "summary": "TorchServe: Healthy once this worker is ready.",
                "responses": {
                    "200": openapi.json_response("Healthy.", openapi.OPEN),
                    "503": openapi.json_response("Unhealthy: warming up.", openapi.OPEN),
                },
            }
        },
    }
    schemas = {
        "TorchServeError": {
            "type": "object",
            "required": ["code", "type", "message"],
            "properties": {
                "code": {"type": "integer"},
                "type": {"type": "string"},
                "message": {"type": "string"},
            },
        }
    }
    return paths, schemas
