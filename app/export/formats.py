"""What is written: the preprocessing, the labels, the artifact (traced, copied or compiled)
and the manifest fields that describe it.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision

from app import imaging, runtime
from app import labels as labelling
from app.backends.onnx import OnnxBackend
from app.export import explainable
from app.export.files import summary
from app.export.request import ExportError
from app.labels import LabelError, read_labels

log = logging.getLogger("wanwu.export")

SCORES = ("softmax", "sigmoid")
ONNX_OPSET = 17  # read by every onnxruntime since 1.15


def input_spec(
    given: dict[str, Any], defaults: dict[str, Any] | None, source: str
) -> dict[str, Any]:
    """The preprocessing: each option given on the command line, else the source's default.

    Without defaults (a TorchScript file, a factory) resize, crop, mean and std must be given.
    """
    if defaults is None:
        missing = [f"--{k}" for k in ("resize", "crop", "mean", "std") if given[k] is None]
        if missing:
            raise ExportError(
                f"{source} needs the preprocessing it was trained with: missing "
                f"{', '.join(missing)} (ImageNet-style: --resize 256 --crop 224 "
                "--mean 0.485,0.456,0.406 --std 0.229,0.224,0.225)"
            )
        defaults = {"interpolation": "bilinear"}
    spec = {k: v if v is not None else defaults[k] for k, v in given.items()}
    resize, crop = (imaging.size_hw(spec[k]) for k in ("resize", "crop"))
    if resize[0] < crop[0] or resize[1] < crop[1]:
        raise ExportError(f"--resize {spec['resize']} is smaller than --crop {spec['crop']}")
    if any(s <= 0 for s in spec["std"]):
        raise ExportError(f"--std must be positive; got {spec['std']}")
    return spec


def resolve_labels(
    num_classes: int,
    labels: Path | None = None,
    labels_zh: Path | None = None,
    default: list[str] | None = None,
) -> dict[str, list[str]]:
    """The labels by language, each checked against the model's class count.

    Without a file: the source's own (`default`: Hugging Face's id2label, a .mar's
    index_to_name.json), else ImageNet-1K names for 1000 classes, else the class indices.
    ImageNet-1K English names get the project's Chinese ones unless --labels-zh says otherwise.
    """
    result: dict[str, list[str]] = {}
    for lang, path in (("en", labels), ("zh", labels_zh)):
        if path is None:
            continue
        try:
            result[lang] = read_labels(path)
        except LabelError as exc:
            raise ExportError(str(exc)) from None
    if "en" not in result and default is not None:
        result["en"] = default
    if "en" not in result:
        if num_classes == 1000:
            result["en"] = list(labelling.names("en"))
        else:
            log.warning("no --labels: the %d classes are labelled by index", num_classes)
            result["en"] = [str(i) for i in range(num_classes)]
    for lang, names in result.items():
        if len(names) != num_classes:
            where = {"en": labels, "zh": labels_zh}[lang] or "the model's own labels"
            raise ExportError(
                f"label count mismatch: {where} has {len(names)} labels, the model outputs "
                f"{num_classes} classes"
            )
    if "zh" not in result and result["en"] == list(labelling.names("en")):
        result["zh"] = list(labelling.names("zh"))
    return {lang: result[lang] for lang in labelling.LANGUAGES if lang in result}


def class_count(module: torch.nn.Module, crop: int | list[int]) -> int:
    """Run the model once on a blank image and return how many classes it scores."""
    height, width = imaging.size_hw(crop)
    try:
        with torch.inference_mode():
            out = module(torch.zeros(1, 3, height, width))
    except Exception as exc:
        raise ExportError(
            f"the model failed on a 1x3x{height}x{width} input: {summary(exc)}. "
            "Check --crop and the model."
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ExportError(
            f"the model returned {shape} for one image; a classifier returns (1, classes) logits"
        )
    return int(out.shape[1])


def save_traced(module: torch.nn.Module, crop: int | list[int]) -> Callable[[Path], dict[str, Any]]:
    """A `save(path)` for write_artifact that traces `module` to TorchScript, with an
    `explain` method too when the model's feature map and head are found; it returns the
    manifest's `explain` field (app/export/explainable.py)."""
    height, width = imaging.size_hw(crop)

    def save(path: Path) -> dict[str, Any]:
        how = explainable.plan(module, crop)
        # torch.jit.trace's own check re-traces the model (4x the time): compare outputs once.
        x = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode(), runtime.torchscript_api():
            if how.reason is None:
                methods = {"forward": x[:1], "explain": x[:1]}
                wrapped = explainable.Explainable(module, how).eval()
                traced = torch.jit.trace_module(wrapped, methods, check_trace=False)
            else:
                traced = torch.jit.trace(module, x[:1], check_trace=False)
            expected, actual = module(x), traced(x)
        if not torch.allclose(actual, expected, rtol=1e-4, atol=1e-5):
            raise ExportError(
                "the traced model's outputs differ from the model's (data-dependent control "
                "flow?); export it yourself with torch.jit.script and pass --torchscript"
            )
        traced.save(str(path))
        return {"explain": how.manifest()}

    return save


def save_onnx(module: torch.nn.Module, crop: int | list[int]) -> Callable[[Path], None]:
    """A `save(path)` that exports `module` to ONNX (input `input`, output `output`, a dynamic
    batch axis), checked against the module on ONNX Runtime."""
    height, width = imaging.size_hw(crop)

    def save(path: Path) -> None:
        x = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))
        # The TorchScript-based exporter needs no onnxscript; it traces like save_traced.
        torch.onnx.export(
            module,
            (x[:1],),
            str(path),
            opset_version=ONNX_OPSET,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            dynamo=False,
        )
        with torch.inference_mode():
            expected, actual = module(x), OnnxBackend.load(path)(x)
        if not torch.allclose(actual, expected, rtol=1e-4, atol=1e-5):
            raise ExportError(
                "ONNX Runtime's outputs differ from the model's (data-dependent control flow, "
                "or an operator exported differently); export it yourself and pass --onnx"
            )

    return save


def save_copy(source: Path) -> Callable[[Path], None]:
    """A `save(path)` that copies a user's TorchScript file as it is."""

    def save(path: Path) -> None:
        shutil.copyfile(source, path)

    return save


def manifest_fields(
    *,
    name: str,
    arch: str | None,
    format: str,
    provenance: dict[str, Any],
    input: dict[str, Any],
    labels: dict[str, list[str]],
    scores: str = "softmax",
) -> dict[str, Any]:
    """Everything the service reads from a manifest, in its order (the hash is added on write).

    `scores` is recorded only where it is not the softmax every manifest before it implied.
    """
    weights = {k: v for k, v in provenance.items() if k != "trained"}
    fields = {
        "name": name,
        "arch": arch,
        "format": format,
        "weights": weights,
        "trained": bool(provenance["trained"]),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "input": input,
        "num_classes": len(labels["en"]),
        "languages": list(labels),
        "labels": labels,
    }
    return fields if scores == "softmax" else {**fields, "scores": scores}
