"""The classifier: a model artifact with its manifest, placed on a device, ready to run.

The artifact is TorchScript (fp32, cast and frozen here) or a .pt2 package (compiled for one
device and precision at export time, app/pt2.py); both are called the same way.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from app import labels as labelling
from app import pt2, runtime
from app.artifact import ArtifactError, read_manifest

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class Classifier:
    """Run batches of normalised images through the model and return probabilities."""

    def __init__(
        self, module: torch.jit.ScriptModule | pt2.Package, manifest: dict[str, Any]
    ) -> None:
        self.module = module
        self.manifest = manifest
        try:
            self._labels = labelling.from_manifest(manifest)
        except labelling.LabelError as exc:
            raise ArtifactError(f"bad labels in the manifest: {exc}; re-export the model") from None
        self.device = torch.device("cpu")
        self.precision = "fp32"

    @classmethod
    def load(cls, path: str | Path) -> Classifier:
        """Load an artifact without running it (safe before fork).

        A CUDA package is only opened here: loading it initialises CUDA, so `prepare` loads
        it in the worker.
        """
        manifest = read_manifest(path)
        if pt2.is_package(manifest):
            package = pt2.Package(path, manifest)
            if package.device_type == "cpu":
                package.load()
            return cls(package, manifest)
        module = torch.jit.load(str(path), map_location="cpu").eval()
        return cls(module, manifest)

    @property
    def format(self) -> str:
        """The artifact's kind: torchscript or pt2."""
        return "pt2" if isinstance(self.module, pt2.Package) else "torchscript"

    @property
    def runner(self) -> str:
        """What runs the forward pass: torchscript, or a package's runner (app.pt2.Package)."""
        return self.module.runner if isinstance(self.module, pt2.Package) else "torchscript"

    def resolve_precision(self, setting: str, device: torch.device, max_batch: int) -> str:
        """The precision WANWU_PRECISION means for this artifact on `device` (see app.pt2)."""
        if isinstance(self.module, pt2.Package):
            return pt2.serving_precision(setting, self.module, device, max_batch)
        return runtime.resolve_precision(setting, device)

    @property
    def version(self) -> str:
        """Short artifact hash clients see as the model version."""
        return self.manifest["artifact_sha256"][:12]

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
        """The model name clients see."""
        return self.manifest["name"]

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
        """Cast to `precision`, move to `device` and freeze (conv-bn folding, constants).

        For the CPU the master calls this before fork, with one torch thread and no forward
        pass, so every worker shares the frozen weights copy-on-write. For CUDA each worker
        calls it after fork: CUDA must not be touched in the master.

        `fuse` turns on oneDNN Graph fusion for CPU runs. The flag is process-wide and only
        read when TorchScript optimises a graph on its first runs, in the worker; each batch
        size then gets fused kernels with their own pre-packed copy of the weights
        (docs/BENCHMARKS.md: faster small batches, more private memory).

        A package is already compiled: it is only loaded (CUDA, in the worker) and `precision`
        must be its own.
        """
        if isinstance(self.module, pt2.Package):
            if precision != self.module.precision:
                raise ValueError(f"{self.module.path} is {self.module.precision}, not {precision}")
            if not self.module.loaded:
                self.module.load(device.index if device.index is not None else -1)
            self.device, self.precision = device, precision
            return
        torch.jit.enable_onednn_fusion(fuse and device.type == "cpu")
        module = self.module.to(device=device, dtype=DTYPES[precision])
        self.module = torch.jit.freeze(module)
        self.device, self.precision = device, precision

    def weights(self) -> list[torch.Tensor]:
        """The tensors a frozen module holds as constants (its folded weights).

        Empty for a package: its constants live inside the compiled program, out of reach.
        """
        if isinstance(self.module, pt2.Package):
            return []
        return [
            node.output().toIValue()
            for node in self.module.graph.findAllNodes("prim::Constant")
            if node.output().type().kind() == "TensorType"
        ]

    @property
    def _input_dtype(self) -> torch.dtype:
        if isinstance(self.module, pt2.Package):
            return self.module.input_dtype  # an int8 package quantizes fp32 input itself
        return DTYPES[self.precision]

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Return softmax probabilities (float32, on the CPU) for a batch of images."""
        if self.device.type == "cuda":
            batch = batch.pin_memory()  # page-locked, so the copy below can be asynchronous
        x = batch.to(self.device, self._input_dtype, non_blocking=True)
        # Channels-last lets oneDNN / cuDNN pick their fastest convolution kernels.
        logits = self.module(x.contiguous(memory_format=torch.channels_last))
        return torch.softmax(logits.float(), dim=1).cpu()

    def warm_up(self, max_batch: int) -> None:
        """Run every batch size so that no request pays a first-call cost.

        Twice each: TorchScript's profiling executor optimises a graph on its second run.
        """
        crop = self.input_spec["crop"]
        for n in range(1, max_batch + 1):
            for _ in range(2):
                self(torch.zeros(n, 3, crop, crop))
        log.info("warmed up batch sizes 1..%d on %s (%s)", max_batch, self.device, self.precision)
