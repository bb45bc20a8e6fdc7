"""Every Prometheus metric of the service, defined once.

Gunicorn runs several workers, so app.boot sets PROMETHEUS_MULTIPROC_DIR before this module
is imported; prometheus-client then keeps per-process files that /metrics sums up.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

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
from prometheus_client.core import GaugeMetricFamily, Metric

from app import cgroup, memory
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
    "Time an image waited in the batch queue, per model and version.",
    ["model", "version"],
    buckets=_LATENCY_BUCKETS,
)
INFERENCE = Histogram(
    "wanwu_inference_seconds",
    "Duration of one forward pass, per model and version.",
    ["model", "version"],
    buckets=_LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "wanwu_batch_size",
    "Images per forward pass, per model and version.",
    ["model", "version"],
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
)
QUEUE_DEPTH = Gauge(
    "wanwu_queue_depth",
    "Images admitted and not yet in a forward pass.",
    multiprocess_mode="livesum",
)
MODEL_QUEUE_DEPTH = Gauge(
    "wanwu_model_queue_depth",
    "Images admitted and not yet in a forward pass, per served model and version.",
    ["model", "version"],
    multiprocess_mode="livesum",
)
MODEL_IN_FLIGHT = Gauge(
    "wanwu_model_requests_in_flight",
    "Requests being classified, per served model and version.",
    ["model", "version"],
    multiprocess_mode="livesum",
)
MODEL_REQUESTS = Counter(
    "wanwu_model_requests_total",
    "Requests classified, per model and the version that answered (a gray release's split).",
    ["model", "version"],
)
TRAFFIC_SHARE = Gauge(
    "wanwu_model_traffic_share",
    "Part (0-1) of a model's requests naming no version that each loaded version gets.",
    ["model", "version"],
    multiprocess_mode="livemax",
)


def _per_model(name: str, documentation: str) -> Counter:
    return Counter(name, documentation, ["model", "version"])


# Triton's statistics extension (app/statistics.py) reads these, per model version.
MODEL_INFERENCES = _per_model("wanwu_model_inferences_total", "Rows (images, tensor rows) run.")
MODEL_EXECUTIONS = _per_model("wanwu_model_executions_total", "Forward passes run.")
MODEL_QUEUE_SECONDS = _per_model("wanwu_model_queue_seconds_total", "Time rows waited for a pass.")
MODEL_COMPUTE_SECONDS = _per_model("wanwu_model_compute_seconds_total", "Time in forward passes.")
MODEL_REQUEST_SECONDS = _per_model(
    "wanwu_model_request_seconds_total", "Time of the requests answered, arrival to answer."
)
MODEL_LAST_INFERENCE = Gauge(
    "wanwu_model_last_inference_timestamp_seconds",
    "When the model last ran a pass (Unix time).",
    ["model", "version"],
    multiprocess_mode="max",
)
REJECTED = Counter(
    "wanwu_rejected_total",
    "Images refused (overloaded) or dropped (deadline) by a model version's batcher.",
    ["model", "version", "reason"],
)
REJECT_REASONS = ("overloaded", "deadline")
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
# Why the intake (app/intake/) closes or refuses a connection before a request thread has it;
# each is a series at 0 from a worker's start, so the dashboard's panel reads 0, not no data.
EARLY_CLOSES = (
    "header_timeout",
    "keepalive_timeout",
    "body_timeout",
    "too_large",
    "buffer_full",
    "address_cap",
    "worker_cap",
    "evicted",
    "accept_error",
    "error",
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
RATE_LIMITED = Counter(
    "wanwu_rate_limited_total", "Calls refused with 429 by the per-caller rate limit."
)
AUTH_REFUSED = Counter(
    "wanwu_auth_refused_total",
    "Failed authentications answered 429: past app.lockout's count for their address.",
    ["listener"],
)
FORWARDED_INVALID = Counter(
    "wanwu_forwarded_for_invalid_total",
    "X-Forwarded-For entries from a trusted proxy that are not IP addresses (ignored).",
)
WORKER_EXITS = Counter(
    "wanwu_worker_exits_total",
    "Workers that exited (crashed, timed out or were stopped), counted by the master.",
)
WORKERS_CONFIGURED = Gauge(
    "wanwu_workers_configured",
    "Workers the server runs when all is well (set by the master).",
    multiprocess_mode="livemax",
)
MODEL_INFO = Gauge(
    "wanwu_model_info",
    "The model each live worker serves (value 1).",
    ["name", "version", "classes", "trained", "device", "precision", "format"],
    multiprocess_mode="livemax",
)


def start_worker() -> None:
    """Create this worker's counters that have labels at 0 (those without exist already)."""
    for reason in EARLY_CLOSES:
        CONNECTIONS_CLOSED.labels(reason)


def start_model(model: str, version: str) -> None:
    """Create a served version's series at 0, so that its panels and alerts read 0, not "no
    data", before its first request (a worker starting it, at start-up or on a load)."""
    for metric in (MODEL_REQUESTS, QUEUE_WAIT, INFERENCE, BATCH_SIZE):
        metric.labels(model, version)
    for reason in REJECT_REASONS:
        REJECTED.labels(model, version, reason)


def observe_batch(stats: BatchStats, model: str, version: str) -> None:
    """Record one forward pass of `model` at `version` (the batcher's on_batch hook)."""
    if stats.size:
        BATCH_SIZE.labels(model, version).observe(stats.size)
        INFERENCE.labels(model, version).observe(stats.inference_s)
        IMAGES.inc(stats.size)
        waited = QUEUE_WAIT.labels(model, version)
        for wait in stats.queue_waits_s:
            waited.observe(wait)
    if stats.expired:
        REJECTED.labels(model, version, "deadline").inc(stats.expired)


class ServerMemory:
    """The server's memory and the most it may use, read when scraped.

    Where a cgroup limits memory (a container's, v2 or v1: app/cgroup.py), its use (what the
    OOM killer compares to the limit) and that limit; else the PSS of the Gunicorn master and
    its workers (shared copy-on-write pages counted once) and the machine's memory.
    """

    def collect(self) -> list[GaugeMetricFamily]:
        usage, limit = cgroup.memory() or (_tree_pss(), cgroup.physical_memory())
        return [
            GaugeMetricFamily("wanwu_memory_usage_bytes", "Memory the server uses.", usage),
            GaugeMetricFamily("wanwu_memory_limit_bytes", "Memory the server may use.", limit),
        ]


def _tree_pss() -> int:
    """PSS of this process's parent (the Gunicorn master) and the parent's children."""
    root = os.getppid() if "PROMETHEUS_MULTIPROC_DIR" in os.environ else os.getpid()
    pids = [str(root)]
    try:
        with open(f"/proc/{root}/task/{root}/children") as f:
            pids += f.read().split()
    except OSError:
        pass
    total = 0
    for pid in pids:
        try:
            total += memory.smaps_rollup(pid)["pss"]
        except OSError:  # exited meanwhile, or not ours to read
            pass
    return total


# Apart from the others: read only for a scrape, not each time /readyz counts warm workers.
_SERVER_MEMORY = CollectorRegistry()
_SERVER_MEMORY.register(ServerMemory())


def _registry() -> CollectorRegistry:
    """Every worker's metrics under Gunicorn, this process's otherwise."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


class LoadedOnly:
    """The metrics of `source`, less the series of model versions no longer loaded.

    A version's series go when it stops serving (an unload, a set-default that retires the
    old version): in multiprocess mode a series lives in the workers' files until they exit,
    however it is removed, so the scrape leaves out any series whose `model` (`name` for
    wanwu_model_info) and `version` name a version not in `loaded`.
    """

    def __init__(self, source: CollectorRegistry, loaded: set[tuple[str, str]]) -> None:
        self.source, self.loaded = source, loaded

    def collect(self) -> Iterator[Metric]:
        for family in self.source.collect():
            family.samples = [s for s in family.samples if self._kept(s.labels)]
            yield family

    def _kept(self, labels: dict[str, str]) -> bool:
        model = labels.get("model", labels.get("name"))
        return "version" not in labels or (model, labels["version"]) in self.loaded


def exposition(loaded: set[tuple[str, str]] | None = None) -> tuple[bytes, str]:
    """Render all metrics, summed over every worker when running under Gunicorn; with
    `loaded`, only the series of those (model, version) pairs among the per-model ones."""
    registry = _registry()
    if loaded is not None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(LoadedOnly(_registry(), loaded))
    return generate_latest(registry) + generate_latest(_SERVER_MEMORY), CONTENT_TYPE_LATEST


def per_model() -> dict[tuple[str, str, str], float]:
    """Every per-model sample, (sample name, model, version) -> value, summed over every
    worker under Gunicorn (read at once, for Triton's statistics)."""
    found = {}
    for family in _registry().collect():
        for sample in family.samples:
            if set(sample.labels) == {"model", "version"}:
                found[sample.name, sample.labels["model"], sample.labels["version"]] = sample.value
    return found


def workers_ready() -> int:
    """How many of the server's workers are warm and serving."""
    return int(_registry().get_sample_value("wanwu_workers_ready") or 0)


def mark_worker_dead(pid: int) -> None:
    """Count a worker's exit and drop its live gauges (Gunicorn's child_exit hook)."""
    WORKER_EXITS.inc()
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        multiprocess.mark_process_dead(pid)
