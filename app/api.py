"""HTTP endpoints: /predict, /healthz, /readyz, /v1/model, /metrics, and the JSON error mapping."""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import torch
from flask import Blueprint, Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from app import classify, errors, labels, memory, metrics, openapi
from app.engine import top_k, topk_range
from app.model import Classifier

bp = Blueprint("api", __name__)
log = logging.getLogger("wanwu.access")

_HTTP_CODES = {404: errors.NotFound, 405: errors.MethodNotAllowed}


# -- parameters and body -------------------------------------------------------------------------


def _query_params(classifier: Classifier) -> tuple[int, str]:
    low, high, default = topk_range(classifier.num_classes)
    raw_k = request.args.get("topk", str(default))
    try:
        k = int(raw_k)
    except ValueError:
        k = 0
    if not low <= k <= high:
        raise errors.InvalidParameter(
            f"topk must be an integer from {low} to {high} (model {classifier.name} has "
            f"{classifier.num_classes} classes); got {raw_k!r}."
        )
    lang = request.args.get("lang", "en")
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


def _uploads() -> list[tuple[str | None, bytes]]:
    """Return (filename, bytes) for each image in the request body."""
    mimetype = request.mimetype
    if mimetype == "multipart/form-data":
        files = request.files.getlist("file")
        if not files:
            raise errors.NoImage("The multipart body has no file under the field 'file'.")
        return [(f.filename or None, f.read()) for f in files]
    if mimetype.startswith("image/") or mimetype == "application/octet-stream":
        data = request.get_data(cache=False)
        if not data:
            raise errors.NoImage("The request body is empty.")
        return [(None, data)]
    if not mimetype and not request.content_length:
        raise errors.NoImage("Send an image: a multipart 'file' field or a raw image body.")
    raise errors.UnsupportedMediaType(
        f"Content-Type {mimetype or '(none)'} is not accepted: send multipart/form-data "
        "with a 'file' field, or an image/* or application/octet-stream body."
    )


# -- endpoints -----------------------------------------------------------------------------------


@bp.post("/predict")
def predict() -> Any:
    """Classify one or more images and return the top-k labels of each."""
    classify.authorize()
    classifier = classify.engine().classifier
    k, lang = _query_params(classifier)
    uploads = _uploads()
    result = classify.classify(uploads)
    names = classifier.labels(lang)
    model = classifier.info()
    if len(uploads) == 1:
        return {
            "predictions": top_k(result.probs[0], k, names),
            "model": model,
            "timing_ms": result.timing_ms,
        }
    return {
        "results": [
            {"filename": filename, "predictions": top_k(probs, k, names)}
            for (filename, _), probs in zip(uploads, result.probs, strict=True)
        ],
        "model": model,
        "timing_ms": result.timing_ms,
    }


@bp.get("/healthz")
def healthz() -> Any:
    """Say the process is alive, and whether the model is a real one."""
    classifier = classify.engine().classifier
    return {"status": "ok", "model": classifier.info()}


@bp.get("/readyz")
def readyz() -> Any:
    """200 once this worker's model is placed and warmed up, else 503.

    The body also counts the server's warm workers, so that a client can wait for all of
    them: a worker takes no connection before it is warm, so this one cannot tell it alone.
    """
    if not classify.engine().ready:
        raise errors.NotReady("The model is still warming up.", retry_after=1)
    return {
        "status": "ready",
        "workers_ready": metrics.workers_ready(),
        "workers": classify.settings().worker_processes,
    }


@bp.get("/v1/model")
def model_info() -> Any:
    """Describe the model, its device and precision, and the batching settings."""
    engine, settings = classify.engine(), classify.settings()
    classifier = engine.classifier
    return {
        **classifier.info(),
        "arch": classifier.arch,
        "classes": classifier.num_classes,
        "languages": list(classifier.languages),
        # The label lists stay in the manifest file (ImageNet's would be 2,000 names here).
        "manifest": {k: v for k, v in classifier.manifest.items() if k != "labels"},
        "format": classifier.format,
        "runner": classifier.runner,
        "device": str(classifier.device),
        "precision": classifier.precision,
        "ready": engine.ready,
        "batching": {
            "max_batch": settings.max_batch,
            "max_wait_ms": settings.max_wait_ms,
            "queue_max": settings.queue_max,
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
    settings = classify.settings()
    if not settings.metrics_public:
        classify.authorize()
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)


@bp.get("/openapi.json")
def openapi_document() -> Any:
    """Describe every endpoint in OpenAPI 3."""
    return openapi.spec(classify.engine().classifier)


# -- request lifecycle ---------------------------------------------------------------------------


def _start_request() -> None:
    metrics.IN_FLIGHT.inc()
    g.started = time.monotonic()
    g.request_id = request.headers.get("X-Request-ID") or uuid.uuid4().hex


def _finish_request(response: Response) -> Response:
    response.headers["X-Request-ID"] = g.request_id
    route = request.url_rule.rule if request.url_rule else "unmatched"
    elapsed = time.monotonic() - g.started
    metrics.REQUESTS.labels(route, str(response.status_code)).inc()
    metrics.REQUEST_DURATION.labels(route).observe(elapsed)
    log.info(
        json.dumps(
            {
                "request_id": g.request_id,
                "client": request.remote_addr,  # X-Forwarded-For's, from a trusted proxy
                "method": request.method,
                "route": route,
                "status": response.status_code,
                "bytes_in": request.content_length or 0,
                "images": g.get("images", 0),
                "batch_size": g.get("batch_size"),
                "timing_ms": g.get("timing", {"total": round(elapsed * 1000, 3)}),
            }
        )
    )
    return response


def error_handler(shape: Callable[[errors.ApiError], Any]) -> Callable[[Exception], Response]:
    """Make an error handler answering in a protocol's `shape`, with wanwu's status codes."""

    def handle(exc: Exception) -> Response:
        error = as_api_error(exc)
        response = jsonify(shape(error))
        response.status_code = error.status
        if error.retry_after is not None:
            response.headers["Retry-After"] = str(error.retry_after)
        return response

    return handle


def as_api_error(exc: Exception) -> errors.ApiError:
    """Map anything a request raised to the ApiError its client sees (every protocol)."""
    if isinstance(exc, errors.ApiError):
        return exc
    if not isinstance(exc, HTTPException):
        logging.getLogger("wanwu").exception("unhandled error")
        return errors.InternalError("Internal error; it was logged.")
    if exc.code == 413:
        settings = classify.settings()
        limit = settings.max_upload_mb
        if (request.content_length or 0) <= settings.max_upload_bytes:
            # Within the byte limit: werkzeug refused the number of multipart parts.
            return errors.PayloadTooLarge("The multipart body has too many parts.")
        return errors.PayloadTooLarge(f"The request body is larger than {limit:g} MB.")
    error_class = _HTTP_CODES.get(exc.code or 500)
    if error_class is None:
        error = errors.ApiError(exc.description or exc.name)
        error.status, error.code = exc.code or 500, exc.name.lower().replace(" ", "_")
        return error
    return error_class(exc.description or exc.name)


def init_app(app: Flask) -> None:
    """Register the endpoints, the request hooks and the JSON error handler."""
    app.register_blueprint(bp)
    app.before_request(_start_request)
    app.after_request(_finish_request)
    app.teardown_request(lambda exc: metrics.IN_FLIGHT.dec())
    # Exception covers ApiError and werkzeug's HTTPExceptions too.
    app.register_error_handler(Exception, error_handler(errors.ApiError.body))
