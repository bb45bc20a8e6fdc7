"""TorchServe's inference API and read-only management API, on wanwu's one port.

Policy: a client written for TorchServe 0.12 with the stock `image_classifier` handler works
unchanged (docs/MIGRATING.md lists what differs):
- `POST`/`PUT /predictions/{model}[/{version}]` take a raw image body (`curl -T` sends PUT),
  multipart fields `data` or `file`, or a base64 string (text/plain or a JSON string), as
  TorchServe's VisionHandler does; the answer is the top-5 `{label: probability}` object, a
  list of them when a multipart body holds several images.
- `GET /ping` says Healthy (200) once this worker is ready, Unhealthy (503) before.
- `GET /models` and `GET /models/{model}` describe the one served model in TorchServe's shapes.
- Errors are TorchServe's `{"code", "type", "message"}`, with wanwu's status codes (401, not
  TorchServe's 400, for a bad key; 415 for a non-image).
Every image goes through `app.classify`: the same keys, limits, batcher and metrics as /predict.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from typing import Any

from flask import Blueprint, Response, jsonify, request

from app import api, bounds, classify, errors
from app.engine import top_k

bp = Blueprint("torchserve", __name__)

TOPK = 5  # ImageClassifier.topk in TorchServe's stock handler
FIELDS = ("data", "file")  # multipart fields VisionHandler reads ("data"), and a common alias

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
    "internal": "InternalServerException",
}


def _base64(text: str | bytes) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise errors.UndecodableImage(
            "A text or JSON body must be a base64-encoded image; this is not valid base64."
        ) from None


def _uploads() -> list[tuple[str | None, bytes]]:
    """Return (filename, bytes) for each image, read the ways TorchServe's handler reads them."""
    mimetype = request.mimetype
    if mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        uploads = [
            (f.filename or None, f.read()) for name in FIELDS for f in request.files.getlist(name)
        ]
        uploads += [(None, _base64(v)) for name in FIELDS for v in request.form.getlist(name)]
        if not uploads:
            raise errors.NoImage("The multipart body has no 'data' or 'file' field.")
        return uploads
    if mimetype == "application/json":
        try:
            value = bounds.loads_json(request.get_data(cache=False))
        except ValueError:
            value = None
        if not isinstance(value, str):
            raise errors.NoImage("A JSON body must be one string: a base64-encoded image.")
        return [(None, _base64(value))]
    if mimetype.startswith("text/"):
        return [(None, _base64(request.get_data(cache=False).strip()))]
    # Anything else is the image itself, as in TorchServe: `curl -T` sends no Content-Type.
    data = request.get_data(cache=False)
    if not data:
        raise errors.NoImage("The request body is empty: send an image.")
    return [(None, data)]


@bp.route("/predictions/<model_name>", methods=["POST", "PUT"])
@bp.route("/predictions/<model_name>/<version>", methods=["POST", "PUT"])
def predictions(model_name: str, version: str | None = None) -> Any:
    """Classify the request's images; answer top-5 {label: probability} per image."""
    classify.authorize()
    classify.served_model(model_name, version)
    result = classify.classify(_uploads())
    names = classify.engine().classifier.labels("en")
    answers = [
        {p["label"]: p["score"] for p in top_k(probs, TOPK, names)} for probs in result.probs
    ]
    # Not jsonify: it sorts keys, and TorchServe lists labels most probable first.
    body = json.dumps(answers[0] if len(answers) == 1 else answers, ensure_ascii=False)
    return Response(body, content_type="application/json")


@bp.get("/ping")
def ping() -> Any:
    """Healthy once this worker's model is warm; Unhealthy (503) before."""
    if classify.engine().ready:
        return {"status": "Healthy"}
    response = jsonify({"status": "Unhealthy"})
    response.status_code, response.headers["Retry-After"] = 503, "1"
    return response


@bp.get("/models")
def list_models() -> Any:
    """List the served model (one; no pagination needed)."""
    classifier = classify.engine().classifier
    url = os.path.basename(classify.settings().model)
    return {"models": [{"modelName": classifier.name, "modelUrl": url}]}


@bp.get("/models/<model_name>")
def describe_model(model_name: str) -> Any:
    """Describe the served model in TorchServe's shape (a one-element array)."""
    classify.served_model(model_name)
    engine, settings = classify.engine(), classify.settings()
    classifier, ready = engine.classifier, engine.ready
    depth = engine.batcher.depth
    return jsonify(
        [
            {
                "modelName": classifier.name,
                "modelVersion": classifier.version,
                "modelUrl": os.path.basename(settings.model),
                "runtime": "torchscript",
                "minWorkers": settings.worker_processes,
                "maxWorkers": settings.worker_processes,
                "batchSize": settings.max_batch,
                "maxBatchDelay": settings.max_wait_ms,
                "responseTimeout": settings.timeout_ms / 1000,
                "deviceType": "gpu" if classifier.device.type == "cuda" else "cpu",
                "status": "Healthy" if ready else "Unhealthy",
                "loadedAtStartup": True,
                # This worker only: each Gunicorn worker answers for itself.
                "workers": [
                    {
                        "id": str(os.getpid()),
                        "pid": os.getpid(),
                        "status": "READY" if ready else "UNLOADING",
                        "gpu": classifier.device.type == "cuda",
                    }
                ],
                "jobQueueStatus": {
                    "remainingCapacity": settings.queue_max - depth,
                    "pendingRequests": depth,
                },
            }
        ]
    )


def _error_body(error: errors.ApiError) -> dict[str, Any]:
    return {
        "code": error.status,
        "type": _TYPES.get(error.code, "BadRequestException"),
        "message": error.message,
    }


bp.register_error_handler(Exception, api.error_handler(_error_body))
