""".pt2 packages built: torch.export + AOTInductor, compiled at export time (fp32, bf16, int8).

Serving one is app/backends/pt2.py's. Policy:
- A package holds one precision: fp32, bf16, or int8 (PT2E static quantisation with torchao's
  X86InductorQuantizer, calibrated on the user's images preprocessed by `app.imaging` exactly
  as the service does). Its batch dimension is dynamic, 1..max batch, so one compiled program
  serves every batch the batcher forms; inputs are channels-last.
- The package records its precision twice: in its own metadata and in the manifest beside it.
- CPU packages are compiled with dynamic threads: by default inductor bakes the compiling
  process's thread count into every kernel, and a 2 x 1 worker layout would then run two
  threads per worker.
- int8 is checked at export: its top-1 on the calibration images against the fp32 model's,
  printed, and the package refused below a minimum share (`check_agreement`). On a CPU
  without VNNI activations are quantized to 7 bits (`reduced_range`), recorded in the
  manifest.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from app import imaging
from app.artifact import PT2_FORMAT
from app.backends.pt2 import DTYPES, PRECISION_KEY, reduced_range

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "int8")
CALIBRATION_IMAGES = 200  # PTQ needs a few hundred representative images, not thousands
MIN_AGREEMENT = 0.9  # of int8's top-1 answers on the held-out images equal to fp32's
# One image in HOLD_OUT_EVERY (the 1st, 6th, 11th... by name) judges int8's agreement and is
# never calibrated on: on the images it was calibrated on, any model agrees, an untrained one
# 100 of 100.
HOLD_OUT_EVERY = 5
_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class AgreementError(ValueError):
    """An int8 package whose top-1 answers differ from its fp32 model's too often."""


class _ReLU(torch.nn.Module):
    """A ReLU whose every call is its own graph node, even when the module is reused."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x)


def own_relus(model: torch.nn.Module) -> torch.nn.Module:
    """Replace every nn.ReLU module by one that calls F.relu (same maths), in place.

    torchvision's BasicBlock calls one nn.ReLU twice; the quantizer groups the two calls into
    one partition and fails with "Input partition has more than one output node".
    """
    for name, child in model.named_children():
        if isinstance(child, torch.nn.ReLU):
            setattr(model, name, _ReLU())
        else:
            own_relus(child)
    return model


def calibration_set(
    directory: Path, spec: dict[str, Any], limit: int = CALIBRATION_IMAGES
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Preprocess up to `limit` images of `directory` as served; return them and their record.

    The record (for the manifest) names the set by the SHA-256 of its files' names and bytes.
    """
    directory = Path(directory)
    found = directory.iterdir() if directory.is_dir() else ()
    files = sorted(p for p in found if p.suffix.lower() in _SUFFIXES)
    if not files:
        raise ValueError(
            f"--calibrate {directory}: no images there (JPEG, PNG, WebP, BMP, GIF, TIFF); "
            "point it at a folder of pictures like those the model will serve"
        )
    files = files[:limit]
    if len(files) < 2:
        raise ValueError(
            f"--calibrate {directory}: one image; int8 needs at least 2, one in "
            f"{HOLD_OUT_EVERY} of them held out to judge its agreement with fp32"
        )
    digest = hashlib.sha256()
    tensors = []
    for path in files:
        data = path.read_bytes()
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(data).digest())
        tensors.append(imaging.load(data, spec, 10**9))
    held_out = len(files[::HOLD_OUT_EVERY])
    record = {
        "source": str(directory),
        "images": len(files),
        "held_out": held_out,  # of the images: judged on, not calibrated on
        "sha256": digest.hexdigest(),
    }
    return torch.stack(tensors), record


def held_out(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`images` split into those to calibrate on and those held out to judge agreement."""
    keep = torch.ones(len(images), dtype=torch.bool)
    keep[::HOLD_OUT_EVERY] = False
    return images[keep], images[~keep]


def _quantize(
    model: torch.nn.Module, example: torch.Tensor, batch: Any, images: torch.Tensor, max_batch: int
) -> torch.nn.Module:
    """PT2E post-training static int8: export, observe `images`, convert."""
    # Imported here: torchao is only needed to build int8 packages, never to serve them.
    # Importing the quantizer also registers the inductor passes that fuse the int8 patterns.
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = xiq.X86InductorQuantizer()
    config = xiq.get_default_x86_inductor_quantization_config(reduce_range=reduced_range())
    quantizer.set_global(config)
    graph = torch.export.export(own_relus(model), (example,), dynamic_shapes=batch).module()
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for chunk in images.split(max_batch):  # the exported graph takes no larger batch
            prepared(chunk.contiguous(memory_format=torch.channels_last))
    return convert_pt2e(prepared)


def compile_package(
    model: torch.nn.Module,
    out: Path,
    precision: str,
    max_batch: int,
    crop: int,
    calibration: torch.Tensor | None = None,
    device: str = "cpu",
    min_agreement: float = MIN_AGREEMENT,
) -> Path:
    """Export `model` and compile it with AOTInductor into the package `out`.

    int8 needs `calibration` images (a batch from `calibration_set`) and a CPU. It calibrates
    on four in five of them and is refused (AgreementError) when its top-1 agrees with the
    fp32 model's on fewer than `min_agreement` of the fifth held out (`check_agreement`).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "int8" and (calibration is None or device != "cpu"):
        raise ValueError("int8 packages are built on the CPU from calibration images")
    model = model.eval().to(device=device, dtype=DTYPES[precision])
    example = torch.randn(min(2, max_batch), 3, crop, crop, device=device)
    example = example.to(DTYPES[precision]).contiguous(memory_format=torch.channels_last)
    # A dynamic dimension needs an example of at least 2; a max batch of 1 stays static.
    batch = ({0: torch.export.Dim("batch", min=1, max=max_batch)},) if max_batch > 1 else None
    if precision == "int8":
        calibration, judged = held_out(calibration)
        with torch.no_grad():
            expected = _top1(model, judged, max_batch)  # the fp32 model's answers
        model = _quantize(model, example, batch, calibration, max_batch)
    with torch.no_grad():
        program = torch.export.export(model, (example,), dynamic_shapes=batch)
        configs: dict[str, Any] = {
            "freezing": True,  # fold weights into constants, pre-pack them for oneDNN
            "aot_inductor.metadata": {PRECISION_KEY: precision},
        }
        if device == "cpu":
            configs["cpp.dynamic_threads"] = True
        out.parent.mkdir(parents=True, exist_ok=True)
        torch._inductor.aoti_compile_and_package(
            program, package_path=str(out), inductor_configs=configs
        )
    if precision == "int8":
        check_agreement(out, expected, judged, max_batch, min_agreement)
    return out


def _top1(model: Any, images: torch.Tensor, max_batch: int) -> torch.Tensor:
    """The top-1 class of each image, in batches the model takes."""
    with torch.no_grad():
        return torch.cat(
            [
                model(chunk.contiguous(memory_format=torch.channels_last)).argmax(dim=1)
                for chunk in images.split(max_batch)
            ]
        )


def check_agreement(
    package: Path, expected: torch.Tensor, images: torch.Tensor, max_batch: int, minimum: float
) -> float:
    """Top-1 agreement of `package` with `expected` on `images`; below `minimum`, delete it.

    int8 rounds weights and activations; where the fp32 model's top two classes are near ties
    its answer flips. Agreement on held-out photos of the user's is what the export can
    measure without labels, and what those photos say about their model.
    """
    answers = _top1(torch._inductor.aoti_load_package(str(package)), images, max_batch)
    same = int((answers == expected).sum())
    agreement = same / len(expected)
    log.info(
        "int8 top-1 agrees with fp32 on %d of %d held-out images (%.1f %%, minimum %.1f %%)",
        same,
        len(expected),
        100 * agreement,
        100 * minimum,
    )
    if agreement < minimum:
        package.unlink()
        raise AgreementError(
            f"int8 top-1 agrees with the fp32 model on only {same} of {len(expected)} "
            f"held-out images ({100 * agreement:.1f} %, minimum {100 * minimum:.1f} %): "
            "calibrate on more photos like those it will serve, keep fp32 or bf16, "
            "or lower --min-agreement"
        )
    return agreement


def manifest_fields(
    precision: str, max_batch: int, device: str, calibration: dict[str, Any] | None
) -> dict[str, Any]:
    """What a package's manifest records beyond the TorchScript export's fields."""
    fields: dict[str, Any] = {
        "format": PT2_FORMAT,
        "precision": precision,
        "device": device,
        "max_batch": max_batch,
    }
    if calibration is not None:
        fields["calibration"] = calibration
    if precision == "int8":
        fields["int8_reduced_range"] = reduced_range()
    return fields
