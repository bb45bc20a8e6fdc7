"""The one request path every protocol shares: authorize, admit, decode, submit, wait.

Policy: /predict, TorchServe's /predictions and OIP's /v2 infer differ only in how they read a
body and shape an answer. Between those, a request takes this path, so every protocol gets the
same API keys and signed tokens, per-caller rate limit (429), file-count, byte and pixel
limits, queue admission (503 + Retry-After when full), deadline (504) and batcher: images
from different protocols share forward passes.
Errors are raised as `errors.ApiError`; each protocol renders them in its own shape.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from flask import current_app, g, request

from app import errors, imaging, ratelimit, tokens
from app.engine import Engine
from app.settings import Settings


@dataclass(frozen=True)
class Classified:
    """Probability rows, in upload order, and where the request's time went."""

    probs: list[torch.Tensor]
    timing_ms: dict[str, float]


def engine() -> Engine:
    """This worker's engine."""
    return current_app.extensions["wanwu.engine"]


def settings() -> Settings:
    """The service's settings."""
    return current_app.extensions["wanwu.settings"]


def authorize() -> None:
    """Require a bearer API key (WANWU_API_KEYS) or signed token (WANWU_JWT_*) when either is
    set, raising Unauthorized; then count the call against the caller's WANWU_RATE_LIMIT."""
    conf = settings()
    keys, verifier = conf.api_keys, tokens.verifier(conf)
    caller = f"address {request.remote_addr}"
    if keys or verifier:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        bearer, token = scheme.lower() == "bearer", token.strip()
        # Compare against every key so the time taken does not reveal which one matched.
        matched = False
        for key in keys:
            matched |= hmac.compare_digest(token.encode(), key.encode())
        if bearer and matched:
            caller = f"key {token}"
        elif bearer and verifier and tokens.looks_like_jwt(token):
            caller = f"subject {verifier.subject(token)}"
        else:
            raise errors.Unauthorized(
                "A valid 'Authorization: Bearer <key or token>' header is required."
            )
    ratelimit.check(conf.rate_limit, caller)


def classify(uploads: Sequence[tuple[str | None, bytes]]) -> Classified:
    """Classify (filename or None, image bytes) pairs through the batcher, in order.

    Errors about one image name its file when it has one.
    """
    eng, conf = engine(), settings()
    if not uploads:
        raise errors.NoImage("The request holds no image.")
    if len(uploads) > conf.max_files:
        raise errors.TooManyFiles(
            f"{len(uploads)} files sent; at most {conf.max_files} per request."
        )
    for filename, data in uploads:
        if not data:
            raise errors.NoImage(
                f"{filename}: the file is empty." if filename else "An image is empty."
            )
    spec = eng.classifier.input_spec
    with eng.admit(len(uploads), g.started) as reservation:
        futures = []
        for filename, data in uploads:
            try:
                tensor = imaging.load(data, spec, conf.max_pixels, conf.decode)
            except errors.ApiError as exc:
                if filename is not None:
                    exc.message = f"{filename}: {exc.message}"
                raise
            # Queue each image as soon as it is ready: the model can start on it while the
            # next one decodes.
            futures.append(reservation.submit(tensor))
    results = [eng.wait(f, reservation.deadline) for f in futures]
    timing = {
        "queue": round(max(r.queue_ms for r in results), 3),
        "inference": round(max(r.inference_ms for r in results), 3),
        "total": round((time.monotonic() - g.started) * 1000, 3),
    }
    # For the access log, whatever the protocol.
    g.images, g.batch_size, g.timing = len(results), max(r.batch_size for r in results), timing
    return Classified([r.output for r in results], timing)


def served_model(name: str, version: str | None = None) -> None:
    """Refuse (404) a model name or version other than the one model this service serves.

    Protocols that address models by name (TorchServe, OIP) call this first, so a client
    pointed at the wrong name learns the right one.
    """
    classifier = engine().classifier
    if name != classifier.name:
        raise errors.ModelNotFound(
            f"Model not found: {name}. This service serves the model {classifier.name!r}."
        )
    # An imported TorchServe archive keeps answering to its own version ("1.0") too.
    versions = {classifier.version, classifier.manifest.get("weights", {}).get("archive_version")}
    if version is not None and version not in versions:
        raise errors.ModelNotFound(
            f"Model version: {version} does not exist for model: {name}. "
            f"The served version is {classifier.version!r}."
        )
