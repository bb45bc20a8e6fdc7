"""The TorchScript backend: fp32 on disk, cast, moved and frozen when it is placed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from app import runtime, trust

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class TorchScriptBackend:
    """A scripted module; `prepare` casts and freezes it (conv-bn folding, constants)."""

    format = "torchscript"
    runtime = "torchscript"
    platform = "pytorch_torchscript"
    runner = "torchscript"
    images, tensors = True, False

    def __init__(self, module: torch.jit.ScriptModule) -> None:
        self.module = module
        # An export with an explain method (app/export/explainable.py) keeps it when frozen.
        self.explains = hasattr(module, "explain")

    @classmethod
    def load(cls, path: str | Path, manifest: dict[str, Any] | None = None) -> TorchScriptBackend:
        """Load the module onto the CPU without running it (safe before fork), once
        app.trust's screen passed; the module says all the manifest would."""
        return cls(trust.load_torchscript(path))

    def resolve_precision(self, setting: str, device: torch.device, max_batch: int) -> str:
        """auto, fp32, bf16 or fp16 as app.runtime resolves them for `device`."""
        return runtime.resolve_precision(setting, device)

    def prepare(self, device: torch.device, precision: str, fuse: bool) -> None:
        """Cast, move and freeze; `fuse` turns on oneDNN Graph fusion for CPU runs.

        The fusion flag is process-wide and only read when TorchScript optimises a graph on
        its first runs, in the worker.
        """
        torch.jit.enable_onednn_fusion(fuse and device.type == "cpu")
        with runtime.torchscript_api():
            self.module = torch.jit.freeze(
                self.module.to(device=device, dtype=DTYPES[precision]),
                preserved_attrs=["explain"] if self.explains else None,
            )

    def weights(self) -> list[torch.Tensor]:
        """The tensors a frozen module holds as constants (its folded weights)."""
        return [
            node.output().toIValue()
            for node in self.module.graph.findAllNodes("prim::Constant")
            if node.output().type().kind() == "TensorType"
        ]

    def input_dtype(self, precision: str) -> torch.dtype:
        """The module's own dtype: it was cast to `precision`."""
        return DTYPES[precision]

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.module(batch)

    def explain(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and every class's activation map (app/export/explainable.py)."""
        return self.module.explain(batch)
