"""The management API over HTTP: TorchServe's management calls and OIP's repository extension.

Policy:
- Answered on WANWU_MANAGEMENT_BIND only, and only that is answered there
  (app.listeners); every call needs `Authorization: Bearer <key>` with a key of
  WANWU_ADMIN_KEYS (401 otherwise). Errors take the shape of the protocol of the path.
- TorchServe: `GET /models`, `GET /models/{name}[/{version}|/all]`, `POST /models?url=`
  (a model folder, or a `.mar` inside the repository; `model_name`, `initial_workers` and
  `synchronous` are accepted, the last two without effect: every worker serves every model and
  every call is synchronous), `DELETE /models/{name}[/{version}]`,
  `PUT /models/{name}/{version}/set-default`, and wanwu's gray release,
  `PUT /models/{name}/{version}/share?percent=P`.
- OIP: `POST /v2/repository/index`, `POST /v2/repository/models/{name}/load|unload`.
What each call does is app.repository.operations'; every change answers with how long it took
to load and warm everywhere (`staged_s`) and to switch everywhere (`switched_s`).
"""

from __future__ import annotations

import os
from typing import Any

from flask import Blueprint, current_app, jsonify, request

from app import bounds, errors
from app.adapters import context
from app.core import ready
from app.core.access import bearer_token, is_one_of
from app.engine import Engine
from app.listeners import LISTENER
from app.repository.control import Report
from app.repository.operations import Management
from app.repository.plans import Plan

bp = Blueprint("management", __name__)

_REGISTER_OPTIONS = {"url", "model_name", "initial_workers", "synchronous"}


def on_management_listener() -> bool:
    """Whether this request came in on the management API's listener."""
    return request.environ.get(LISTENER) == "management"


def gate() -> None:
    """Answer management calls on the management listener only, and nothing else there."""
    if request.blueprint == "management" and not on_management_listener():
        raise errors.NotFound(
            f"{request.method} {request.path} is a management call: it is answered on "
            "WANWU_MANAGEMENT_BIND, with a WANWU_ADMIN_KEYS key (docs/MIGRATING.md)."
        )
    if request.blueprint != "management" and on_management_listener():
        raise errors.NotFound(
            f"{request.path} is not a management call; inference is served on WANWU_BIND."
        )


@bp.before_request
def _authorize() -> None:
    token = bearer_token(request.headers.get("Authorization"))
    if token is None or not is_one_of(token, context.core().settings.admin_keys):
        context.core().lockout.refuse(
            "management",
            request.remote_addr,
            "The management API needs 'Authorization: Bearer <key>' with a WANWU_ADMIN_KEYS key.",
        )


def _management() -> Management:
    return current_app.extensions["wanwu.management"]


def _status(message: str, report: Report) -> dict[str, Any]:
    return {"status": message, "staged_s": report.staged_s, "switched_s": report.switched_s}


# -- TorchServe's management API --------------------------------------------------------------


@bp.get("/models")
def list_models() -> Any:
    """The served models (a few: no pagination)."""
    return {
        "models": [
            {"modelName": e.classifier.name, "modelUrl": os.path.basename(e.classifier.path)}
            for e in context.core().registry.served()
        ]
    }


@bp.get("/models/<name>")
@bp.get("/models/<name>/<version>")
def describe(name: str, version: str | None = None) -> Any:
    """Each loaded version of a model (`all`: the same), or the one named, TorchServe's way."""
    registry = context.core().registry
    plan, engines = registry.loaded(name)
    if version not in (None, "all"):  # by its number, or an imported archive's own
        engine = registry.find(name, version)
        engines = {engine.classifier.version: engine}
    return jsonify([_description(e, plan, v) for v, e in engines.items()])


def _description(engine: Engine, plan: Plan, version: str) -> dict[str, Any]:
    classifier, settings = engine.classifier, context.core().settings
    warm, depth = ready.model(engine), engine.batcher.depth
    return {
        "modelName": classifier.name,
        "modelVersion": classifier.version,
        "modelUrl": os.path.basename(classifier.path),
        "runtime": classifier.runtime,
        "isDefault": version == plan.default,
        "trafficShare": plan.share(version),
        "minWorkers": settings.worker_processes,
        "maxWorkers": settings.worker_processes,
        "batchSize": settings.max_batch,
        "maxBatchDelay": settings.max_wait_ms,
        "responseTimeout": settings.timeout_ms / 1000,
        "deviceType": "gpu" if classifier.device.type == "cuda" else "cpu",
        "status": "Healthy" if warm else "Unhealthy",
        # This worker only: each Gunicorn worker answers for itself.
        "workers": [
            {
                "id": str(os.getpid()),
                "pid": os.getpid(),
                "status": "READY" if warm else "UNLOADING",
                "gpu": classifier.device.type == "cuda",
            }
        ],
        "jobQueueStatus": {
            "remainingCapacity": settings.queue_max - depth,
            "pendingRequests": depth,
        },
    }


@bp.post("/models")
def register() -> Any:
    """Load a model folder, or import a `.mar` in the repository and load it."""
    unknown = set(request.args) - _REGISTER_OPTIONS
    if unknown:
        raise errors.BadRequest(
            f"{', '.join(sorted(unknown))}: not a wanwu registration option; it takes "
            f"{', '.join(sorted(_REGISTER_OPTIONS))} (batching is WANWU_MAX_BATCH and "
            "WANWU_MAX_WAIT_MS, for every model)."
        )
    url = request.args.get("url")
    if not url:
        raise errors.BadRequest("url is required: a model folder's name or a .mar in it.")
    name, report = _management().register(url, request.args.get("model_name"))
    version = context.core().registry.plans[name].default
    return _status(f'Model "{name}" Version: {version} registered with every worker', report)


@bp.put("/models/<name>")
@bp.put("/models/<name>/<version>")
def scale(name: str, version: str | None = None) -> Any:
    """Scaling a model's workers is not wanwu's: every worker serves every model."""
    raise errors.BadRequest(
        "Every worker serves every model: set WANWU_WORKERS (or scale replicas) instead."
    )


@bp.delete("/models/<name>")
@bp.delete("/models/<name>/<version>")
def unregister(name: str, version: str | None = None) -> Any:
    """Stop serving a model, or a gray release's version."""
    report = _management().unload(name, version)
    which = f'Model "{name}"' + (f" Version: {version}" if version else "")
    return _status(f"{which} unregistered", report)


@bp.put("/models/<name>/<version>/set-default")
def set_default(name: str, version: str) -> Any:
    """Serve `version` to every request naming none (loading it if needed)."""
    report = _management().set_default(name, version)
    return _status(
        f'Default version successfully updated for model "{name}" to "{version}"', report
    )


@bp.put("/models/<name>/<version>/share")
def share(name: str, version: str) -> Any:
    """Gray release: `percent` % of the requests naming no version go to `version`."""
    try:
        percent = bounds.parse_count(request.args.get("percent", ""), 99)
    except ValueError as exc:
        raise errors.BadRequest(f"percent {exc}.") from None
    report = _management().share(name, version, percent)
    return _status(f'Model "{name}" Version: {version} gets {percent}% of the traffic', report)


# -- OIP's repository extension ----------------------------------------------------------------


@bp.post("/v2/repository/index")
def repository_index() -> Any:
    """Every version in the repository, READY when it serves."""
    return jsonify(_management().index())


@bp.post("/v2/repository/models/<name>/load")
def repository_load(name: str) -> Any:
    """Serve the model's pinned or highest version (a new model, or an update)."""
    _management().load(name)
    return {}


@bp.post("/v2/repository/models/<name>/unload")
def repository_unload(name: str) -> Any:
    """Stop serving the model."""
    _management().unload(name)
    return {}
