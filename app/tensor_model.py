"""A tensor model: a Triton model folder served as it is, tensors in and tensors out.

It stands where `app.model.Classifier` stands for images: the engine batches its rows and the
registry routes to it. A row is one request row (one tuple of arrays, an array per input, in
the config's order); a pass stacks rows into each input, runs the backend, and hands each row
its outputs back. With `max_batch_size` 0 a request is one row and the model sees it as sent.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from app import backends
from app.backends.base import Backend, Reported
from app.repository.triton import TensorSpec, TritonModel

log = logging.getLogger(__name__)

Row = tuple[np.ndarray, ...]


class TensorModel(Reported):
    """Run stacked rows through an ONNX Runtime or TorchScript model, by tensor name."""

    input_spec = None  # no image preprocessing: /predict and the page refuse this model
    arch = None
    trained = True  # the user's own weights; wanwu never initialised them

    def __init__(self, spec: TritonModel, backend: Backend) -> None:
        self.spec = spec
        self.backend = backend
        self.path = spec.artifact
        self.device = torch.device("cpu")
        self.precision = spec.inputs[0].datatype.lower()  # the config's, not WANWU_PRECISION's
        self.manifest: dict[str, Any] = {"name": spec.name, "config": str(spec.config_path)}

    @classmethod
    def load(cls, spec: TritonModel) -> TensorModel:
        """Open the model file the config names, without running it (safe before fork)."""
        inputs, outputs = [t.name for t in spec.inputs], [t.name for t in spec.outputs]
        return cls(spec, backends.load_tensors(spec.platform, spec.artifact, inputs, outputs))

    # -- what the engine, the registry and the adapters read ----------------------------------

    @property
    def name(self) -> str:
        """The model folder's name."""
        return self.spec.name

    @property
    def version(self) -> str:
        """The version folder's number."""
        return self.spec.version

    @property
    def labels_output(self) -> TensorSpec:
        """The output the classification extension and `/v1/model` describe: the first."""
        return self.spec.outputs[0]

    @property
    def num_classes(self) -> int:
        """The first output's last dimension (its classes, for a classifier)."""
        dims = self.labels_output.dims
        return int(dims[-1]) if dims else 1

    languages = ("en",)  # label_filename's, or the class indices

    def labels(self, lang: str = "en") -> tuple[str, ...]:
        """The first output's label_filename lines, else its class indices as text."""
        return self.labels_output.labels or tuple(str(i) for i in range(self.num_classes))

    def info(self) -> dict[str, Any]:
        """Describe the model for clients, as a Classifier does."""
        return {"name": self.name, "version": self.version, "trained": self.trained}

    def batching(self, max_batch: int, max_wait_ms: float) -> tuple[int, float]:
        """Rows per pass and the longest wait, from the config (the settings' are for images)."""
        return self.spec.batch_rows, self.spec.max_wait_ms

    def resolve_precision(self, setting: str, device: torch.device, max_batch: int) -> str:
        """The config's types, whatever WANWU_PRECISION says."""
        return self.precision

    def prepare(self, device: torch.device, precision: str, fuse: bool = False) -> None:
        """Place the model on `device` (ONNX Runtime: its session opens in the worker)."""
        self.backend.prepare(device, precision, fuse)
        self.device = device

    def weights(self) -> list[torch.Tensor]:
        """None in reach (ONNX Runtime holds them; a libtorch module is not frozen)."""
        return []

    # -- running ------------------------------------------------------------------------------

    def collate(self, rows: list[Row]) -> Row:
        """Stack the rows of one pass into one array per input."""
        return tuple(np.stack(column) for column in zip(*rows, strict=True))

    def __call__(self, batch: Row) -> list[Row]:
        """Run stacked rows; return each row's outputs, in the config's output order."""
        batched = self.spec.batched
        feeds = {}
        for spec, array in zip(self.spec.inputs, batch, strict=True):
            array = array if batched else array[0]  # one request, as sent
            if spec.model_dims != spec.dims:  # `reshape`: the shape the model sees
                array = array.reshape(*array.shape[: int(batched)], *spec.model_dims)
            feeds[spec.name] = array
        results = self.backend.run(feeds)
        columns = []
        for spec in self.spec.outputs:
            out = results[spec.name]
            if spec.model_dims != spec.dims:
                out = out.reshape(*out.shape[: int(batched)], *spec.dims)
            columns.append(out if batched else out[None])
        return list(zip(*columns, strict=True))

    def warm_up(self, max_batch: int) -> None:
        """Run every batch size of zeros (a variable dimension as 1) so no request pays first."""
        for n in range(1, self.spec.batch_rows + 1):
            row = tuple(
                np.full([max(d, 1) for d in t.dims], b"" if t.datatype == "BYTES" else 0, t.dtype)
                for t in self.spec.inputs
            )
            self(self.collate([row] * n))
        log.info(
            "warmed up %s batch sizes 1..%d on %s", self.name, self.spec.batch_rows, self.device
        )
