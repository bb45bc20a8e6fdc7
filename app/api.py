"""HTTP endpoints: /predict, /healthz, /readyz, /v1/model, /metrics, and the JSON error mapping."""

from __future__ import annotations

import hmac
import json
import logging
import os
import time
import uuid
from typing import Any

import torch
from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from app import errors, imaging, labels, memory, metrics, openapi
from app.engine import Engine, top_k, topk_range
from app.model import Classifier
from app.settings import Settings

bp = Blueprint("api", __name__)
log = logging.getLogger("wanwu.access")

_HTTP_CODES = {404: errors.NotFound, 405: errors.MethodNotAllowed}


def _engine() -> Engine:
    return current_app.extensions["wanwu.engine"]


def _settings() -> Settings:
    return current_app.extensions["wanwu.settings"]


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


def _uploads(max_files: int) -> list[tuple[str | None, bytes]]:
    """Return (filename, bytes) for each image in the request body."""
    mimetype = request.mimetype
    if mimetype == "multipart/form-data":
        files = request.files.getlist("file")
        if not files:
            raise errors.NoImage("The multipart body has no file under the field 'file'.")
        if len(files) > max_files:
            raise errors.TooManyFiles(f"{len(files)} files sent; at most {max_files} per request.")
        uploads = [(f.filename or None, f.read()) for f in files]
        for filename, data in uploads:
            if not data:
                raise errors.NoImage(f"{filename or 'The file'}: the file is empty.")
        return uploads
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


def _check_api_key(keys: tuple[str, ...]) -> None:
    if not keys:
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    supplied = token.strip().encode()
    # Compare against every key so the time taken does not reveal which one matched.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(supplied, key.encode())
    if scheme.lower() != "bearer" or not matched:
        raise errors.Unauthorized("A valid 'Authorization: Bearer <key>' header is required.")


# -- endpoints -----------------------------------------------------------------------------------


@bp.post("/predict")
def predict() -> Any:
    """Classify one or more images and return the top-k labels of each."""
    settings, engine = _settings(), _engine()
    _check_api_key(settings.api_keys)
    k, lang = _query_params(engine.classifier)
    uploads = _uploads(settings.max_files)
    spec = engine.classifier.input_spec
    with engine.admit(len(uploads), g.started) as reservation:
        futures = []
        for filename, data in uploads:
            try:
                tensor = imaging.load(data, spec, settings.max_pixels)
            except errors.ApiError as exc:
                if filename is not None:
                    exc.message = f"{filename}: {exc.message}"
                raise
            # Queue each image as soon as it is ready: the model can start on it while the
            # next one decodes.
            futures.append(reservation.submit(tensor))
    results = [engine.wait(f, reservation.deadline) for f in futures]
    g.images, g.batch_size = len(results), max(r.batch_size for r in results)
    names = engine.classifier.labels(lang)
    timing = {
        "queue": round(max(r.queue_ms for r in results), 3),
        "inference": round(max(r.inference_ms for r in results), 3),
        "total": round((time.monotonic() - g.started) * 1000, 3),
    }
    g.timing = timing
    model = engine.classifier.info()
    if len(uploads) == 1:
        return {
            "predictions": top_k(results[0].output, k, names),
            "model": model,
            "timing_ms": timing,
        }
    return {
        "results": [
            {"filename": filename, "predictions": top_k(r.output, k, names)}
            for (filename, _), r in zip(uploads, results, strict=True)
        ],
        "model": model,
        "timing_ms": timing,
    }


@bp.get("/healthz")
def healthz() -> Any:
    """Say the process is alive, and whether the model is a real one."""
    classifier = _engine().classifier
    return {"status": "ok", "model": classifier.info()}


@bp.get("/readyz")
def readyz() -> Any:
    """200 once this worker's model is placed and warmed up, else 503.

    The body also counts the server's warm workers, so that a client can wait for all of
    them: a worker takes no connection before it is warm, so this one cannot tell it alone.
    """
    if not _engine().ready:
        raise errors.NotReady("The model is still warming up.", retry_after=1)
    return {
        "status": "ready",
        "workers_ready": metrics.workers_ready(),
        "workers": _settings().worker_processes,
    }


@bp.get("/v1/model")
def model_info() -> Any:
    """Describe the model, its device and precision, and the batching settings."""
    engine, settings = _engine(), _settings()
    classifier = engine.classifier
    return {
        **classifier.info(),
        "arch": classifier.arch,
        "classes": classifier.num_classes,
        "languages": list(classifier.languages),
        # The label lists stay in the manifest file (ImageNet's would be 2,000 names here).
        "manifest": {k: v for k, v in classifier.manifest.items() if k != "labels"},
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
    settings = _settings()
    if not settings.metrics_public:
        _check_api_key(settings.api_keys)
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)


@bp.get("/openapi.json")
def openapi_document() -> Any:
    """Describe every endpoint in OpenAPI 3."""
    return openapi.spec(_engine().classifier)


# -- request lifecycle ---------------------------------------------------------------------------


def _start_request() -> None:
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


def _error_response(exc: errors.ApiError) -> Response:
    response = jsonify(exc.body())
    response.status_code = exc.status
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def _http_error(exc: HTTPException) -> Response:
    if exc.code == 413:
        limit = _settings().max_upload_mb
        if (request.content_length or 0) <= limit * 1024 * 1024:
            # Within the byte limit: werkzeug refused the number of multipart parts.
            return _error_response(errors.PayloadTooLarge("The multipart body has too many parts."))
        return _error_response(
            errors.PayloadTooLarge(f"The request body is larger than {limit:g} MB.")
        )
    error_class = _HTTP_CODES.get(exc.code or 500)
    if error_class is None:
        error = errors.ApiError(exc.description or exc.name)
        error.status, error.code = exc.code or 500, exc.name.lower().replace(" ", "_")
        return _error_response(error)
    return _error_response(error_class(exc.description or exc.name))


def _unexpected_error(exc: Exception) -> Response:
    logging.getLogger("wanwu").exception("unhandled error")
    return _error_response(errors.InternalError("Internal error; it was logged."))


def init_app(app: Flask) -> None:
    """Register the endpoints, the request hooks and the JSON error handlers."""
    app.register_blueprint(bp)
    app.before_request(_start_request)
    app.after_request(_finish_request)
    app.register_error_handler(errors.ApiError, _error_response)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
