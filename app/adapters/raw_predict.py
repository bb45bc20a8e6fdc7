"""`POST /predict` with one raw image body, answered without Flask's request machinery.

This is the request most clients send, and on a small CPU the web framework's share of it
(contexts, routing, hooks, request and response objects) is CPU the model's passes then lack
(docs/BENCHMARKS.md). Here a WSGI middleware answers it with the very functions the
Flask route calls, in the same order: the caller's key and rate limit, the model's lease,
`topk` and `lang`, the core's `classify`, the answer, the access log and metrics, the
request id, the security and RateLimit headers, and errors in wanwu's shape. Its bytes are
Flask's: the app's own JSON provider writes them.

Anything else (multipart, a chunked body, no Content-Length, the management listener, other
paths and methods) goes to Flask unchanged, and so does every rule decided there.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from http import HTTPStatus
from typing import Any

from flask import Flask
from werkzeug.wrappers import Request

from app import errors, metrics, ratelimit, security
from app.adapters import common, rest
from app.core.types import Classified
from app.core.verbs import Core
from app.listeners import LISTENER

ROUTE = "/predict"
StartResponse = Callable[..., Any]


def raw_predict_request(environ: dict[str, Any]) -> Request | None:
    """The request when it is `POST /predict` on the inference listener with one raw image
    whose length is declared (the request this module answers), else None."""
    if environ.get("PATH_INFO") != ROUTE or environ.get("REQUEST_METHOD") != "POST":
        return None
    request = Request(environ)
    plain = request.content_length is not None and "Transfer-Encoding" not in request.headers
    if plain and environ.get(LISTENER) != "management" and rest.is_raw_image(request.mimetype):
        return request
    return None


class RawPredict:
    """WSGI middleware over the Flask app: raw `/predict` bodies here, the rest to Flask."""

    def __init__(self, app: Flask, core: Core) -> None:
        self.app, self.flask, self.core = app, app.wsgi_app, core

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        request = raw_predict_request(environ)
        if request is None:
            return self.flask(environ, start_response)
        started = time.monotonic()
        request_id = request.headers.get("X-Request-ID") or uuid.uuid4().hex
        client, length = request.remote_addr, request.content_length or 0
        metrics.IN_FLIGHT.inc()
        decision, classified = None, None
        try:
            with ExitStack() as held:
                try:
                    decision = self.core.authorize(request.headers.get("Authorization"), client)
                    classified, body = self.predict(request, held, started)
                    status, extra = 200, {}
                except Exception as exc:  # noqa: BLE001  (every error answers, as Flask's do)
                    status, body, extra = self.error(exc)
            # A 429's own RateLimit fields stand.
            headers = {**ratelimit.headers(self.core.settings.rate_limit, decision), **extra}
            common.record(
                ROUTE,
                status,
                request_id,
                client,
                "POST",
                length,
                classified,
                time.monotonic() - started,
            )
            start_response(
                f"{status} {HTTPStatus(status).phrase}",
                [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(body))),
                    ("X-Request-ID", request_id),
                    *headers.items(),
                    *security.HEADERS.items(),
                ],
            )
            return [body]
        finally:
            metrics.IN_FLIGHT.dec()

    def predict(
        self, request: Request, held: ExitStack, started: float
    ) -> tuple[Classified, bytes]:
        """The route's steps (app.adapters.rest.predict), on werkzeug's request."""
        args = request.args
        engine = held.enter_context(self.core.lease(args.get("model"), args.get("version")))
        classifier = engine.classifier
        k, lang = rest.query_params(classifier, args=args)
        settings = self.core.settings
        if (request.content_length or 0) > settings.max_upload_bytes:
            raise errors.PayloadTooLarge(errors.body_too_large(settings.max_upload_mb))
        images = rest.raw_upload(request.get_data(cache=False))
        result = self.core.classify(images, started, engine)
        return result, self.json(rest.predictions(images, result, classifier, k, lang))

    def error(self, exc: Exception) -> tuple[int, bytes, dict[str, str]]:
        """Status, body and headers of an error, as the app's error handler answers it."""
        error = common.as_api_error(exc)
        return error.status, self.json(error.body()), error.http_headers()

    def json(self, value: Any) -> bytes:
        """`value` as the bytes Flask's JSON response would hold."""
        return (self.app.json.dumps(value) + "\n").encode()  # compact, as jsonify's
