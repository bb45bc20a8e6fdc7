"""The served models: a model repository read at start, and the registry requests ask by name.

Policy:
- `WANWU_MODEL_REPOSITORY=DIR`: each folder of DIR is a model, named for the folder; each of its
  numbered subfolders is a version holding one artifact (`.pt` or `.pt2`, manifest beside it),
  as `python -m app.export` writes it. The highest version serves; the model answers to its
  name and that number. Files and hidden folders in DIR are ignored; a model folder without a
  version, or a version without exactly one artifact, stops start-up with its path.
- Without it, `WANWU_MODEL` is a one-model repository: the model answers to its manifest's name
  and version (the artifact hash, and an imported TorchServe archive's own version).
- The first model by name is the default: what `/predict` without `?model=` classifies.
- Every model is loaded in the Gunicorn master (shared copy-on-write); each worker gets one
  engine, with its own batcher, per model. An unknown name or version is a 404 naming the
  served ones.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from app import errors
from app.artifact import ArtifactError, manifest_path
from app.engine import Engine
from app.model import Classifier
from app.settings import Settings

log = logging.getLogger(__name__)

ARTIFACT_SUFFIXES = (".pt", ".pt2")
# A model name is a URL path segment in every protocol.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def scan(root: str | Path) -> dict[str, tuple[str, Path]]:
    """Map each model of the repository at `root` to (its highest version, that artifact)."""
    root = Path(root)
    if not root.is_dir():
        raise ArtifactError(f"WANWU_MODEL_REPOSITORY={root} is not a folder")
    found = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not _NAME.fullmatch(folder.name):
            raise ArtifactError(
                f"{folder}: a model folder's name must be letters, digits, '.', '_' or '-'"
            )
        versions = [p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()]
        if not versions:
            raise ArtifactError(
                f"{folder} has no version folder: put what `python -m app.export` wrote "
                f"(the artifact and its manifest) in {folder}/1/"
            )
        newest = max(versions, key=lambda p: int(p.name))
        found[folder.name] = (str(int(newest.name)), artifact(newest))
    if not found:
        raise ArtifactError(f"WANWU_MODEL_REPOSITORY={root} holds no model folder")
    return found


def artifact(version_dir: Path) -> Path:
    """The one artifact (with its manifest beside it) in a version folder."""
    candidates = [
        p
        for p in sorted(version_dir.iterdir())
        if p.suffix in ARTIFACT_SUFFIXES and manifest_path(p).is_file()
    ]
    if len(candidates) != 1:
        raise ArtifactError(
            f"{version_dir} must hold exactly one .pt or .pt2 artifact with its .json manifest "
            f"beside it; found {len(candidates)}"
        )
    return candidates[0]


class Registry:
    """The engines of the served models in one process, by name; the first is the default."""

    def __init__(self, engines: list[Engine]) -> None:
        self.engines = {engine.classifier.name: engine for engine in engines}
        self.default = engines[0]

    @classmethod
    def load(cls, settings: Settings) -> Registry:
        """Load every model the settings name, without running any (safe before fork)."""
        if not settings.model_repository:
            return cls([_engine(Classifier.load(settings.model), settings, settings.model)])
        engines = []
        for name, (version, path) in scan(settings.model_repository).items():
            classifier = Classifier.load(path)
            classifier.serve_as(name, version)
            engines.append(_engine(classifier, settings, path))
        return cls(engines)

    def find(self, name: str | None = None, version: str | None = None) -> Engine:
        """The engine serving `name` (the default when None) at `version` (any when None)."""
        engine = self.default if name is None else self.engines.get(name)
        if engine is None:
            raise errors.ModelNotFound(
                f"Model not found: {name}. Served models: {', '.join(self.engines)}."
            )
        classifier = engine.classifier
        # An imported TorchServe archive keeps answering to its own version ("1.0") too.
        archive_version = classifier.manifest.get("weights", {}).get("archive_version")
        if version is not None and version not in {classifier.version, archive_version}:
            raise errors.ModelNotFound(
                f"Model version: {version} does not exist for model: {classifier.name}. "
                f"The served version is {classifier.version!r}."
            )
        return engine

    @property
    def ready(self) -> bool:
        """True once every model is warm in this process."""
        return all(engine.ready for engine in self.engines.values())

    def start(self, slot: int = 0) -> None:
        """Start every engine (in the worker, after fork)."""
        for engine in self.engines.values():
            engine.start(slot)

    def wait_ready(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for each model to warm up; True when all are."""
        return all(engine.batcher.wait_ready(timeout) for engine in self.engines.values())

    def stop(self, timeout: float | None = None) -> None:
        """Finish every admitted image of every model, then stop the batchers."""
        for engine in self.engines.values():
            engine.stop(timeout)


def _engine(classifier: Classifier, settings: Settings, path: str | Path) -> Engine:
    if not classifier.trained:
        log.warning(
            "UNTRAINED MODEL: %s holds seeded random weights; predictions are meaningless", path
        )
    return Engine(classifier, settings)
