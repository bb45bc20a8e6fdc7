"""The .pt2 backend: an AOTInductor package (app.pt2.Package), compiled at export time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from app import pt2, trust


class Pt2Backend:
    """A package compiled for one device and precision; placing it only loads it."""

    format = "pt2"
    runtime = "aotinductor"
    platform = "pytorch_pt2"
    explains = False  # the compiled program returns logits only

    def __init__(self, module: pt2.Package) -> None:
        self.module = module

    @classmethod
    def load(cls, path: str | Path, manifest: dict[str, Any]) -> Pt2Backend:
        """Open the package; load a CPU one now (runs nothing, safe before fork).

        Loading a CUDA package initialises CUDA, so `prepare` loads it in the worker. A package
        is native code: only one this installation built is opened (app.trust).
        """
        trust.check_package(path, manifest)
        package = pt2.Package(path, manifest)
        if package.device_type == "cpu":
            package.load()
        return cls(package)

    @property
    def runner(self) -> str:
        """ctypes or torch, once the first call in this process chose (app.pt2.Package)."""
        return self.module.runner

    def resolve_precision(self, setting: str, device: torch.device, max_batch: int) -> str:
        """Always the package's own precision; a conflicting setting stops start-up."""
        return pt2.serving_precision(setting, self.module, device, max_batch)

    def prepare(self, device: torch.device, precision: str, fuse: bool) -> None:
        """Load the package for `device` if not yet loaded; `precision` must be its own."""
        if precision != self.module.precision:
            raise ValueError(f"{self.module.path} is {self.module.precision}, not {precision}")
        if not self.module.loaded:
            self.module.load(device.index if device.index is not None else -1)

    def weights(self) -> list[torch.Tensor]:
        """None in reach: the constants live inside the compiled program."""
        return []

    def input_dtype(self, precision: str) -> torch.dtype:
        """The package's input dtype (an int8 package quantizes fp32 input itself)."""
        return self.module.input_dtype

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.module(batch)
