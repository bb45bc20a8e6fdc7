"""Model backends: one module per artifact kind, chosen from the table below.

Every backend keeps one contract (app/backends/base.py): where opening, placing and the first
call run across the fork, the precision it runs in, its capabilities. `app.model.Classifier`
(images) and `app.tensor_model.TensorModel` (tensors) add what every kind shares. A new
artifact kind is its module here, its line in BACKENDS, its kind in `app.artifact`, its screen
in `app.trust` and its writer in `app.export`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app import artifact
from app.backends.base import Backend
from app.backends.libtorch import LibtorchBackend
from app.backends.onnx import OnnxBackend
from app.backends.pt2 import Pt2Backend
from app.backends.torchscript import TorchScriptBackend

BACKENDS: dict[str, type[Backend]] = {
    artifact.TORCHSCRIPT: TorchScriptBackend,
    artifact.PT2: Pt2Backend,
    artifact.ONNX: OnnxBackend,
    artifact.LIBTORCH: LibtorchBackend,
}


def load(path: str | Path, manifest: dict[str, Any]) -> Backend:
    """Open the artifact at `path` with the backend of the kind its manifest names; run
    nothing."""
    return BACKENDS[artifact.kind(manifest)].load(path, manifest)


def load_tensors(platform: str, path: str | Path, inputs: list[str], outputs: list[str]) -> Backend:
    """Open a Triton model's file with the backend of its config's `platform`; run nothing."""
    (backend,) = [b for b in BACKENDS.values() if b.tensors and b.platform == platform]
    return backend.load_tensors(path, inputs, outputs)
