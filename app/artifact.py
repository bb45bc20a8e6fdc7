"""The model artifact on disk: a TorchScript file plus a JSON manifest beside it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

# 2: labels embedded (by language), arch and preprocessing; 1 (`"labels": "imagenet-1k"`)
# still loads.
MANIFEST_VERSION = 2


class ArtifactError(RuntimeError):
    """The artifact or its manifest is missing, unreadable or does not match."""


def manifest_path(model_path: str | Path) -> Path:
    """Return where the manifest of `model_path` lives (same name, .json)."""
    return Path(model_path).with_suffix(".json")


def sha256_file(path: str | Path) -> str:
    """Return the hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(model_path: str | Path, **fields: Any) -> dict[str, Any]:
    """Write the manifest for an already-saved artifact, recording its SHA-256."""
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        **fields,
        "artifact_sha256": sha256_file(model_path),
    }
    manifest_path(model_path).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def write_artifact(out: str | Path, save: Callable[[Path], None], **fields: Any) -> dict[str, Any]:
    """Save an artifact and its manifest at `out` whole, or leave nothing new behind.

    `save(path)` writes the artifact to a staging folder beside `out`; its manifest is written
    there too, and only then are both moved into place. A failure on the way removes the
    staging folder and leaves any earlier artifact at `out` as it was.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        staged = staging / out.name
        save(staged)
        manifest = write_manifest(staged, **fields)
        os.replace(staged, out)
        os.replace(manifest_path(staged), manifest_path(out))
        return manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_manifest(model_path: str | Path) -> dict[str, Any]:
    """Read and check the manifest of `model_path`; raise ArtifactError on any mismatch."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ArtifactError(f"model artifact {model_path} not found: run `python -m app.export`")
    try:
        manifest = json.loads(manifest_path(model_path).read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read manifest {manifest_path(model_path)}: {exc}") from exc
    actual = sha256_file(model_path)
    if manifest.get("artifact_sha256") != actual:
        raise ArtifactError(
            f"{model_path} has SHA-256 {actual[:12]}…, its manifest says "
            f"{str(manifest.get('artifact_sha256'))[:12]}…: re-export the model"
        )
    return manifest
