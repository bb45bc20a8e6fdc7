"""The dynamic batcher: request threads submit tensors, one thread runs them through the model.

Policy (docs/BENCHMARKS.md has the measurements behind it):
- An idle model takes the first queued image at once: no wait tax at low load.
- While the model is busy, images queue up; the next pass takes up to `max_batch` of them.
- A partial batch waits (at most `max_wait_s` from its first image's arrival) only while
  other admitted images are still being decoded, since only those can join it.
- Admission is bounded: queued + decoding images never exceed `queue_max`; beyond that
  `reserve` raises `Overloaded` at once instead of growing the queue.
- An image whose deadline passed while queued gets `DeadlineExceeded` and never reaches
  the model. A failing pass fails only the images in that pass.
- Other verbs (explanations) run on the same thread, in passes of their own kind. While
  images to classify are queued, a pass takes them first; another verb's queued images get
  a pass once they have waited through SHARE passes, so neither kind starves the other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

CLASSIFY = "classify"  # the verb of `run_batch`
EXPLAIN = "explain"  # the engine's other verb (app/explain.py)
SHARE = 3  # classification passes another verb's waiting images may be passed over for


class Overloaded(Exception):
    """The queue is full; the caller should retry later."""


class DeadlineExceeded(Exception):
    """The image waited past its deadline and was not run."""


class Stopped(Exception):
    """The batcher is not accepting work."""


@dataclass(frozen=True)
class Inference:
    """One image's model output and where its time went."""

    output: Any  # an image's probabilities (and class maps for EXPLAIN), or a tensor row's outputs
    queue_ms: float
    inference_ms: float
    batch_size: int


@dataclass(frozen=True)
class BatchStats:
    """What the batcher reports after each forward pass (for metrics)."""

    size: int
    queue_waits_s: tuple[float, ...]
    inference_s: float
    expired: int


@dataclass(eq=False)
class _Item:
    verb: str
    tensor: torch.Tensor
    future: Future[Inference]
    enqueued: float
    deadline: float


class Batcher:
    """Merge concurrent single-image requests into batched calls of `run_batch`."""

    def __init__(
        self,
        run_batch: Callable[[Any], Any],
        *,
        max_batch: int,
        max_wait_s: float,
        queue_max: int,
        on_batch: Callable[[BatchStats], None] | None = None,
        collate: Callable[[list[Any]], Any] = torch.stack,
        clock: Callable[[], float] = time.monotonic,
        verbs: Mapping[str, Callable[[Any], Sequence[Any]]] | None = None,
    ) -> None:
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be an integer >= 1, got {max_batch!r}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s!r}")
        if queue_max < max_batch:
            raise ValueError(f"queue_max ({queue_max}) must be >= max_batch ({max_batch})")
        # Each verb's batch function: one output per image, as `run_batch` for CLASSIFY.
        self._verbs = {CLASSIFY: run_batch, **(verbs or {})}
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.queue_max = queue_max
        self._on_batch = on_batch
        self._collate = collate  # queued items -> one batch (a tensor model's rows: tuples)
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: deque[_Item] = deque()
        self._decoding = 0  # admitted images not yet submitted
        self._passed_over = 0  # classification passes taken while another verb waited
        self._accepting = False
        self._thread: threading.Thread | None = None
        self.ready = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, warm_up: Callable[[], None] | None = None) -> None:
        """Start the batching thread; it runs `warm_up` first, then sets `ready`."""
        if self._thread is not None:
            raise RuntimeError("batcher already started")
        with self._cond:
            self._accepting = True
        self._thread = threading.Thread(
            target=self._serve, args=(warm_up,), name="wanwu-batcher", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Refuse new work, finish everything admitted, then end the thread."""
        with self._cond:
            self._accepting = False
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_ready(self, timeout: float) -> bool:
        """Wait up to `timeout` s for the warm-up; raise if the batching thread died in it."""
        if self.ready.wait(timeout):
            return True
        if self._thread is None or not self._thread.is_alive():
            raise RuntimeError("the batching thread ended before it was ready")
        return False

    @property
    def depth(self) -> int:
        """Images admitted and not yet taken into a forward pass."""
        with self._cond:
            return len(self._queue) + self._decoding

    @property
    def queued(self) -> int:
        """Images decoded and waiting for a forward pass (`depth` less those decoding)."""
        with self._cond:
            return len(self._queue)

    # -- request side ------------------------------------------------------------------------

    def reserve(self, n: int, deadline: float, verb: str = CLASSIFY) -> Reservation:
        """Admit `n` images of `verb` that the caller will decode and submit, or raise
        Overloaded."""
        with self._cond:
            if not self._accepting:
                raise Stopped("the batcher is not running")
            if len(self._queue) + self._decoding + n > self.queue_max:
                raise Overloaded(f"{self.queue_max} images already queued")
            self._decoding += n
        return Reservation(self, n, deadline, verb)

    def _submit(self, verb: str, tensor: torch.Tensor, deadline: float) -> Future[Inference]:
        item = _Item(verb, tensor, Future(), self._clock(), deadline)
        with self._cond:
            self._decoding -= 1
            self._queue.append(item)
            # Wake the model thread only when it can act on this image: the first of an empty
            # queue, a full batch, or the last one being decoded (the stragglers it waits for).
            if len(self._queue) == 1 or len(self._queue) >= self.max_batch or not self._decoding:
                self._cond.notify()
        return item.future

    def _release(self, n: int) -> None:
        with self._cond:
            self._decoding -= n
            self._cond.notify_all()

    # -- batching thread ---------------------------------------------------------------------

    def _serve(self, warm_up: Callable[[], None] | None) -> None:
        if warm_up is not None:
            warm_up()
        self.ready.set()
        while True:
            batch = self._collect()
            if batch is None:
                return
            self._run(batch)

    def _collect(self) -> list[_Item] | None:
        """Block for the next batch; None once stopped and drained."""
        with self._cond:
            while not self._queue:
                if not self._accepting and self._decoding == 0:
                    return None
                self._cond.wait()
            # Wait for stragglers only if some admitted image is still being decoded.
            head = self._head()
            deadline = head.enqueued + self.max_wait_s
            while self._count(head.verb) < self.max_batch and self._decoding > 0:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch = [item for item in self._queue if item.verb == head.verb][: self.max_batch]
            taken = set(map(id, batch))
            self._queue = deque(item for item in self._queue if id(item) not in taken)
            return batch

    def _head(self) -> _Item:
        """The oldest image of the verb the next pass runs (see the policy above)."""
        oldest = self._queue[0]
        first = next((item for item in self._queue if item.verb == CLASSIFY), None)
        if first is None or first is oldest or self._passed_over >= SHARE:
            self._passed_over = 0
            return oldest
        self._passed_over += 1
        return first

    def _count(self, verb: str) -> int:
        return sum(item.verb == verb for item in self._queue)

    def _run(self, batch: list[_Item]) -> None:
        start = self._clock()
        live = [item for item in batch if item.deadline > start]
        for item in batch:
            if item.deadline <= start:
                item.future.set_exception(DeadlineExceeded("deadline passed while queued"))
        if not live:
            self._report(BatchStats(0, (), 0.0, len(batch)))
            return
        try:
            run = self._verbs[live[0].verb]
            outputs = run(self._collate([item.tensor for item in live]))
            if len(outputs) != len(live):
                raise RuntimeError(
                    f"model returned {len(outputs)} outputs for a batch of {len(live)}"
                )
        except Exception as exc:  # one failing pass must not kill the thread
            log.exception("forward pass of %d images failed", len(live))
            for item in live:
                item.future.set_exception(exc)
            return
        inference_s = self._clock() - start
        for item, output in zip(live, outputs, strict=True):
            item.future.set_result(
                Inference(
                    output=output,
                    queue_ms=(start - item.enqueued) * 1000,
                    inference_ms=inference_s * 1000,
                    batch_size=len(live),
                )
            )
        self._report(
            BatchStats(
                size=len(live),
                queue_waits_s=tuple(start - item.enqueued for item in live),
                inference_s=inference_s,
                expired=len(batch) - len(live),
            )
        )

    def _report(self, stats: BatchStats) -> None:
        if self._on_batch is not None:
            try:
                self._on_batch(stats)
            except Exception:
                log.exception("batch observer failed")


class Reservation:
    """Places in the queue held for one request while its images are decoded."""

    def __init__(self, batcher: Batcher, n: int, deadline: float, verb: str) -> None:
        self._batcher = batcher
        self._left = n
        self.deadline = deadline
        self.verb = verb

    def submit(self, tensor: torch.Tensor) -> Future[Inference]:
        """Queue one decoded image; its future resolves to an Inference."""
        if self._left <= 0:
            raise RuntimeError("more images submitted than reserved")
        self._left -= 1
        return self._batcher._submit(self.verb, tensor, self.deadline)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Images that failed to decode give their places back.
        if self._left:
            self._batcher._release(self._left)
            self._left = 0
