"""The ONNX Runtime backend: an ONNX model in a session of each worker's own.

ONNX Runtime's thread pools do not survive a fork, so the master only opens the model once with
one thread, to refuse a broken file at start-up, and each worker opens its own session on first
use (the warm-up, on its batcher thread) with the worker's torch thread count. The weights are
therefore private to each worker, not shared copy-on-write. On a CUDA device the CUDA execution
provider runs the model when this onnxruntime build has it, else the CPU does (logged).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from app.artifact import ArtifactError

log = logging.getLogger(__name__)

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


class OnnxBackend:
    """An ONNX model: `run` maps named arrays to named arrays; calling it runs an image batch."""

    format = "onnx"
    runtime = "onnxruntime"
    platform = "onnxruntime_onnx"
    images, tensors = True, True
    explains = False  # the graph returns logits only

    def __init__(self, path: Path, inputs: list[str], outputs: list[str]) -> None:
        self.module = path
        self.inputs, self.outputs = inputs, outputs
        self._device = torch.device("cpu")
        self._session: ort.InferenceSession | None = None
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path, manifest: dict[str, Any] | None = None) -> OnnxBackend:
        """Open the model once, with one thread, to check it; run nothing (safe before fork).

        The model names its tensors itself: a manifest says nothing more to it."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(path), options, providers=[CPU])
        except Exception as exc:  # onnxruntime raises its own Fail, InvalidGraph, ...
            raise ArtifactError(f"{path}: ONNX Runtime cannot load it: {exc}") from None
        names = [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]
        return cls(Path(path), *names)

    @classmethod
    def load_tensors(cls, path: str | Path, inputs: list[str], outputs: list[str]) -> OnnxBackend:
        """Open the model as `load` does; refuse it unless it has every tensor named."""
        backend = cls.load(path)
        for kind, named, found in (
            ("input", inputs, backend.inputs),
            ("output", outputs, backend.outputs),
        ):
            missing = sorted(set(named) - set(found))
            if missing:
                raise ArtifactError(
                    f"{path}: {kind} {missing[0]!r} of config.pbtxt is not in the model "
                    f"(it has {', '.join(found)})"
                )
        return backend

    @property
    def runner(self) -> str:
        """The execution provider that runs the model (once the session is open)."""
        return self._session.get_providers()[0] if self._session else "onnxruntime"

    def resolve_precision(self, setting: str, device: torch.device, max_batch: int) -> str:
        """fp32: the model runs in the types it was exported with."""
        return "fp32"

    def prepare(self, device: torch.device, precision: str, fuse: bool) -> None:
        """Remember `device`; the session opens on first use, in the worker."""
        self._device = device

    def session(self) -> ort.InferenceSession:
        """This process's session, opened on first use."""
        with self._lock:
            if self._session is None:
                self._session = self._open()
            return self._session

    def _open(self) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the worker's share of CPUs
        providers: list[str | tuple[str, dict[str, int]]] = [CPU]
        if self._device.type == "cuda":
            if CUDA in ort.get_available_providers():
                providers.insert(0, (CUDA, {"device_id": self._device.index or 0}))
            else:
                log.warning(
                    "%s: this onnxruntime has no CUDA provider; the CPU runs it", self.module
                )
        return ort.InferenceSession(str(self.module), options, providers=providers)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on named inputs; return every output by name.

        ONNX Runtime's Python API takes string tensors as `str`: BYTES elements are decoded
        as UTF-8 (other bytes pass through as surrogates, and are encoded back the same way).
        """
        feeds = {name: _text(array) for name, array in feeds.items()}
        results = self.session().run(self.outputs, feeds)
        return dict(zip(self.outputs, results, strict=True))

    def weights(self) -> list[torch.Tensor]:
        """None in reach: ONNX Runtime holds them."""
        return []

    def input_dtype(self, precision: str) -> torch.dtype:
        """float32, as wanwu exports image classifiers."""
        return torch.float32

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits of an image batch: the first input in, the first output out."""
        array = np.ascontiguousarray(batch.cpu().numpy())
        return torch.from_numpy(self.run({self.inputs[0]: array})[self.outputs[0]])


def _text(array: np.ndarray) -> np.ndarray:
    if array.dtype != object:
        return array
    decoded = [v.decode("utf-8", "surrogateescape") for v in array.flat]
    return np.array(decoded, dtype=object).reshape(array.shape)
