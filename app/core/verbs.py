"""The core's verbs: classify (images → top-k), infer (tensors → tensors), explain.

Policy: /predict, TorchServe's /predictions, OIP's /v2 infer (and any other adapter) differ only
in how they read a request and shape an answer. Between those, a request goes through `Core`,
so every protocol gets the same API keys and signed tokens, per-caller rate limit (429; both
in `access`), readiness (`ready`), file-count, byte and pixel limits, queue admission (503 +
Retry-After when full), deadline (504) and batcher: images from different protocols share
forward passes. Explanations (`explain`) take the same path as a verb of their own, with their
own share of the queue (WANWU_EXPLAIN_QUEUE_MAX), so that they cannot crowd predictions out.
Errors are raised as `errors.ApiError`; each adapter renders them in its own shape. The core
returns what it did (`app.core.types`); it writes no request state anywhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import torch

from app import batcher as batching
from app import errors, imaging, metrics, ratelimit
from app.core import access, ready
from app.core.types import Classified, Explained, Upload
from app.engine import Engine
from app.lockout import Lockout
from app.repository.registry import Registry
from app.settings import Settings
from app.tensor_model import Row


def require_images(engine: Engine) -> None:
    """Raise a 400 naming the tensor route when `engine`'s model takes tensors, not images."""
    name = engine.classifier.name
    if engine.classifier.input_spec is None:
        raise errors.BadRequest(
            f"Model {name} takes tensors, not images: send them to /v2/models/{name}/infer."
        )


class Core:
    """One per worker: the served models, the settings, and the checks every request passes."""

    def __init__(self, registry: Registry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings
        self.lockout = Lockout()  # before the fork: every worker counts in one table

    @property
    def engine(self) -> Engine:
        """The default model's engine."""
        return self.registry.default

    def authorize(self, authorization: str | None, client: str | None) -> ratelimit.Decision | None:
        """Check a call's key or token and count it against its caller's rate limit
        (`app.core.access.authorize`, with this server's failure counts)."""
        return access.authorize(self.settings, self.lockout, authorization, client)

    def require_ready(self) -> None:
        """Raise NotReady (503 + Retry-After) until every model of this worker is warm."""
        ready.require_worker(self.registry)

    def model(self, name: str | None = None, version: str | None = None) -> Engine:
        """The engine serving `name` at `version` (the default model when None), or a 404
        naming the served models, to describe it: every protocol routes through here."""
        return self.registry.find(name, version)

    def lease(
        self, name: str | None = None, version: str | None = None
    ) -> AbstractContextManager[Engine]:
        """Like `model`, to classify with: the engine's version is held until the request
        ends, and a gray release counts the request."""
        return self.registry.lease(name, version)

    def classify(
        self, uploads: Sequence[Upload], started: float, engine: Engine | None = None
    ) -> Classified:
        """Classify the uploads with `engine`'s model (the default's when None), in order;
        the deadline runs from `started`.

        `started` is the request's arrival on `time.monotonic()`. Errors about one image name
        its file when it has one.
        """
        eng = engine or self.engine
        self._check_images(eng, uploads)
        return self._through(eng, started, lambda: self._run(eng, uploads, started))

    def explain(
        self, uploads: Sequence[Upload], started: float, engine: Engine | None = None
    ) -> Explained:
        """Like `classify`, through the model's explain method: 501 for a model that has none
        (the message says why)."""
        eng = engine or self.engine
        self._check_images(eng, uploads)
        reason = eng.classifier.unexplainable
        if reason is not None:
            raise errors.NotExplainable(f"Model {eng.classifier.name} cannot explain: {reason}.")
        pictures: list[torch.Tensor] = []
        with eng.explaining(len(uploads)):
            done = self._through(
                eng, started, lambda: self._run(eng, uploads, started, batching.EXPLAIN, pictures)
            )
        spec = eng.classifier.input_spec
        return Explained(
            [probs for probs, _ in done.probs],
            done.timing_ms,
            done.batch_size,
            [cams for _, cams in done.probs],
            pictures,
            [imaging.crop_box(upload.data, spec) for upload in uploads],
        )

    def _check_images(self, eng: Engine, uploads: Sequence[Upload]) -> None:
        """Refuse a request that holds no image, too many, or an empty one, or that asks a
        model which takes tensors."""
        conf = self.settings
        require_images(eng)
        if not uploads:
            raise errors.NoImage("The request holds no image.")
        if len(uploads) > conf.max_files:
            raise errors.too_many_files(len(uploads), conf.max_files)
        for upload in uploads:
            if not upload.data:
                raise errors.NoImage(
                    f"{upload.filename}: the file is empty."
                    if upload.filename
                    else "An image is empty."
                )

    def infer(self, rows: Sequence[Row], started: float, engine: Engine) -> Classified:
        """Run a tensor model's rows (checked by the adapter) through its batcher, in order."""

        def run() -> list[batching.Inference]:
            with engine.admit(len(rows), started) as reservation:
                futures = [reservation.submit(row) for row in rows]
            return [engine.wait(f, reservation.deadline) for f in futures]

        return self._through(engine, started, run)

    def _through(
        self, eng: Engine, started: float, run: Callable[[], list[batching.Inference]]
    ) -> Classified:
        """Run a request on a warm engine, counted; say where its time went."""
        self.require_ready()
        with eng.in_flight():
            results = run()
        metrics.MODEL_REQUESTS.labels(eng.classifier.name, eng.classifier.version).inc()
        timing = {
            "queue": round(max(r.queue_ms for r in results), 3),
            "inference": round(max(r.inference_ms for r in results), 3),
            "total": round((time.monotonic() - started) * 1000, 3),
        }
        metrics.MODEL_REQUEST_SECONDS.labels(eng.classifier.name, eng.classifier.version).inc(
            timing["total"] / 1000
        )
        return Classified([r.output for r in results], timing, max(r.batch_size for r in results))

    def _run(
        self,
        eng: Engine,
        uploads: Sequence[Upload],
        started: float,
        verb: str = batching.CLASSIFY,
        pictures: list[torch.Tensor] | None = None,
    ) -> list[batching.Inference]:
        """Decode each upload into `eng`'s queue as `verb`, then wait for every result; each
        decoded input is added to `pictures` when given."""
        conf = self.settings
        spec = eng.classifier.input_spec
        with eng.admit(len(uploads), started, verb) as reservation:
            futures = []
            for upload in uploads:
                try:
                    tensor = imaging.load_pixels(upload.data, spec, conf.max_pixels, conf.decode)
                except errors.ApiError as exc:
                    if upload.filename is not None:
                        exc.message = f"{upload.filename}: {exc.message}"
                    raise
                # Queue each image as soon as it is ready: the model can start on it while the
                # next one decodes.
                futures.append(reservation.submit(tensor))
                if pictures is not None:
                    pictures.append(tensor)
        return [eng.wait(f, reservation.deadline) for f in futures]
