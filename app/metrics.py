"""Every Prometheus metric of the service, defined once.

Gunicorn runs several workers, so gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR before this
module is imported; prometheus-client then keeps per-process files that /metrics sums up.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from app.batcher import BatchStats

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10)

REQUESTS = Counter("wanwu_requests_total", "HTTP requests answered.", ["route", "status"])
REQUEST_DURATION = Histogram(
    "wanwu_request_duration_seconds",
    "Time from request start to response.",
    ["route"],
    buckets=_LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge(
    "wanwu_requests_in_flight",
    "Requests a worker has taken and not yet answered.",
    multiprocess_mode="livesum",
)
IMAGES = Counter("wanwu_images_total", "Images classified.")
QUEUE_WAIT = Histogram(
    "wanwu_queue_wait_seconds",
    "Time an image waited in the batch queue.",
    buckets=_LATENCY_BUCKETS,
)
INFERENCE = Histogram(
    "wanwu_inference_seconds", "Duration of one forward pass.", buckets=_LATENCY_BUCKETS
)
BATCH_SIZE = Histogram(
    "wanwu_batch_size", "Images per forward pass.", buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
)
QUEUE_DEPTH = Gauge(
    "wanwu_queue_depth",
    "Images admitted and not yet in a forward pass.",
    multiprocess_mode="livesum",
)
REJECTED = Counter("wanwu_rejected_total", "Images refused or dropped by the batcher.", ["reason"])
WORKERS_READY = Gauge(
    "wanwu_workers_ready",
    "Workers whose model is warm and serving (1 each).",
    multiprocess_mode="livesum",
)
CONNECTIONS_CLOSED = Counter(
    "wanwu_connections_closed_total",
    "Connections closed by a worker's intake before or instead of a request thread, by reason.",
    ["reason"],
)
CONNECTIONS_OPEN = Gauge(
    "wanwu_connections_open",
    "Client connections the workers hold open.",
    multiprocess_mode="livesum",
)
BUFFERED_BYTES = Gauge(
    "wanwu_buffered_request_bytes",
    "Request bytes the workers hold in memory (received, or reserved for a body).",
    multiprocess_mode="livesum",
)
MODEL_INFO = Gauge(
    "wanwu_model_info",
    "The model each live worker serves (value 1).",
    ["name", "version", "classes", "trained", "device", "precision", "format"],
    multiprocess_mode="livemax",
)


def observe_batch(stats: BatchStats) -> None:
    """Record one forward pass (the batcher's on_batch hook)."""
    if stats.size:
        BATCH_SIZE.observe(stats.size)
        INFERENCE.observe(stats.inference_s)
        IMAGES.inc(stats.size)
        for wait in stats.queue_waits_s:
            QUEUE_WAIT.observe(wait)
    if stats.expired:
        REJECTED.labels("deadline").inc(stats.expired)


def _registry() -> CollectorRegistry:
    """Every worker's metrics under Gunicorn, this process's otherwise."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def exposition() -> tuple[bytes, str]:
    """Render all metrics, summed over every worker when running under Gunicorn."""
    return generate_latest(_registry()), CONTENT_TYPE_LATEST


def workers_ready() -> int:
    """How many of the server's workers are warm and serving."""
    return int(_registry().get_sample_value("wanwu_workers_ready") or 0)


def mark_worker_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (Gunicorn's child_exit hook)."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        multiprocess.mark_process_dead(pid)
