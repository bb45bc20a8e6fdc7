"""The HTTP protocol adapters, wired onto one Flask app, with the hooks they share.

Each adapter (`rest`, `torchserve`, `oip`) is a blueprint that parses its wire format, calls
`app.core.Core` and renders answers. Here: the request hooks (metrics, request id, the access
log, fed from the core's `Classified`), and one error handler that answers in the shape of the
protocol that owns the path, so that a routing 404/405 or a body refused by the intake under
`/v2` or `/predictions` reads like every other error of that protocol.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, g, request

from app import errors, metrics
from app.adapters import common, oip, rest, torchserve

log = logging.getLogger("wanwu.access")

ADAPTERS = (rest, torchserve, oip)


def error_body(path: str, error: errors.ApiError) -> dict[str, Any]:
    """The JSON body of `error` in the shape of the protocol serving `path` (wanwu's if none)."""
    return shape(path)(error)


def shape(path: str) -> Callable[[errors.ApiError], dict[str, Any]]:
    """The error shape of the protocol that owns `path`."""
    for adapter in (torchserve, oip):
        if any(path == p or path.startswith(p + "/") for p in adapter.PATH_PREFIXES):
            return adapter.error_body
    return errors.ApiError.body


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
    classified = g.get("classified")
    log.info(
        json.dumps(
            {
                "request_id": g.request_id,
                "client": request.remote_addr,  # X-Forwarded-For's, from a trusted proxy
                "method": request.method,
                "route": route,
                "status": response.status_code,
                "bytes_in": request.content_length or 0,
                "images": len(classified.probs) if classified else 0,
                "batch_size": classified.batch_size if classified else None,
                "timing_ms": (
                    classified.timing_ms if classified else {"total": round(elapsed * 1000, 3)}
                ),
            }
        )
    )
    return response


def _handle_error(exc: Exception) -> Response:
    return common.error_response(exc, shape(request.path))


def init_app(app: Flask) -> None:
    """Register every adapter, the request hooks and the error handler."""
    for adapter in ADAPTERS:
        app.register_blueprint(adapter.bp)
    app.before_request(_start_request)
    app.after_request(_finish_request)
    app.teardown_request(lambda exc: metrics.IN_FLIGHT.dec())
    # Exception covers ApiError and werkzeug's HTTPExceptions too.
    app.register_error_handler(Exception, _handle_error)
