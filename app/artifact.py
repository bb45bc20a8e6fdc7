"""The model artifact on disk: a model file of one kind plus a JSON manifest beside it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app import sniff, trust

# 2: labels embedded (by language), arch and preprocessing; 1 (`"labels": "imagenet-1k"`)
# still loads.
MANIFEST_VERSION = 2

# The artifact kinds, each served by its backend (the table in app/backends/__init__.py).
# LIBTORCH is TorchScript in a Triton model folder, named by its config, not by a manifest.
TORCHSCRIPT, PT2, ONNX, LIBTORCH = "torchscript", "pt2", "onnx", "libtorch"
PT2_FORMAT = "pt2-aoti"  # a .pt2 package's manifest `format`


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


def replace_json(path: Path, data: object) -> None:
    """Replace the JSON file `path` at once: a reader (another process) sees the old file or
    the new one, never half. The new file is made afresh, readable by its owner only, and a
    link planted at its name is not followed (O_EXCL | O_NOFOLLOW); the rename replaces a
    link at `path` itself, not what it points to."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data, indent=1))
    os.replace(temporary, path)


def kind(manifest: dict[str, Any]) -> str:
    """The artifact kind a manifest names by its `format`: a package, ONNX, else TorchScript
    (traced, copied, or a manifest from before other formats, which names none)."""
    return {PT2_FORMAT: PT2, ONNX: ONNX}.get(manifest.get("format"), TORCHSCRIPT)


def write_manifest(model_path: str | Path, **fields: Any) -> dict[str, Any]:
    """Write the manifest for an already-saved artifact, recording its SHA-256 (and, for a
    .pt2 package, that this installation built it: app.trust)."""
    manifest = {"manifest_version": MANIFEST_VERSION, **fields}
    manifest["artifact_sha256"] = sha256_file(model_path)
    if kind(manifest) == PT2:  # native code: served only where it was signed
        manifest = trust.seal(manifest)
    manifest_path(model_path).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def write_artifact(
    out: str | Path,
    save: Callable[[Path], object],
    replace: bool = True,
    **fields: Any,
) -> dict[str, Any]:
    """Save an artifact and its manifest at `out` together, or leave nothing new behind.

    `save(path)` writes the artifact to a staging folder beside `out`; a dict it returns holds
    manifest fields only known once it is saved (what tracing found). The manifest is written
    there too, and only then are both renamed into place, the manifest first. Any failure or
    interruption (Ctrl-C, SIGTERM turned into SystemExit) before the second rename puts the
    earlier pair back from hard links kept in the staging folder, and the folder is removed.
    Only a kill -9 between the two renames can leave a mismatched pair, which `read_manifest`
    refuses by its hash. With `replace=False` an existing artifact or manifest is an error
    (FileExistsError) and nothing is touched.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pair = (manifest_path(out), out)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        staged = staging / out.name
        found = save(staged)
        manifest = write_manifest(staged, **fields, **(found if isinstance(found, dict) else {}))
        existing = [p for p in pair if p.exists()]
        if existing and not replace:
            raise FileExistsError(f"{existing[0]} exists")
        for p in existing:
            os.link(p, staging / f"previous{p.suffix}")
        moved: list[Path] = []
        try:
            for src, dst in zip((manifest_path(staged), staged), pair, strict=True):
                os.replace(src, dst)
                moved.append(dst)
        except BaseException:
            for dst in moved:
                backup = staging / f"previous{dst.suffix}"
                if backup.exists():
                    os.replace(backup, dst)
                else:
                    dst.unlink()
            raise
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
        if not manifest_path(model_path).exists():  # not an artifact: a .mar, a .pth, ...
            raise ArtifactError(
                f"{model_path} has no manifest beside it, so it is not a wanwu artifact; "
                f"{sniff.hint(model_path)}, then serve that"
            ) from None
        raise ArtifactError(f"cannot read manifest {manifest_path(model_path)}: {exc}") from exc
    actual = sha256_file(model_path)
    if manifest.get("artifact_sha256") != actual:
        raise ArtifactError(
            f"{model_path} has SHA-256 {actual[:12]}…, its manifest says "
            f"{str(manifest.get('artifact_sha256'))[:12]}…: re-export the model"
        )
    return manifest
