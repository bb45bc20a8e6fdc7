"""int8 QDQ ONNX models for the benchmarks: onnxruntime.quantization, calibrated on photos.

Static quantization as ONNX Runtime documents it for CNNs on x86: shape inference and graph
optimisation first (`quant_pre_process`), then QDQ nodes with per-channel int8 weights and
uint8 activations, their ranges from the given photos preprocessed as the service does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from app import imaging


class _Photos(CalibrationDataReader):
    def __init__(self, name: str, batches: list[np.ndarray]) -> None:
        self._feeds = iter({name: batch} for batch in batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def quantize(model: Path, out: Path, photos: list[bytes], spec: dict[str, object]) -> Path:
    """Write an int8 QDQ copy of the fp32 ONNX `model` (input `input`) to `out`."""
    prepared = out.with_suffix(".prepared.onnx")
    quant_pre_process(str(model), str(prepared))
    batches = [imaging.load(data, spec, 10**9)[None].numpy() for data in photos]
    quantize_static(
        str(prepared),
        str(out),
        _Photos("input", batches),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    prepared.unlink()
    return out
