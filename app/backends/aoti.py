"""Run a CPU AOTInductor package without holding Python's GIL: its compiled .so through ctypes.

torch's loader (`torch._inductor.aoti_load_package`) holds the GIL for a whole forward pass:
its binding (torch/csrc/inductor/aoti_package/pybind.cpp) releases nothing. A worker's request
threads decode images in Python, so with that loader they wait while a batch runs. ctypes
releases the GIL around every foreign call, so calling the package's C interface
(torch/csrc/inductor/aoti_runtime/interface.h) through it lets them decode meanwhile.

Why this route (docs/BENCHMARKS.md, "int8 at its own speed"): `torch.compile` with
`cpp_wrapper` also runs without the GIL, but it compiles at start-up, needs the eager model
and a compiler where the service runs, and cannot serve a .pt2 package at all; an inference
thread of our own still has to call some runner, and torch's holds the GIL.

Policy:
- Written against one torch release (TORCH_VERSION) and its private tensor-handle helpers
  (`torch._C._aoti`): another torch, a missing helper or C symbol, or a package outside what
  this runner handles raises `Unsupported`; app.backends.pt2 then serves with torch's loader.
- Handled: a CPU package holding one model as one .so with its constants inside, no proxy
  executor (a `.json` beside the .so other than `*_metadata.json` means custom ops run
  through one, which only torch's loader provides).
- The compiled code checks nothing about its input, and a wrong shape reads out of bounds, so
  every call is checked here: CPU, dtype, (batch, 3, crop, crop), batch 1..max, channels-last.
- The .so is extracted to a temporary file, opened, and the file removed at once: the mapping
  keeps it alive and nothing is left on disk. Opening it creates the model's container and
  its constants and runs nothing, so it is safe before fork.
"""

from __future__ import annotations

import ctypes
import tempfile
import weakref
import zipfile
from pathlib import Path

import torch

TORCH_VERSION = "2.14.1"
MODEL_DIR = "data/aotinductor/model/"
SYMBOLS = (
    "AOTInductorModelContainerCreateWithDevice",
    "AOTInductorModelContainerDelete",
    "AOTInductorModelContainerGetNumInputs",
    "AOTInductorModelContainerGetNumOutputs",
    "AOTInductorModelContainerRun",
    "AOTInductorGetLastError",
)
_HELPERS = ("unsafe_alloc_void_ptrs_from_tensors", "alloc_tensors_by_stealing_from_void_ptrs")
_HANDLE = ctypes.c_void_p
_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype, _capsule_pointer.argtypes = _HANDLE, [ctypes.py_object, ctypes.c_char_p]
_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.restype, _capsule_new.argtypes = ctypes.py_object, [_HANDLE, ctypes.c_char_p, _HANDLE]


class Unsupported(RuntimeError):
    """This runner cannot run that package here; the message says why."""


def _shared_object(path: Path) -> bytes:
    """The package's one compiled .so, refusing layouts this runner does not handle."""
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if MODEL_DIR in n and not n.endswith("/")]
        libraries = [n for n in names if n.endswith(".so")]
        executor = [n for n in names if n.endswith(".json") and not n.endswith("_metadata.json")]
        others = [n for n in names if not n.endswith((".so", ".json", ".cpp"))]
        if executor:
            raise Unsupported(f"runs custom ops through a proxy executor ({executor[0]})")
        if len(libraries) != 1 or others:
            raise Unsupported(f"not one model with its constants in one .so: {names}")
        return archive.read(libraries[0])


def _open(path: Path) -> ctypes.CDLL:
    with tempfile.NamedTemporaryFile(suffix=".so", prefix="wanwu-aoti-") as file:
        file.write(_shared_object(path))
        file.flush()
        library = ctypes.CDLL(file.name)  # the file is unlinked on leaving the block
    missing = [name for name in SYMBOLS if not hasattr(library, name)]
    if missing:
        raise Unsupported(f"its .so lacks {', '.join(missing)} (compiled by another torch?)")
    for name in SYMBOLS:
        getattr(library, name).restype = ctypes.c_int32  # AOTIRuntimeError: 0 is success
    return library


class Runner:
    """One model container of a CPU package, called like torch's loader: `runner(x)` -> logits."""

    def __init__(self, path: str | Path, crop: int, dtype: torch.dtype, max_batch: int) -> None:
        version = torch.__version__.split("+")[0]
        if version != TORCH_VERSION:
            raise Unsupported(f"written for torch {TORCH_VERSION}, this is {version}")
        if not all(hasattr(torch._C._aoti, helper) for helper in _HELPERS):
            raise Unsupported(f"torch._C._aoti lacks one of {_HELPERS}")
        self.path = Path(path)
        self.crop, self.dtype, self.max_batch = crop, dtype, max_batch
        self._lib = _open(self.path)
        handle = _HANDLE()
        self._check(
            self._lib.AOTInductorModelContainerCreateWithDevice(
                ctypes.byref(handle), ctypes.c_size_t(1), b"cpu", None
            )
        )
        self._handle = handle
        # Deleted when collected, never at exit: a model thread may still be in a pass then.
        finalizer = weakref.finalize(self, self._lib.AOTInductorModelContainerDelete, handle)
        finalizer.atexit = False
        counts = []
        for name in ("GetNumInputs", "GetNumOutputs"):
            count = ctypes.c_size_t()
            self._check(
                getattr(self._lib, f"AOTInductorModelContainer{name}")(handle, ctypes.byref(count))
            )
            counts.append(count.value)
        if counts != [1, 1]:
            raise Unsupported(
                f"takes {counts[0]} inputs and gives {counts[1]} outputs, not 1 and 1"
            )

    def _check(self, code: int) -> None:
        if code != 0:
            message = ctypes.c_char_p()
            self._lib.AOTInductorGetLastError(ctypes.byref(message))
            text = (message.value or b"no message").decode(errors="replace")
            raise RuntimeError(f"{self.path.name}: AOTInductor call failed ({code}): {text}")

    def validate(self, x: torch.Tensor) -> None:
        """Raise ValueError unless `x` is a batch the compiled code was built for."""
        expected = (3, self.crop, self.crop)
        if (
            x.device.type != "cpu"
            or x.dtype != self.dtype
            or x.dim() != 4
            or tuple(x.shape[1:]) != expected
            or not 1 <= x.shape[0] <= self.max_batch
            or not x.is_contiguous(memory_format=torch.channels_last)
        ):
            raise ValueError(
                f"{self.path.name} takes channels-last {self.dtype} CPU batches of shape "
                f"(1..{self.max_batch}, {', '.join(map(str, expected))}), got "
                f"{x.dtype} {tuple(x.shape)} on {x.device} with strides {x.stride()}"
            )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.validate(x)
        # The run steals the input handle (a new reference to x's storage), not x itself.
        (given,) = torch._C._aoti.unsafe_alloc_void_ptrs_from_tensors([x])
        inputs = (_HANDLE * 1)(_capsule_pointer(given, None))
        outputs = (_HANDLE * 1)()
        # ctypes drops the GIL for this call: other threads run Python meanwhile.
        self._check(
            self._lib.AOTInductorModelContainerRun(
                self._handle, inputs, ctypes.c_size_t(1), outputs, ctypes.c_size_t(1), None, None
            )
        )
        (logits,) = torch._C._aoti.alloc_tensors_by_stealing_from_void_ptrs(
            [_capsule_new(outputs[0], None, None)]
        )
        return logits
