"""wanwu's own REST API: /predict, /healthz, /readyz, /v1/model, /metrics, and their OpenAPI."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from flask import Blueprint, Response, request

from app import bounds, errors, imaging, labels, memory, metrics, openapi
from app.adapters import common, context
from app.core import ready
from app.core.types import Classified, Upload
from app.model import Classifier

bp = Blueprint("api", __name__)


def query_params(
    classifier: Classifier, default: int | None = None, args: Mapping[str, str] | None = None
) -> tuple[int, str]:
    """`topk` and `lang` from the query (`args`, Flask's request's when None), checked
    against the model: its classes and the languages of its labels."""
    args = request.args if args is None else args
    low, high, usual = common.topk_range(classifier.num_classes)
    raw_k = args.get("topk", str(default or usual))
    try:
        k = bounds.parse_count(raw_k, high)
    except ValueError:
        k = 0
    if not low <= k <= high:
        raise errors.InvalidParameter(
            f"topk must be an integer from {low} to {high} (model {classifier.name} has "
            f"{classifier.num_classes} classes); got {raw_k!r}."
        )
    lang = args.get("lang", "en")
    if lang not in classifier.languages:
        # A language the API knows but this model has no labels in is refused too, rather
        # than answered in another language the client did not ask for.
        missing = (
            f" (model {classifier.name} has no {labels.LANGUAGE_NAMES[lang]} labels)"
            if lang in labels.LANGUAGES
            else ""
        )
        raise errors.InvalidParameter(
            f"lang must be one of {', '.join(classifier.languages)}{missing}; got {lang!r}."
        )
    return k, lang


def is_raw_image(mimetype: str) -> bool:
    """Whether a body of this media type is one image, whole."""
    return mimetype.startswith("image/") or mimetype == "application/octet-stream"


def raw_upload(data: bytes) -> list[Upload]:
    """The one image of a raw body; a 400 when it is empty."""
    if not data:
        raise errors.NoImage("The request body is empty.")
    return [Upload(data)]


def uploads() -> list[Upload]:
    """Each image in the request body: multipart 'file' fields, or the raw body."""
    mimetype = request.mimetype
    if mimetype == "multipart/form-data":
        uploads = context.files(["file"])
        if not uploads:
            raise errors.NoImage("The multipart body has no file under the field 'file'.")
        return uploads
    if is_raw_image(mimetype):
        return raw_upload(request.get_data(cache=False))
    if not mimetype and not request.content_length:
        raise errors.NoImage("Send an image: a multipart 'file' field or a raw image body.")
    raise errors.UnsupportedMediaType(
        f"Content-Type {mimetype or '(none)'} is not accepted: send multipart/form-data "
        "with a 'file' field, or an image/* or application/octet-stream body."
    )


@bp.post("/predict")
def predict() -> Any:
    """Classify one or more images with `?model=NAME[&version=V]` (the default model when
    absent) and return the top-k labels of each; `model` names the version that answered."""
    context.authorize()
    engine = context.lease(request.args.get("model"), request.args.get("version"))
    classifier = engine.classifier
    k, lang = query_params(classifier)
    images = uploads()
    return predictions(images, context.classify(images, engine), classifier, k, lang)


def predictions(
    images: list[Upload], result: Classified, classifier: Classifier, k: int, lang: str
) -> dict[str, Any]:
    """/predict's answer: each image's top `k` labels in `lang`."""
    names = classifier.labels(lang)
    answers = [common.top_k(probs, k, names) for probs in result.probs]
    return answer("predictions", images, answers, classifier, result.timing_ms)


def answer(
    key: str, images: list[Upload], answers: list[Any], classifier: Classifier, timing: Any
) -> dict[str, Any]:
    """One image's answer under `key`, or `results` naming each file's; the model; timing."""
    if len(images) == 1:
        return {key: answers[0], "model": classifier.info(), "timing_ms": timing}
    return {
        "results": [
            {"filename": upload.filename, key: item}
            for upload, item in zip(images, answers, strict=True)
        ],
        "model": classifier.info(),
        "timing_ms": timing,
    }


@bp.get("/healthz")
def healthz() -> Any:
    """Say the process is alive, and whether its models are real ones: `model` is the
    default model, `models` each served model's default version."""
    registry = context.core().registry
    return {
        "status": "ok",
        "model": registry.default.classifier.info(),
        "models": [engine.classifier.info() for engine in registry.served()],
    }


@bp.get("/readyz")
def readyz() -> Any:
    """200 once this worker's model is placed and warmed up, else 503.

    The body also counts the server's warm workers, so that a client can wait for all of
    them: a worker takes no connection before it is warm, so this one cannot tell it alone.
    """
    core = context.core()
    ready.require_worker(core.registry)
    return {
        "status": "ready",
        "workers_ready": metrics.workers_ready(),
        "workers": core.settings.worker_processes,
    }


@bp.get("/v1/model")
def model_info() -> Any:
    """Describe the model (`?model=NAME[&version=V]`, the default model when absent), its
    device and precision, and the batching settings."""
    core = context.core()
    engine = core.model(request.args.get("model"), request.args.get("version"))
    settings = core.settings
    classifier = engine.classifier
    return {
        **classifier.info(),
        "arch": classifier.arch,
        "classes": classifier.num_classes,
        "languages": list(classifier.languages),
        # The label lists stay in the manifest file (ImageNet's would be 2,000 names here).
        "manifest": {k: v for k, v in classifier.manifest.items() if k != "labels"},
        "format": classifier.format,
        "runtime": classifier.runtime,
        "platform": classifier.platform,
        "runner": classifier.runner,
        "device": str(classifier.device),
        "precision": classifier.precision,
        "precision_reason": engine.precision_reason,
        "ready": ready.model(engine),
        "batching": {  # the engine's: a Triton model's come from its config.pbtxt
            "max_batch": engine.batcher.max_batch,
            "max_wait_ms": engine.batcher.max_wait_s * 1000,
            "queue_max": engine.batcher.queue_max,
            "timeout_ms": settings.timeout_ms,
        },
        "worker": {
            "pid": os.getpid(),
            "torch_threads": torch.get_num_threads(),
            "cpus": sorted(os.sched_getaffinity(0)),
            "memory": memory.report(classifier.weights()),
        },
    }


@bp.get("/metrics")
def metrics_endpoint() -> Response:
    """Expose Prometheus metrics, summed over all workers."""
    if not context.core().settings.metrics_public:
        context.authorize()
    body, content_type = metrics.exposition(context.core().registry.loaded_versions())
    return Response(body, content_type=content_type)


def openapi_paths(classifier: Classifier) -> tuple[openapi.Paths, openapi.Schemas]:
    """This adapter's paths and schemas, with this model's top-k range, languages, classes."""
    _, high, default = common.topk_range(classifier.num_classes)
    predictions = {
        "type": "array",
        "items": {"$ref": "#/components/schemas/Prediction"},
        "maxItems": high,
    }
    result = {"model": {"$ref": "#/components/schemas/Model"}}
    result["timing_ms"] = {"$ref": "#/components/schemas/Timing"}
    schemas = {
        "Prediction": {
            "type": "object",
            "required": ["index", "label", "score"],
            "properties": {
                "index": {"type": "integer", "minimum": 0, "maximum": classifier.num_classes - 1},
                "label": {"type": "string"},
                "score": {"type": "number", "minimum": 0, "maximum": 1},
            },
        },
        "Timing": {
            "type": "object",
            "required": ["queue", "inference", "total"],
            "properties": {
                k: {"type": "number", "minimum": 0} for k in ("queue", "inference", "total")
            },
        },
        "SinglePrediction": {
            "type": "object",
            "required": ["predictions", "model", "timing_ms"],
            "properties": {"predictions": predictions, **result},
        },
        "BatchPrediction": {
            "type": "object",
            "required": ["results", "model", "timing_ms"],
            "properties": {
                "results": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["filename", "predictions"],
                        "properties": {
                            "filename": {"type": ["string", "null"]},
                            "predictions": predictions,
                        },
                    },
                },
                **result,
            },
        },
    }
    error = openapi.error
    selection = [  # which model and version answer
        {
            "name": "model",
            "in": "query",
            "description": "A served model's name; absent: the default model (whose topk "
            "and lang ranges are shown).",
            "schema": {"type": "string", "example": classifier.name},
        },
        {
            "name": "version",
            "in": "query",
            "description": "A loaded version of the model; absent: its default (or, during "
            "a gray release, its share of the newer one).",
            "schema": {"type": "string", "example": classifier.version},
        },
    ]
    not_served = {"404": error("No such model or version is served; the message lists them.")}
    predict = {
        "summary": "Classify one or more images.",
        "description": f"Images in {imaging.FORMAT_NAMES}; EXIF orientation is applied.",
        "parameters": [
            {
                "name": "topk",
                "in": "query",
                "description": "How many classes to return: 1 to min(20, classes).",
                "schema": {"type": "integer", "minimum": 1, "maximum": high, "default": default},
            },
            {
                "name": "lang",
                "in": "query",
                "description": "Language of the labels: one the model has labels in.",
                "schema": {"type": "string", "default": "en", "enum": list(classifier.languages)},
            },
            *selection,
        ],
        "requestBody": openapi.image_body("file", required=True),
        "responses": {
            "200": openapi.json_response(
                "Top-k classes: `predictions` for one image, `results` for several.",
                {
                    "oneOf": [
                        {"$ref": "#/components/schemas/SinglePrediction"},
                        {"$ref": "#/components/schemas/BatchPrediction"},
                    ]
                },
            ),
            "400": error("No image, or the image is corrupt."),
            "401": error("WANWU_API_KEYS is set and no valid bearer key was sent."),
            "408": error(
                "The body arrived too slowly (WANWU_BODY_TIMEOUT_S, WANWU_BODY_MIN_KBPS)."
            ),
            "411": error("A chunked body: send a Content-Length."),
            "413": error("Body, file count or pixel count over its limit."),
            **not_served,
            "415": error("Not a supported image type or body type."),
            "422": error("topk or lang out of range."),
            "500": error("The model failed; the error was logged."),
            "503": error("Not ready, or overloaded.", openapi.RETRY_AFTER),
            "504": error("The request waited longer than WANWU_TIMEOUT_MS."),
        },
    }
    metrics_text = {
        "description": "Prometheus text format.",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
    paths = {
        "/predict": {"post": predict},
        "/healthz": openapi.get("Process liveness and whether each model is trained.", {}),
        "/readyz": openapi.get(
            "Whether this worker is ready to serve.",
            {"503": error("Warming up.", openapi.RETRY_AFTER)},
        ),
        "/v1/model": openapi.get(
            "Model, runtime, device, precision and batching.", not_served, selection
        ),
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics summed over workers.",
                "responses": {
                    "200": metrics_text,
                    "401": error("WANWU_METRICS_PUBLIC=0 and no valid bearer key was sent."),
                },
            }
        },
    }
    return paths, schemas
