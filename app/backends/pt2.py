""".pt2 packages served: an AOTInductor package, compiled at export time (app/export/pt2.py).

Policy:
- A package holds one precision (fp32, bf16 or int8) and records it twice: in its own
  metadata and in the manifest beside it. Serving needs nothing but WANWU_MODEL;
  `serving_precision` says how WANWU_PRECISION is read.
- A CPU package is loaded in the Gunicorn master without a forward pass (loading starts no
  thread); a CUDA package is loaded by each worker after fork, as CUDA must not be touched in
  the master. A CPU package runs through app/backends/aoti.py (without the GIL) once a
  worker's first call has checked it against torch's loader (`Package`).
- A package quantized with 8-bit activations on a CPU with VNNI, served on one without,
  logs a warning (`reduced_range`).
- A package is native code: only one this installation built is opened (app.trust).
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Any

import torch

from app import trust
from app.backends import aoti
from app.settings import SettingsError

log = logging.getLogger(__name__)

PRECISION_KEY = "wanwu.precision"  # in the package's own metadata
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.float32}
_GIL_HELD = "which holds the GIL during a pass (request threads wait for it)"


def reduced_range() -> bool:
    """Whether int8 activations keep to 7 bits here: a CPU without VNNI multiplies u8 by s8
    in 16-bit sums that can saturate with 8-bit activations (torchao's x86 quantizer says so),
    and its answers can then stray far from fp32's (docs/BENCHMARKS.md, fidelity of int8)."""
    return not torch.cpu._is_vnni_supported()  # noqa: SLF001  (torch has no public check)


class Package:
    """A .pt2 package: loaded once, then called with an input batch, returning logits.

    Two runners: torch's loader, and for a CPU package the GIL-free runner of aoti.py, which
    releases the GIL during a pass. Both are opened by `load` (in the master, no pass run). The
    first call in a process (a worker's warm-up, after fork) runs both on a fixed input: the
    GIL-free runner serves from then on if its output equals torch's, else torch's loader does,
    with a warning, as it does when the runner cannot open the package at all. `runner` names
    the one serving: "ctypes" or "torch", and "unchecked" until that first call decides.
    """

    def __init__(self, path: str | Path, manifest: dict[str, Any]) -> None:
        self.path = Path(path)
        self.precision: str = manifest["precision"]
        self.device_type: str = manifest["device"]
        self.max_batch: int = manifest["max_batch"]
        self.crop: int = manifest["input"]["crop"]
        self.input_dtype = DTYPES[self.precision]
        if manifest.get("int8_reduced_range") is False and reduced_range():
            log.warning(
                "%s was quantized on a CPU with VNNI, with 8-bit activations; this CPU has no "
                "VNNI, so its int8 answers may stray from fp32's: export it again here",
                self.path.name,
            )
        self.runner = "torch"
        self._loader: Any = None
        self._serving: Any = None
        self._candidate: aoti.Runner | None = None

    @property
    def loaded(self) -> bool:
        return self._loader is not None

    def load(self, device_index: int = -1) -> None:
        """Load the compiled program and its constants; runs nothing (safe before fork)."""
        loader = torch._inductor.aoti_load_package(str(self.path), device_index=device_index)
        recorded = loader.get_metadata().get(PRECISION_KEY)
        if recorded != self.precision:
            raise SettingsError(
                f"{self.path} was compiled as {recorded}, its manifest says {self.precision}: "
                "re-export the model"
            )
        self._loader = self._serving = loader
        if self.device_type != "cpu":
            return
        try:
            self._candidate = aoti.Runner(self.path, self.crop, self.input_dtype, self.max_batch)
            self.runner = "unchecked"
        except (RuntimeError, OSError, zipfile.BadZipFile) as exc:  # aoti.Unsupported, or
            # what setting it up hit (a noexec /tmp, a failed create): torch's loader serves
            log.warning("%s: %s; served by torch's loader, %s", self.path.name, exc, _GIL_HELD)

    def _self_check(self, candidate: aoti.Runner) -> None:
        """Serve with `candidate` if it answers a fixed input exactly as torch's loader does."""
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(min(2, self.max_batch), 3, self.crop, self.crop, generator=generator)
        x = x.to(self.input_dtype).contiguous(memory_format=torch.channels_last)
        try:
            agree = torch.equal(candidate(x), self._loader(x))
            reason = "its output differs from torch's loader's on a fixed input"
        except (RuntimeError, ValueError) as exc:
            agree, reason = False, str(exc)
        if agree:
            self._serving, self.runner = candidate, "ctypes"
        else:
            self.runner = "torch"
            log.warning(
                "%s: the GIL-free runner failed its self-check (%s); served by torch's loader, %s",
                self.path.name,
                reason,
                _GIL_HELD,
            )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._candidate is not None:  # the first call in this process
            candidate, self._candidate = self._candidate, None
            self._self_check(candidate)
        return self._serving(x)


def serving_precision(setting: str, package: Package, device: torch.device, max_batch: int) -> str:
    """The precision a package is served in: always its own; refuse a conflicting setting.

    `auto` (the default) and the package's own precision agree. `fp32`, the default before
    `auto`, is still in many configurations, so it is logged and the package's precision
    served; `bf16` or `fp16` against a package of another precision stop start-up. A package
    runs only on the device type it was compiled for, and batches no larger than it was
    compiled for.
    """
    name = package.path.name
    if max_batch > package.max_batch:
        raise SettingsError(
            f"WANWU_MAX_BATCH={max_batch} but {name} takes batches of at most "
            f"{package.max_batch}: lower WANWU_MAX_BATCH or re-export with a larger max batch"
        )
    if device.type != package.device_type:
        raise SettingsError(
            f"{name} is compiled for {package.device_type} but WANWU_DEVICE resolves to "
            f"{device}: set WANWU_DEVICE={package.device_type} or export on the serving device"
        )
    if setting in ("auto", package.precision):
        return package.precision
    if setting == "fp32":
        log.info("%s is an %s package: serving %s", name, package.precision, package.precision)
        return package.precision
    raise SettingsError(
        f"WANWU_PRECISION={setting} conflicts with {name}, an {package.precision} package: "
        f"unset WANWU_PRECISION, or export a {setting} package "
        f"(--format pt2 --precision {setting})"
    )


class Pt2Backend:
    """A package compiled for one device and precision; placing it only loads it."""

    format = "pt2"
    runtime = "aotinductor"
    platform = "pytorch_pt2"
    images, tensors = True, False
    explains = False  # the compiled program returns logits only

    def __init__(self, module: Package) -> None:
        self.module = module

    @classmethod
    def load(cls, path: str | Path, manifest: dict[str, Any]) -> Pt2Backend:
        """Open the package; load a CPU one now (runs nothing, safe before fork).

        Loading a CUDA package initialises CUDA, so `prepare` loads it in the worker. A package
        is native code: only one this installation built is opened (app.trust).
        """
        trust.check_package(path, manifest)
        package = Package(path, manifest)
        if package.device_type == "cpu":
            package.load()
        return cls(package)

    @property
    def runner(self) -> str:
        """ctypes or torch, once the first call in this process chose (`Package`)."""
        return self.module.runner

    def resolve_precision(self, setting: str, device: torch.device, max_batch: int) -> str:
        """Always the package's own precision; a conflicting setting stops start-up."""
        return serving_precision(setting, self.module, device, max_batch)

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
