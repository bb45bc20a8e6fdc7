"""What every HTTP adapter shares through Flask's request context: the worker's core, the
caller's key and rate-limit standing, leases held until the request ends, multipart files,
and errors answered in a protocol's shape.

Each verb here keeps its result in the request context (`g.classified`) for the access log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from app import errors, explain, ratelimit
from app.adapters import common
from app.core.types import Classified, Explained, Upload
from app.core.verbs import Core
from app.engine import Engine
from app.model import Classifier
from app.tensor_model import Row

_HTTP_CODES = {404: errors.NotFound, 405: errors.MethodNotAllowed}


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
    return ratelimit.headers(core().settings.rate_limit, g.get("rate_limit"))


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


def infer(rows: list[Row], engine: Engine) -> Classified:
    """Run a tensor model's rows through the core, from the request's arrival; keep the
    result for the log."""
    g.classified = result = core().infer(rows, g.started, engine)
    return result


def target(classifier: Classifier) -> int | None:
    """The class the `target` query parameter names (an index or a label), None if absent."""
    raw = request.args.get("target")
    if raw is None:
        return None
    return explain.target(raw, {lang: classifier.labels(lang) for lang in classifier.languages})


def files(fields: Iterable[str]) -> list[Upload]:
    """The multipart files under any of `fields`, in field order (werkzeug parses the body)."""
    return [
        Upload(f.read(), f.filename or None) for name in fields for f in request.files.getlist(name)
    ]


def error_response(exc: Exception, shape: Callable[[errors.ApiError], Any]) -> Response:
    """Answer `exc` in a protocol's `shape`, with wanwu's status codes and Retry-After."""
    error = as_api_error(exc)
    response = jsonify(shape(error))
    response.status_code = error.status
    response.headers.update(error.http_headers())
    return response


def as_api_error(exc: Exception) -> errors.ApiError:
    """Map anything an HTTP request raised to the ApiError its client sees (werkzeug's
    errors by their code; the rest as every protocol maps them, `common.as_api_error`)."""
    if not isinstance(exc, HTTPException):
        return common.as_api_error(exc)
    if exc.code == 413:
        settings = core().settings
        if (request.content_length or 0) <= settings.max_upload_bytes:
            # Within the byte limit: werkzeug refused the number of multipart parts.
            return errors.PayloadTooLarge("The multipart body has too many parts.")
        return errors.PayloadTooLarge(errors.body_too_large(settings.max_upload_mb))
    error_class = _HTTP_CODES.get(exc.code or 500)
    if error_class is None:
        error = errors.ApiError(exc.description or exc.name)
        error.status, error.code = exc.code or 500, exc.name.lower().replace(" ", "_")
        return error
    return error_class(exc.description or exc.name)
