"""What every HTTP adapter shares: the core, keys, readiness, base64, multipart, top-k, errors.

Each protocol module reads its wire format with these helpers, calls `classify`, and renders
the answer; none repeats a check or a parser another one has.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch
from flask import Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from app import errors, explain, metrics, ratelimit
from app.core import Classified, Core, Explained, Upload
from app.engine import Engine
from app.model import Classifier
from app.tensor_model import Row

access_log = logging.getLogger("wanwu.access")

TOPK_MAX = 20  # and never more than the model's classes
TOPK_DEFAULT = 3  # or every class of a model with fewer

_HTTP_CODES = {404: errors.NotFound, 405: errors.MethodNotAllowed}


def record(
    route: str,
    status: int | str,
    request_id: str,
    client: str | None,
    method: str,
    bytes_in: int,
    classified: Classified | None,
    elapsed: float,
) -> None:
    """Count one answered request in the metrics and write its JSON access-log line (every
    protocol, HTTP and gRPC, the same fields)."""
    metrics.REQUESTS.labels(route, str(status)).inc()
    metrics.REQUEST_DURATION.labels(route).observe(elapsed)
    entry = {
        "request_id": request_id,
        "client": client,
        "method": method,
        "route": route,
        "status": status,
        "bytes_in": bytes_in,
        "images": len(classified.probs) if classified else 0,
        "batch_size": classified.batch_size if classified else None,
        "timing_ms": classified.timing_ms if classified else {"total": round(elapsed * 1000, 3)},
    }
    access_log.info(json.dumps(entry))


def core() -> Core:
    """This worker's request core."""
    return current_app.extensions["wanwu.core"]


def authorize() -> None:
    """Check the request's bearer key (when WANWU_API_KEYS is set); keep where the caller
    stands against WANWU_RATE_LIMIT for the answer's headers."""
    g.rate_limit = core().authorize(request.headers.get("Authorization"), request.remote_addr)


def rate_limit_headers() -> dict[str, str]:
    """The RateLimit fields of this answer while WANWU_RATE_LIMIT is set: the caller's standing
    when the call was counted (a 429 carries its own), else the policy alone."""
    rate_limit = core().settings.rate_limit
    if not rate_limit:
        return {}
    decision = g.get("rate_limit")
    return decision.headers() if decision else {"RateLimit-Policy": ratelimit.policy(rate_limit)}


def lease(name: str | None, version: str | None) -> Engine:
    """The engine to classify with (`Core.lease`), held until this request ends."""
    return g.held.enter_context(core().lease(name, version))


def classify(uploads: list[Upload], engine: Engine) -> Classified:
    """Classify with `engine`'s model through the core, from the request's arrival; keep the
    result for the log."""
    g.classified = result = core().classify(uploads, g.started, engine)
    return result


def explained(uploads: list[Upload], engine: Engine) -> Explained:
    """Explain with `engine`'s model through the core (`classify`'s twin)."""
    g.classified = result = core().explain(uploads, g.started, engine)
    return result


def target(classifier: Classifier) -> int | None:
    """The class the `target` query parameter names (an index or a label), None if absent."""
    raw = request.args.get("target")
    if raw is None:
        return None
    return explain.target(raw, {lang: classifier.labels(lang) for lang in classifier.languages})


def explanations(
    result: Explained, classifier: Classifier, k: int, index: int | None, lang: str = "en"
) -> list[list[dict[str, Any]]]:
    """Each image's explanations: of class `index` when given, else of its top `k`."""
    names = classifier.labels(lang)
    return [
        [
            explain.explanation(c, probs, cams, picture, box, names)
            for c in explain.classes(probs, k, index)
        ]
        for probs, cams, picture, box in zip(
            result.probs, result.cams, result.pictures, result.boxes, strict=True
        )
    ]


def infer(rows: list[Row], engine: Engine) -> Classified:
    """Run a tensor model's rows through the core, from the request's arrival; keep the
    result for the log."""
    g.classified = result = core().infer(rows, g.started, engine)
    return result


def files(fields: Iterable[str]) -> list[Upload]:
    """The multipart files under any of `fields`, in field order (werkzeug parses the body)."""
    return [
        Upload(f.read(), f.filename or None) for name in fields for f in request.files.getlist(name)
    ]


def base64_image(value: Any, message: str) -> bytes:
    """Decode one base64 string (or bytes) holding an image; raise `message` as a 400 if not."""
    try:
        if not isinstance(value, str | bytes):
            raise ValueError
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise errors.UndecodableImage(message) from None


def topk_range(classes: int) -> tuple[int, int, int]:
    """(lowest, highest, default) top-k for a model: 1..min(20, classes), default min(3, ..)."""
    return 1, min(TOPK_MAX, classes), min(TOPK_DEFAULT, classes)


def top_k(probs: torch.Tensor, k: int, labels: tuple[str, ...]) -> list[dict[str, object]]:
    """Return the k most probable classes of one probability row, most probable first."""
    scores, indices = probs.topk(k)
    return [
        {"index": int(i), "label": labels[int(i)], "score": round(float(s), 6)}
        for s, i in zip(scores, indices, strict=True)
    ]


def error_response(exc: Exception, shape: Callable[[errors.ApiError], Any]) -> Response:
    """Answer `exc` in a protocol's `shape`, with wanwu's status codes and Retry-After."""
    error = as_api_error(exc)
    response = jsonify(shape(error))
    response.status_code = error.status
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    response.headers.update(error.headers)
    return response


def as_api_error(exc: Exception) -> errors.ApiError:
    """Map anything a request raised to the ApiError its client sees (every protocol)."""
    if isinstance(exc, errors.ApiError):
        return exc
    if not isinstance(exc, HTTPException):
        logging.getLogger("wanwu").exception("unhandled error")
        return errors.InternalError("Internal error; it was logged.")
    if exc.code == 413:
        settings = core().settings
        if (request.content_length or 0) <= settings.max_upload_bytes:
            # Within the byte limit: werkzeug refused the number of multipart parts.
            return errors.PayloadTooLarge("The multipart body has too many parts.")
        return errors.PayloadTooLarge(body_too_large(settings.max_upload_mb))
    error_class = _HTTP_CODES.get(exc.code or 500)
    if error_class is None:
        error = errors.ApiError(exc.description or exc.name)
        error.status, error.code = exc.code or 500, exc.name.lower().replace(" ", "_")
        return error
    return error_class(exc.description or exc.name)


def body_too_large(limit_mb: float) -> str:
    """The 413 message for a body over the upload limit, naming the setting that raises it."""
    return f"The request body is larger than {limit_mb:g} MB (WANWU_MAX_UPLOAD_MB)."
