"""The contract every backend declares: one artifact kind, opened, placed and run.

A backend serves one artifact kind (`app.artifact.kind`: TorchScript, .pt2, ONNX, or
TorchScript in a Triton folder); the table in app/backends/__init__.py names the backend of
each. Where each step runs is the same rule for every backend:
- opening (`load`, `load_tensors`) runs in the Gunicorn master before the fork, or in a worker
  for a model loaded through the management API: it reads and checks the file, and runs no
  forward pass, starts no thread and touches no CUDA;
- `prepare` runs where the model was opened for the CPU (in the master, the workers then
  share what it placed copy-on-write), and in each worker after the fork for CUDA;
- the first call runs in a worker (its warm-up): what cannot cross a fork opens then (ONNX
  Runtime's session, the .pt2 GIL-free runner's self-check).

What a backend declares besides: how /v1/model, TorchServe and OIP name it (`format`,
`runtime`, `platform`, `runner`), the precision it runs in (`resolve_precision`,
`input_dtype`), and its capabilities: `images` (a batch of images in, logits out),
`tensors` (named arrays in and out, for a Triton model), `explains` (logits and every class's
activation map from its features, for heatmaps).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch


class Backend(Protocol):
    """What `app.model.Classifier` (images) and `app.tensor_model.TensorModel` (tensors) call."""

    format: str  # the artifact kind /v1/model and the metrics report
    runtime: str  # TorchServe's `runtime` in GET /models/{model}
    platform: str  # OIP's `platform` in model metadata (a Triton config's, for tensors)
    runner: str  # what runs the forward pass, in /v1/model
    images: bool  # `load`, `resolve_precision`, `weights`, `input_dtype`, `__call__`
    tensors: bool  # `load_tensors`, `run`
    explains: bool  # `explain`: an artifact with an explain method

    @classmethod
    def load(cls, path: str | Path, manifest: dict[str, Any] | None = None) -> Backend:
        """Open the artifact at `path` (with its manifest, where it has one); run nothing."""
        ...

    @classmethod
    def load_tensors(cls, path: str | Path, inputs: list[str], outputs: list[str]) -> Backend:
        """Open a Triton model's file, whose config names these tensors; run nothing."""
        ...

    def prepare(self, device: torch.device, precision: str, fuse: bool) -> None:
        """Place the artifact on `device` in `precision` (see Classifier.prepare)."""
        ...

    def resolve_precision(self, setting: str, device: torch.device, max_batch: int) -> str:
        """The precision WANWU_PRECISION means for this artifact on `device`."""
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

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Named outputs of named inputs, as a Triton model's config names them."""
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
