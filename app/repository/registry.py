"""The registry requests ask: each process's engines by model and version, and the plans
that route to them.

Policy:
- What a model serves is its `Plan` (app.repository.plans). A request naming no version is
  routed by its model's plan: during a gray release every (100/percent)-th one, counted per
  worker, goes to the newer version. A request naming a version gets that version while it is
  loaded (an imported TorchServe archive's own version too). The first model by name at start is
  the default model, what `/predict` without `?model=` classifies (the first image model,
  beside Triton models), while it is served. An unknown name or version is a 404 naming the
  served ones.
- The start-time models are loaded in the Gunicorn master (shared copy-on-write,
  app.repository.loading); each worker gets one engine, with its own batcher, per loaded
  version. Versions loaded later (app.repository.control) are loaded by each worker itself.
  `switch()` changes every plan at once; an engine no plan uses any more is retired: it finishes
  the requests that hold it, then stops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app import errors, memory, metrics
from app.artifact import ArtifactError
from app.engine import Engine
from app.repository import loading
from app.repository.plans import Plan, Plans, not_served
from app.settings import Settings

log = logging.getLogger(__name__)


class Registry:
    """The engines of one process, by (model, version), and the plans that route to them."""

    def __init__(
        self,
        engines: list[Engine],
        settings: Settings,
        root: Path | None = None,
        plans: Plans | None = None,
    ) -> None:
        """`plans` route to `engines` (each engine its model's one version when None)."""
        self.settings = settings
        self.root = root
        self._engines = {_key(e): e for e in engines}
        self._plans = dict(plans or {name: Plan(version) for name, version in self._engines})
        images = [n for n, p in self._plans.items() if _images(self._engines[(n, p.default)])]
        self._first = min(images or self._plans)  # the default model while it is served
        self._lock = threading.Lock()
        self._released = threading.Condition(self._lock)  # a lease ended
        self._leases: Counter[Engine] = Counter()  # only engines some request holds
        self._credit: dict[str, int] = {}  # gray-release accumulators, in percent
        self._slot: int | None = None

    @classmethod
    def load(cls, settings: Settings) -> Registry:
        """Load every model the settings name, without running any (safe before fork)."""
        if not settings.model_repository:
            return cls([loading.load_model(settings)], settings)
        root = Path(settings.model_repository)
        plans = loading.start_plans(root, settings)
        engines = [
            loading.load_version(root, name, version, settings)
            for name, plan in plans.items()
            for version in plan.versions
        ]
        return cls(engines, settings, root, plans)

    # -- routing (request threads) ---------------------------------------------------------

    @property
    def plans(self) -> dict[str, Plan]:
        """Every served model's plan, by name."""
        return dict(self._plans)

    @property
    def default_name(self) -> str:
        """The model a request naming none gets: the first by name at start, while it is
        served (a model loaded later never takes its place), else the first served by name."""
        return self._first if self._first in self._plans else min(self._plans)

    @property
    def default(self) -> Engine:
        """The default model's default version."""
        return self.find()

    def loaded_versions(self) -> set[tuple[str, str]]:
        """Every (model, version) loaded in this worker: served, or staged to be."""
        with self._lock:
            return set(self._engines)

    def served(self) -> list[Engine]:
        """The engine of each served model's default version, by model name."""
        with self._lock:  # a switch changes both at once
            return [self._engines[(n, p.default)] for n, p in sorted(self._plans.items())]

    def loaded(self, name: str) -> tuple[Plan, dict[str, Engine]]:
        """Model `name`'s plan and the engine of each version it routes to, taken together."""
        with self._lock:
            self._route(name, None, count=False)  # or the 404 naming the served models
            plan = self._plans[name]
            return plan, {v: self._engines[(name, v)] for v in plan.versions}

    def find(self, name: str | None = None, version: str | None = None) -> Engine:
        """The engine serving `name` (the default model when None) at `version` (the plan's
        default when None), for a description; `lease` is what a classification uses."""
        with self._lock:
            return self._route(name, version, count=False)

    @contextmanager
    def lease(self, name: str | None = None, version: str | None = None) -> Iterator[Engine]:
        """Route one request (a gray release counts it) and hold its engine: a switch that
        retires the engine meanwhile waits for the request before stopping it."""
        with self._lock:
            engine = self._route(name, version, count=True)
            self._leases[engine] += 1
        try:
            yield engine
        finally:
            with self._lock:
                self._leases[engine] -= 1
                if not self._leases[engine]:
                    del self._leases[engine]
                    self._released.notify_all()

    def _route(self, name: str | None, version: str | None, count: bool) -> Engine:
        name = self.default_name if name is None else name
        plan = self._plans.get(name)
        if plan is None:
            raise not_served(name, self._plans)
        if version is None:
            version = self._pick(name, plan) if count else plan.default
        for served in plan.versions:
            engine = self._engines[(name, served)]
            if version in (served, _archive(engine)):
                return engine
        raise errors.ModelNotFound(
            f"Model version: {version} does not exist for model: {name}. Served versions: "
            f"{', '.join(plan.versions)}."
        )

    def _pick(self, name: str, plan: Plan) -> str:
        """The default version, or every (100/percent)-th time the gray release's."""
        if plan.canary is None:
            return plan.default
        credit = self._credit.get(name, 0) + plan.percent
        self._credit[name] = credit % 100
        return plan.canary if credit >= 100 else plan.default

    # -- changes (app.repository.control, in each worker) -----------------------------------

    def missing(self, plans: Plans) -> list[tuple[str, str]]:
        """The (model, version) pairs `plans` route to that this process has not loaded."""
        return [(n, v) for n, p in plans.items() for v in p.versions if (n, v) not in self._engines]

    def stage(self, name: str, version: str) -> None:
        """Load version `version` of model `name` from the repository, start and warm it,
        beside the served ones (which keep answering); raise ArtifactError if it cannot."""
        if self.root is None:
            raise ArtifactError("only a model repository (WANWU_MODEL_REPOSITORY) loads models")
        engine = loading.load_version(self.root, name, version, self.settings)
        try:
            self._start(engine)
            deadline = time.monotonic() + self.settings.load_timeout_s
            while not engine.batcher.wait_ready(0.1):
                if time.monotonic() > deadline:
                    raise ArtifactError(f"{name} version {version} did not warm up in time")
        except Exception as exc:
            engine.stop(0)
            raise ArtifactError(f"{name} version {version} failed to warm up: {exc}") from exc
        with self._lock:
            self._engines[(name, version)] = engine

    def switch(self, plans: Plans) -> list[Engine]:
        """Route by `plans` from now on, all models at once; return the engines no plan uses
        (to `retire`). Every version the plans name must be loaded (`missing` is empty)."""
        if self.missing(plans):
            raise ArtifactError(f"not loaded here: {self.missing(plans)}")
        with self._lock:
            self._plans, self._credit = dict(plans), {}
            unused = [
                k for k in self._engines if k[0] not in plans or k[1] not in plans[k[0]].versions
            ]
            retired = [self._engines.pop(k) for k in unused]
            self._report_shares(retired)
        return retired

    def discard(self) -> list[Engine]:
        """Drop the staged engines no plan routes to (a change was abandoned); return them."""
        return self.switch(self._plans)

    def retire(self, engines: list[Engine], timeout: float) -> None:
        """Wait (up to `timeout` s) for the requests that hold each engine, then stop it and
        give its memory back. Takes the engines out of `engines`, the last reference to them."""
        if not engines:
            return
        deadline = time.monotonic() + timeout
        while engines:
            self._retire(engines.pop(), deadline)
        memory.release()

    def _retire(self, engine: Engine, deadline: float) -> None:
        with self._released:
            self._released.wait_for(
                lambda: engine not in self._leases, max(0.0, deadline - time.monotonic())
            )
        engine.stop(max(0.0, deadline - time.monotonic()))
        engine.unpublish()
        log.info("retired %s version %s", engine.classifier.name, engine.classifier.version)

    # -- lifecycle ---------------------------------------------------------------------------

    def routed(self) -> list[Engine]:
        """The engine of every version that requests are routed to (app.core.ready asks
        whether they are warm)."""
        with self._lock:
            return [self._engines[(n, v)] for n, p in self._plans.items() for v in p.versions]

    def start(self, slot: int = 0) -> None:
        """Start every engine (in the worker, after fork)."""
        self._slot = slot
        for engine in self._engines.values():
            self._start(engine)
        with self._lock:
            self._report_shares([])

    def _start(self, engine: Engine) -> None:
        if self._slot is None:
            raise RuntimeError("the registry was not started in this process")
        engine.start(self._slot)

    def wait_ready(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for each model to warm up; True when all are."""
        return all(engine.batcher.wait_ready(timeout) for engine in list(self._engines.values()))

    def stop(self, timeout: float | None = None) -> None:
        """Finish every admitted image of every model, then stop the batchers."""
        metrics.WORKERS_READY.set(0)
        for engine in list(self._engines.values()):
            engine.stop(timeout)

    def _report_shares(self, retired: list[Engine]) -> None:
        """Publish each loaded version's share of its model's traffic (under the lock)."""
        for engine in retired:
            metrics.TRAFFIC_SHARE.labels(*_key(engine)).set(0)
        for name, version in self._engines:
            metrics.TRAFFIC_SHARE.labels(name, version).set(self._plans[name].share(version))


def _images(engine: Engine) -> bool:
    """Whether the engine classifies images (a Triton model takes tensors instead)."""
    return engine.classifier.input_spec is not None


def _key(engine: Engine) -> tuple[str, str]:
    return engine.classifier.name, engine.classifier.version


def _archive(engine: Engine) -> str | None:
    """An imported TorchServe archive keeps answering to its own version ("1.0") too."""
    return engine.classifier.manifest.get("weights", {}).get("archive_version")
