"""The inference engine of one worker: the classifier behind a dynamic batcher."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from typing import Any

from app import batcher as batching
from app import errors, metrics, runtime
from app.model import Classifier
from app.settings import Settings
from app.tensor_model import TensorModel

log = logging.getLogger(__name__)

MODEL_THREAD_NAME = "wanwu-model"

# How long past its deadline a caller waits for a pass already running (it cannot be cancelled).
_RUNNING_GRACE_S = 30.0


class Engine:
    """Own the classifier and the batcher; `start()` runs in the worker after fork."""

    def __init__(self, classifier: Classifier | TensorModel, settings: Settings) -> None:
        self.classifier = classifier
        self.settings = settings
        self.planned_device = runtime.planned_device(settings.device)
        self.precision = classifier.resolve_precision(
            settings.precision, self.planned_device, settings.max_batch
        )
        self.precision_reason = runtime.precision_reason(
            settings.precision, self.precision, self.planned_device
        )
        if self.planned_device.type == "cpu":
            # Before fork: the frozen weights are then shared by every worker.
            classifier.prepare(self.planned_device, self.precision, settings.cpu_fusion)
        max_batch, max_wait_ms = classifier.batching(settings.max_batch, settings.max_wait_ms)
        self.batcher = batching.Batcher(
            classifier,
            max_batch=max_batch,
            max_wait_s=max_wait_ms / 1000,
            queue_max=max(settings.queue_max, max_batch),
            on_batch=self._observe,
            collate=classifier.collate,
            verbs=self._verbs(classifier),
        )
        # Images being explained (admitted, queued, in a pass or being answered): at most
        # WANWU_EXPLAIN_QUEUE_MAX, so explanations never hold every request thread.
        self._explaining = 0
        self._explain_max = min(settings.explain_queue_max, settings.queue_max)
        # The worker's queue-depth gauge sums its models: each engine adds what changed.
        self._depth_lock = threading.Lock()
        self._depth_reported = 0

    @staticmethod
    def _verbs(classifier: Classifier | TensorModel) -> dict[str, Callable[[Any], Any]]:
        """An image classifier also explains; a tensor model runs its rows, nothing else."""
        return {batching.EXPLAIN: classifier.explain} if isinstance(classifier, Classifier) else {}

    def start(self, slot: int = 0) -> None:
        """Settle the device, then warm up and serve on the batcher thread (after fork)."""
        device = runtime.worker_device(self.planned_device, self.settings.device, slot)
        if device != self.classifier.device:
            precision = self.classifier.resolve_precision(
                self.settings.precision, device, self.settings.max_batch
            )
            self.classifier.prepare(device, precision)
        classifier = self.classifier
        self.precision_reason = runtime.precision_reason(
            self.settings.precision, classifier.precision, device
        )
        log.info(
            "model %s: %s on %s (%s)",
            classifier.name,
            classifier.precision,
            device,
            self.precision_reason,
        )
        self._info = (
            classifier.name,
            classifier.version,
            str(classifier.num_classes),
            str(classifier.trained).lower(),
            str(device),
            classifier.precision,
            classifier.format,
        )
        metrics.MODEL_INFO.labels(*self._info).set(1)
        # Each model's gauges exist from the start, at 0, for an autoscaler to read.
        self._report_depth()
        metrics.MODEL_IN_FLIGHT.labels(classifier.name, classifier.version).inc(0)
        metrics.start_model(classifier.name, classifier.version)
        self.batcher.start(warm_up=self._warm_up)

    def _warm_up(self) -> None:
        """On the batcher thread: name it (its OpenMP helpers, started now, inherit the name)."""
        runtime.name_os_thread(MODEL_THREAD_NAME)
        self.classifier.warm_up(self.batcher.max_batch)
        metrics.WORKERS_READY.set(1)

    def stop(self, timeout: float | None = None) -> None:
        """Finish every admitted image, then stop the batcher thread."""
        self.batcher.stop(timeout)

    def unpublish(self) -> None:
        """Say in the metrics that this worker no longer serves the model (it was retired)."""
        metrics.MODEL_INFO.labels(*self._info).set(0)

    @property
    def ready(self) -> bool:
        """True once the model is placed and every batch size is warmed up."""
        return self.batcher.ready.is_set()

    def admit(self, n: int, started: float, verb: str = batching.CLASSIFY) -> batching.Reservation:
        """Reserve queue places for `n` images of `verb` or raise the matching ApiError."""
        try:
            reservation = self.batcher.reserve(n, started + self.settings.timeout_ms / 1000, verb)
        except batching.Overloaded:
            labels = self.classifier.name, self.classifier.version
            metrics.REJECTED.labels(*labels, "overloaded").inc(n)
            raise errors.Overloaded(
                "The service is at capacity; retry shortly.", retry_after=1
            ) from None
        except batching.Stopped:
            raise errors.NotReady("The worker is shutting down; retry.", retry_after=1) from None
        self._report_depth()
        return reservation

    @contextmanager
    def explaining(self, n: int) -> Iterator[None]:
        """Hold `n` of the WANWU_EXPLAIN_QUEUE_MAX places while a request explains, from its
        admission to its answer; none left is a 503 with Retry-After."""
        with self._depth_lock:
            admitted = self._explaining + n <= self._explain_max
            if admitted:
                self._explaining += n
        if not admitted:
            labels = self.classifier.name, self.classifier.version
            metrics.REJECTED.labels(*labels, "overloaded").inc(n)
            raise errors.Overloaded(
                f"Explanations are at capacity ({self._explain_max} images, "
                "WANWU_EXPLAIN_QUEUE_MAX); retry shortly.",
                retry_after=1,
            )
        try:
            yield
        finally:
            with self._depth_lock:
                self._explaining -= n

    @contextmanager
    def in_flight(self) -> Iterator[None]:
        """Count a request in this model's in-flight gauge while it is being classified."""
        gauge = metrics.MODEL_IN_FLIGHT.labels(self.classifier.name, self.classifier.version)
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()

    def wait(self, future: Future[batching.Inference], deadline: float) -> batching.Inference:
        """Wait for one image's result, mapping batcher failures to ApiErrors."""
        try:
            return future.result(timeout=max(0.0, deadline - time.monotonic()) + _RUNNING_GRACE_S)
        except batching.DeadlineExceeded:
            raise errors.Timeout(
                f"The request waited longer than {self.settings.timeout_ms:g} ms in the queue."
            ) from None
        except FutureTimeout:
            raise errors.Timeout("The model did not answer in time.") from None
        except Exception as exc:
            log.error("inference failed: %s", exc)
            raise errors.InternalError("Inference failed; the error was logged.") from None

    def _observe(self, stats: batching.BatchStats) -> None:
        labels = self.classifier.name, self.classifier.version
        metrics.observe_batch(stats, *labels)
        if stats.size:
            metrics.MODEL_INFERENCES.labels(*labels).inc(stats.size)
            metrics.MODEL_EXECUTIONS.labels(*labels).inc()
            metrics.MODEL_QUEUE_SECONDS.labels(*labels).inc(sum(stats.queue_waits_s))
            metrics.MODEL_COMPUTE_SECONDS.labels(*labels).inc(stats.inference_s)
            metrics.MODEL_LAST_INFERENCE.labels(*labels).set(time.time())
        self._report_depth()

    def _report_depth(self) -> None:
        with self._depth_lock:
            depth = self.batcher.depth
            metrics.QUEUE_DEPTH.inc(depth - self._depth_reported)
            self._depth_reported = depth
            labels = self.classifier.name, self.classifier.version
            metrics.MODEL_QUEUE_DEPTH.labels(*labels).set(depth)
