"""The one readiness rule, for every route and RPC that says whether wanwu serves.

Policy: a model version is ready once its engine is placed and every batch size is warmed up
in this worker (`Engine.ready`). A worker is ready once every version it routes is: /ping,
/readyz, /v2/health/ready and gRPC ServerReady ask that of the worker; /v2/models/{m}/ready,
gRPC ModelReady, /v1/model's `ready` and the management API's status ask it of one version.
Where a route refuses for it, the refusal is a 503 with Retry-After: 1.
"""

from __future__ import annotations

from app import errors
from app.engine import Engine
from app.repository.registry import Registry

RETRY_AFTER_S = 1  # warming up takes seconds: ask again soon


def model(engine: Engine) -> bool:
    """Whether this version is warm in this worker."""
    return engine.ready


def worker(registry: Registry) -> bool:
    """Whether every version this worker routes is warm."""
    return all(model(engine) for engine in registry.routed())


def require_model(engine: Engine) -> None:
    """Raise NotReady (503 + Retry-After) until `engine`'s version is warm."""
    if not model(engine):
        raise errors.NotReady("The model is still warming up.", retry_after=RETRY_AFTER_S)


def require_worker(registry: Registry) -> None:
    """Raise NotReady (503 + Retry-After) until every version of this worker is warm."""
    if not worker(registry):
        raise errors.NotReady("The model is still warming up.", retry_after=RETRY_AFTER_S)
