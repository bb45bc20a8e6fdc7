"""What every adapter shares, HTTP and gRPC alike, with no web framework: the access log,
error mapping, base64, top-k and explanations as JSON.

Each protocol module reads its wire format with these helpers (and, over HTTP, with
`app.adapters.context`), calls the core, and renders the answer; none repeats a check or a
parser another one has.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any

import torch

from app import errors, explain, metrics
from app.core.types import Classified, Explained
from app.model import Classifier

access_log = logging.getLogger("wanwu.access")

TOPK_MAX = 20  # and never more than the model's classes
TOPK_DEFAULT = 3  # or every class of a model with fewer


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


def as_api_error(exc: Exception) -> errors.ApiError:
    """Map anything a request raised to the ApiError its client sees: itself, or an internal
    error, logged (the HTTP adapters map their framework's errors first)."""
    if isinstance(exc, errors.ApiError):
        return exc
    logging.getLogger("wanwu").exception("unhandled error")
    return errors.InternalError("Internal error; it was logged.")


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
