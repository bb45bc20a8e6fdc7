"""KServe's V1 protocol, its explain verb: `POST /v1/models/{model}:explain`.

Policy: KServe dropped its bundled explainers (Alibi, ART) and left `:explain` to a model
server; here it answers, for a model wanwu can explain, what `/explain` answers.
- The body is V1's `{"instances": [...]}`, each instance an image in base64: a string, or
  `{"b64": ...}` (TensorFlow Serving's binary convention), `{"image_bytes": {"b64": ...}}`
  or `{"data": ...}` (TorchServe's KServe wrapper).
- The answer is `{"explanations": [...]}`, one per instance in order: the heatmap of its top
  class, or of `?target=INDEX|LABEL`, shaped as `/explain`'s (app/explain.py).
- Errors are V1's `{"error": message}` with wanwu's status codes.
Every image goes through `app.core`: the same keys, limits, batcher and metrics as /predict.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from app import bounds, errors, openapi
from app.adapters import common, context
from app.core.types import Upload
from app.model import Classifier

bp = Blueprint("kserve_v1", __name__)

PATH_PREFIXES = ("/v1/models",)  # errors here answer in V1's shape
INSTANCES = {"type": "array", "items": {}, "description": "Base64 images."}
_NOT_BASE64 = "Each instance must be a base64-encoded image; this one is not valid base64."


def error_body(error: errors.ApiError) -> dict[str, Any]:
    """KServe V1's error shape."""
    return {"error": error.message}


def _image(instance: Any) -> Any:
    """The base64 value of one instance, in whichever of the conventions it uses."""
    if isinstance(instance, dict):
        for key in ("b64", "data"):
            if key in instance:
                return instance[key]
        if isinstance(instance.get("image_bytes"), dict):
            return instance["image_bytes"].get("b64")
    return instance


def _uploads() -> list[Upload]:
    try:
        body = bounds.loads_json(request.get_data(cache=False))
    except ValueError as e:
        raise errors.BadRequest(f"The request is not valid JSON: {str(e)[:200]}.") from None
    instances = body.get("instances") if isinstance(body, dict) else None
    if not isinstance(instances, list) or not instances:
        raise errors.NoImage('Send {"instances": [...]}, each instance a base64 image.')
    most = context.core().settings.max_files
    if len(instances) > most:
        raise errors.too_many_files(len(instances), most)
    return [
        Upload(common.base64_image(_image(instance), _NOT_BASE64), f"instances[{i}]")
        for i, instance in enumerate(instances)
    ]


@bp.post("/v1/models/<model_name>:explain")
def explain(model_name: str) -> Any:
    """Explain each instance: the heatmap of its top class, or of `target`."""
    context.authorize()
    engine = context.lease(model_name, None)
    index = context.target(engine.classifier)
    result = context.explained(_uploads(), engine)
    answers = common.explanations(result, engine.classifier, 1, index)
    return {"explanations": [a[0] for a in answers]}


def openapi_paths(classifier: Classifier) -> tuple[openapi.Paths, openapi.Schemas]:
    """This adapter's path, and V1's error schema."""
    error = {"$ref": "#/components/schemas/KServeV1Error"}
    operation = {
        "summary": "KServe V1: explain base64 images; a heatmap per instance.",
        "parameters": [*openapi.path_params("model_name"), openapi.TARGET],
        "requestBody": openapi.json_body(
            {"type": "object", "required": ["instances"], "properties": {"instances": INSTANCES}}
        ),
        "responses": {
            "200": openapi.json_response(
                "One explanation per instance.",
                {
                    "type": "object",
                    "required": ["explanations"],
                    "properties": {
                        "explanations": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Explanation"},
                        }
                    },
                },
            ),
            **openapi.errors_in(error, 400, 401, 404, 413, 415, 422, 500, 501, 503, 504),
        },
    }
    schemas = {
        "KServeV1Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
        }
    }
    return {"/v1/models/{model_name}:explain": {"post": operation}}, schemas
