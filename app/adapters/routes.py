"""The HTTP protocol adapters, wired onto one Flask app, with the hooks they share.

Each adapter (`rest`, `explanations`, `torchserve`, `oip`, `kserve_v1`) is a blueprint that
parses its wire format, calls `app.core.verbs.Core` and renders answers. Here: the request hooks
(metrics, request id, the access log, fed from the core's `Classified`), and one error handler
that answers in the shape of the protocol that owns the path, so that a routing 404/405 or a
body refused by the intake (handed this shape as `errors.ERROR_BODY`) under `/v2` or
`/predictions` reads like every other error of that protocol. /openapi.json merges the
OpenAPI paths each adapter describes next to its routes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from flask import Flask, Response, g, request

from app import errors, metrics, openapi
from app.adapters import (
    common,
    context,
    explanations,
    kserve_v1,
    management,
    oip,
    rest,
    torchserve,
)

ADAPTERS = (rest, explanations, torchserve, oip, kserve_v1)


def error_body(path: str, error: errors.ApiError) -> dict[str, Any]:
    """The JSON body of `error` in the shape of the protocol serving `path` (wanwu's if none)."""
    return shape(path)(error)


def shape(path: str) -> Callable[[errors.ApiError], dict[str, Any]]:
    """The error shape of the protocol that owns `path`."""
    for adapter in (torchserve, oip, kserve_v1):
        if any(path == p or path.startswith(p + "/") for p in adapter.PATH_PREFIXES):
            return adapter.error_body
    return errors.ApiError.body


def _start_request() -> None:
    metrics.IN_FLIGHT.inc()
    g.held = ExitStack()  # the model versions this request leased (context.lease)
    g.started = time.monotonic()
    g.request_id = request.headers.get("X-Request-ID") or uuid.uuid4().hex


def _finish_request(response: Response) -> Response:
    response.headers["X-Request-ID"] = g.request_id
    for name, value in context.rate_limit_headers().items():
        response.headers.setdefault(name, value)  # a 429's own stand
    route = request.url_rule.rule if request.url_rule else "unmatched"
    common.record(
        route,
        response.status_code,
        g.request_id,
        request.remote_addr,  # X-Forwarded-For's, from a trusted proxy
        request.method,
        request.content_length or 0,
        g.get("classified"),
        time.monotonic() - g.started,
    )
    return response


def _end_request(exc: BaseException | None) -> None:
    if "held" in g:
        g.held.close()
    metrics.IN_FLIGHT.dec()


def _handle_error(exc: Exception) -> Response:
    return context.error_response(exc, shape(request.path))


def _openapi_document() -> Any:
    """Describe every endpoint in OpenAPI 3: each adapter's paths, merged."""
    classifier = context.core().engine.classifier
    return openapi.spec(classifier, [a.openapi_paths(classifier) for a in ADAPTERS])


def init_app(app: Flask) -> None:
    """Register every adapter, the request hooks and the error handler."""
    for adapter in ADAPTERS:
        app.register_blueprint(adapter.bp)
    app.register_blueprint(management.bp)
    app.add_url_rule("/openapi.json", "openapi", _openapi_document)
    app.before_request(_start_request)
    app.before_request(management.gate)
    app.after_request(_finish_request)
    app.teardown_request(_end_request)
    # Exception covers ApiError and werkzeug's HTTPExceptions too.
    app.register_error_handler(Exception, _handle_error)
    app.extensions[errors.ERROR_BODY] = error_body  # for the intake's early answers
