"""What a start serves, and a version folder loaded as an engine (not started: safe before fork).

Policy:
- Without WANWU_MODEL_REPOSITORY, `WANWU_MODEL` is a one-model repository: the model answers to
  its manifest's name and version (the artifact hash, and an imported TorchServe archive's own
  version).
- With it, each model starts serving its pinned (WANWU_PINNED_VERSIONS) or highest version
  (app.repository.scan), or, with WANWU_MODEL_SNAPSHOT, what the last change left served
  (app.repository.snapshot). A pin naming no model, or a snapshot that could not be written
  later, stops start-up.
- A wanwu export loads as a Classifier serving under its folder's name and version; a Triton
  model folder as a TensorModel planned from its config.pbtxt (app.repository.triton) for the
  device the worker will use. Seeded random weights are served with a loud warning.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from app import runtime
from app.artifact import ArtifactError
from app.engine import Engine
from app.model import Classifier
from app.repository import snapshot, triton
from app.repository.plans import Plan, plans_from_json
from app.repository.scan import artifact, scan, versions
from app.settings import Settings
from app.tensor_model import TensorModel

log = logging.getLogger(__name__)


def load_model(settings: Settings) -> Engine:
    """The engine of the one model WANWU_MODEL names (no repository)."""
    classifier = Classifier.load(settings.model)
    return _engine(classifier, settings, settings.model)


def start_plans(root: Path, settings: Settings) -> dict[str, Plan]:
    """Each model of the repository at `root` with the plan it starts with."""
    pins, found = settings.pins, scan(root)
    if set(pins) - set(found):
        raise ArtifactError(
            f"WANWU_PINNED_VERSIONS names {', '.join(sorted(set(pins) - set(found)))}, not "
            f"a model of {root} ({', '.join(found)})"
        )
    plans = {name: Plan(pins.get(name, newest)) for name, (newest, _) in found.items()}
    if settings.model_snapshot:
        plans = _restored(root, plans, Path(settings.model_snapshot))
    return plans


def _restored(root: Path, plans: dict[str, Plan], path: Path) -> dict[str, Plan]:
    """`plans` (each model's pinned or highest version) as the snapshot at `path` left them
    (app.repository.snapshot); a snapshot that could not be written later stops start-up now."""
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ArtifactError(f"WANWU_MODEL_SNAPSHOT {path} cannot be written (its folder must be)")
    kept = snapshot.read(path)
    if kept is None:
        return plans
    kept_plans, restored = plans_from_json(kept.plans), {}
    for name, plan in plans.items():
        if name in kept.unloaded:
            continue
        restored[name] = kept_plans.get(name, plan)  # a model folder added since: as it is
        if not set(restored[name].versions) <= set(versions(root / name)):
            log.warning(
                "%s: %s serves version %s, not %s, which is gone from %s",
                path,
                name,
                plan.default,
                restored[name],
                root,
            )
            restored[name] = plan
    if not restored:
        raise ArtifactError(
            f"WANWU_MODEL_SNAPSHOT {path} leaves none of the models of {root} served: delete "
            "it to start from the repository"
        )
    log.info("restored the served versions from %s: %s", path, restored)
    return restored


def load_version(root: Path, name: str, version: str, settings: Settings) -> Engine:
    """Load version `version` of repository model `name` (not started)."""
    folder = root / name / version
    numbered = versions(root / name) if (root / name).is_dir() else {}
    if version not in numbered:
        raise ArtifactError(
            f"{folder} does not exist: {name} has versions {', '.join(numbered) or 'none'}"
        )
    path = artifact(numbered[version])
    if triton.is_triton(root / name):
        device = runtime.planned_device(settings.device).type
        spec = triton.plan(root / name, version, triton.read_config(root / name), device)
        return Engine(TensorModel.load(spec), settings)
    classifier = Classifier.load(path)
    classifier.serve_as(name, version)
    return _engine(classifier, settings, path)


def _engine(classifier: Classifier, settings: Settings, path: str | Path) -> Engine:
    if not classifier.trained:
        log.warning(
            "UNTRAINED MODEL: %s holds seeded random weights; predictions are meaningless", path
        )
    return Engine(classifier, settings)
