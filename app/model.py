"""The classifier: a model artifact with its manifest, placed on a device, ready to run.

The artifact is TorchScript (fp32, cast and frozen when placed), a .pt2 package (compiled for
one device and precision at export time, app/export/pt2.py) or ONNX; the backend of its kind
(the table in app/backends/) owns what differs between them, and all are called the same way.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from app import backends, imaging
from app import labels as labelling
from app.artifact import ArtifactError, read_manifest
from app.backends.base import Backend, Reported

log = logging.getLogger(__name__)


class Classifier(Reported):
    """Run batches of images (uint8 pixels or normalised floats) through the model and return
    probabilities."""

    def __init__(self, backend: Backend, manifest: dict[str, Any], path: Path) -> None:
        self.backend = backend
        self.manifest = manifest
        self.path = path
        try:
            self._labels = labelling.from_manifest(manifest)
        except labelling.LabelError as exc:
            raise ArtifactError(f"bad labels in the manifest: {exc}; re-export the model") from None
        self.device = torch.device("cpu")
        self.precision = "fp32"
        self._served_as: tuple[str, str] | None = None

    @classmethod
    def load(cls, path: str | Path) -> Classifier:
        """Load an artifact without running it (safe before fork)."""
        manifest = read_manifest(path)
        return cls(backends.load(path, manifest), manifest, Path(path))

    @property
    def module(self) -> Any:
        """The loaded artifact: a ScriptModule, an app.backends.pt2.Package, or an ONNX file."""
        return self.backend.module

    def resolve_precision(self, setting: str, device: torch.device, max_batch: int) -> str:
        """The precision WANWU_PRECISION means for this artifact on `device` (see app.backends)."""
        return self.backend.resolve_precision(setting, device, max_batch)

    def batching(self, max_batch: int, max_wait_ms: float) -> tuple[int, float]:
        """Images per pass and the longest wait: WANWU_MAX_BATCH and WANWU_MAX_WAIT_MS."""
        return max_batch, max_wait_ms

    @staticmethod
    def collate(images: list[torch.Tensor]) -> torch.Tensor:
        """The images of one pass as one channels-last batch: `imaging.pixels` views stack
        without reordering, and the forward pass takes that layout as it is."""
        return torch.stack([image.permute(1, 2, 0) for image in images]).permute(0, 3, 1, 2)

    def serve_as(self, name: str, version: str) -> None:
        """Answer to a model repository's folder names instead of the manifest's name and hash."""
        self._served_as = (name, version)

    @property
    def version(self) -> str:
        """The version clients see: the repository's number, else the short artifact hash."""
        return self._served_as[1] if self._served_as else self.manifest["artifact_sha256"][:12]

    @property
    def trained(self) -> bool:
        """Whether the weights are the pretrained ones (False: seeded random init)."""
        return bool(self.manifest["trained"])

    @property
    def input_spec(self) -> dict[str, Any]:
        """Resize, crop, mean, std and interpolation the model expects."""
        return self.manifest["input"]

    @property
    def name(self) -> str:
        """The model name clients see: the repository's folder, else the manifest's name."""
        return self._served_as[0] if self._served_as else self.manifest["name"]

    @property
    def arch(self) -> str | None:
        """The torchvision architecture, when the manifest names one."""
        return self.manifest.get("arch")

    @property
    def num_classes(self) -> int:
        """How many classes the model scores."""
        return len(self._labels["en"])

    @property
    def languages(self) -> tuple[str, ...]:
        """The languages the model has labels in ('en' always, 'zh' when exported with them)."""
        return tuple(self._labels)

    def labels(self, lang: str = "en") -> tuple[str, ...]:
        """The class names in `lang`, in class-index order (KeyError if the model has none)."""
        return self._labels[lang]

    def info(self) -> dict[str, Any]:
        """Describe the model for clients: `/v1/model` and every prediction."""
        return {"name": self.name, "version": self.version, "trained": self.trained}

    def prepare(self, device: torch.device, precision: str, fuse: bool = False) -> None:
        """Place the artifact on `device` in `precision` (a package: only load it).

        For the CPU the master calls this before fork, with one torch thread and no forward
        pass, so every worker shares the frozen weights copy-on-write. For CUDA each worker
        calls it after fork: CUDA must not be touched in the master.

        `fuse` turns on oneDNN Graph fusion for TorchScript CPU runs; each batch size then
        gets fused kernels with their own pre-packed copy of the weights (docs/BENCHMARKS.md:
        faster small batches, more private memory).
        """
        self.backend.prepare(device, precision, fuse)
        self.device, self.precision = device, precision

    def weights(self) -> list[torch.Tensor]:
        """The weight tensors this process holds (empty for a package: compiled in)."""
        return self.backend.weights()

    @property
    def unexplainable(self) -> str | None:
        """Why this model cannot be explained (/explain answers 501 with it), None if it can."""
        if self.backend.explains:
            return None
        if self.format != "torchscript":
            return (
                f"its {self.format} artifact returns logits only, not the feature map a heatmap "
                "needs; serve the model's TorchScript export (python -m app.export) to explain it"
            )
        # What the export found (app/export/explainable.py), e.g. a head that is not pooled.
        recorded = (self.manifest.get("explain") or {}).get("reason")
        return recorded or (
            "this artifact records no feature layer (exported before explanations existed, "
            "or a TorchScript file copied as it is); re-export it with `python -m app.export` "
            "to explain it"
        )

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Return probabilities (float32, on the CPU; softmax, or the manifest's `scores`) of
        a batch of uint8 pixels (normalised here) or of normalised float images."""
        return self._scores(self.backend(self._placed(batch)))

    @torch.inference_mode()
    def explain(self, batch: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Return each image's probabilities and its every-class activation maps (float32, on
        the CPU), as `__call__` takes the batch: app/explain.py turns one class's map into a
        heatmap."""
        logits, cams = self.backend.explain(self._placed(batch))
        return list(zip(self._scores(logits), cams.float().cpu(), strict=True))

    def _placed(self, batch: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            batch = batch.pin_memory()  # page-locked, so the copy below can be asynchronous
        x = batch.to(self.device, non_blocking=True)
        if x.dtype == torch.uint8:  # pixels (a quarter of the bytes to copy to a GPU)
            x = imaging.normalise(x, self.input_spec["mean"], self.input_spec["std"])
        x = x.to(self.backend.input_dtype(self.precision))
        # Channels-last lets oneDNN / cuDNN pick their fastest convolution kernels.
        return x.contiguous(memory_format=torch.channels_last)

    def _scores(self, logits: torch.Tensor) -> torch.Tensor:
        if self.manifest.get("scores") == "sigmoid":  # multi-label: each class on its own
            return torch.sigmoid(logits.float()).cpu()
        return torch.softmax(logits.float(), dim=1).cpu()

    def warm_up(self, max_batch: int) -> None:
        """Run every batch size so that no request pays a first-call cost.

        Twice each: TorchScript's profiling executor optimises a graph on its second run.
        An explainable model warms its explain method the same way.
        """
        height, width = imaging.size_hw(self.input_spec["crop"])
        runs = [self] if self.unexplainable else [self, self.explain]
        for n in range(1, max_batch + 1):
            for run in runs:
                for _ in range(2):
                    run(torch.zeros(n, 3, height, width, dtype=torch.uint8))
        log.info("warmed up batch sizes 1..%d on %s (%s)", max_batch, self.device, self.precision)
