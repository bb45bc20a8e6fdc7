"""Model backends: one per artifact format, behind the small interface `Classifier` calls.

A backend knows its format and what metadata calls it (TorchServe's `/models` runtime, OIP's
model platform), which precision WANWU_PRECISION means for it, how to place it on a device
(`prepare`), which tensors hold its weights, the dtype its input must have, and how to turn a
batch into logits. `Classifier` adds what every format shares: labels, manifest, softmax.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch

from app.backends.onnx import OnnxBackend
from app.backends.pt2 import Pt2Backend
from app.backends.torchscript import TorchScriptBackend
from app.pt2 import is_package


class Backend(Protocol):
    """What `app.model.Classifier` needs from a loaded artifact."""

    format: str  # the artifact kind /v1/model and the metrics report
    runtime: str  # TorchServe's `runtime` in GET /models/{model}
    platform: str  # OIP's `platform` in model metadata
    runner: str  # what runs the forward pass, in /v1/model
    explains: bool  # whether `explain` exists: an artifact with an explain method

    def resolve_precision(self, setting: str, device: torch.device, max_batch: int) -> str:
        """The precision WANWU_PRECISION means for this artifact on `device`."""
        ...

    def prepare(self, device: torch.device, precision: str, fuse: bool) -> None:
        """Place the artifact on `device` in `precision` (see Classifier.prepare)."""
        ...

    def weights(self) -> list[torch.Tensor]:
        """The weight tensors this process holds (empty where they are out of reach)."""
        ...

    def input_dtype(self, precision: str) -> torch.dtype:
        """The dtype a batch must have when it enters the artifact."""
        ...

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits for a channels-last batch already on the device, in the input dtype."""
        ...

    def explain(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and every class's activation map, as `__call__` takes the batch."""
        ...


class Reported:
    """What a served model reports of its backend: Classifier's and TensorModel's, alike."""

    backend: Any

    @property
    def format(self) -> str:
        """The artifact's kind: torchscript, pt2 or onnx."""
        return self.backend.format

    @property
    def runtime(self) -> str:
        """The runtime TorchServe's `/models/{model}` reports."""
        return self.backend.runtime

    @property
    def platform(self) -> str:
        """The platform OIP model metadata reports."""
        return self.backend.platform

    @property
    def runner(self) -> str:
        """What runs the forward pass (/v1/model): torchscript, a package's runner, or an
        ONNX Runtime execution provider."""
        return self.backend.runner


def load(path: str | Path, manifest: dict[str, Any]) -> Backend:
    """Open the artifact at `path` with the backend its manifest names; run nothing."""
    if is_package(manifest):
        return Pt2Backend.load(path, manifest)
    if manifest.get("format") == "onnx":
        return OnnxBackend.load(path)
    return TorchScriptBackend.load(path)
