#!/usr/bin/env python3
"""Export torchvision's ResNet-18 (ImageNet-1K) to TorchScript plus a manifest.

Weights, in order of preference:
  --weights PATH   a local state_dict file (e.g. the official resnet18-f37072fd.pth);
  otherwise        torchvision's IMAGENET1K_V1 weights, downloaded with their hash checked;
  offline          a seeded (0) random init, written as `"trained": false` and said loudly.

Formats: TorchScript (the default, fp32) or, with --format pt2, a torch.export + AOTInductor
package in fp32, bf16 or int8 (--precision int8 implies pt2 and calibrates on --calibrate DIR,
images preprocessed as the service does).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch
import torchvision
from torchvision.models import ResNet18_Weights, resnet18

from app import pt2
from app.artifact import sha256_file, write_manifest

log = logging.getLogger("export_model")
WEIGHTS = ResNet18_Weights.IMAGENET1K_V1
RANDOM_SEED = 0


def load_weights(model: torch.nn.Module, weights_path: Path | None) -> dict:
    """Load the best weights available into `model`; return the manifest's `weights` entry."""
    if weights_path is not None:
        model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
        return {
            "source": f"file:{weights_path.name}",
            "sha256": sha256_file(weights_path),
            "trained": True,
        }
    try:
        state = WEIGHTS.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # no network, proxy refusal, hash mismatch, ...
        log.warning("could not download %s (%s: %s)", WEIGHTS.url, type(exc).__name__, exc)
        return {"source": f"random-init(seed={RANDOM_SEED})", "sha256": None, "trained": False}
    model.load_state_dict(state)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(WEIGHTS.url).name
    return {"source": WEIGHTS.url, "sha256": sha256_file(cached), "trained": True}


def export(
    out: Path,
    weights_path: Path | None,
    fmt: str = "torchscript",
    precision: str = "fp32",
    calibrate: Path | None = None,
    max_batch: int = 8,
    device: str = "cpu",
) -> dict:
    """Build the model, save it as TorchScript or a .pt2 package; write and return the manifest."""
    torch.manual_seed(RANDOM_SEED)
    model = resnet18(weights=None)
    weights = load_weights(model, weights_path)
    model.eval()
    transforms = WEIGHTS.transforms()
    crop = transforms.crop_size[0]
    spec = {
        "resize": transforms.resize_size[0],
        "crop": crop,
        "mean": list(transforms.mean),
        "std": list(transforms.std),
        "interpolation": "bilinear",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    fields: dict = {"format": "torchscript-trace"}
    if fmt == "pt2":
        images, record = (None, None)
        if precision == "int8":
            images, record = pt2.calibration_set(calibrate, spec)
        pt2.compile_package(model, out, precision, max_batch, crop, images, device)
        fields = pt2.manifest_fields(precision, max_batch, device, record)
    else:
        with torch.inference_mode():
            traced = torch.jit.trace(model, torch.zeros(1, 3, crop, crop))
        traced.save(str(out))
    return write_manifest(
        out,
        name="resnet18",
        **fields,
        weights=weights,
        trained=weights.pop("trained"),
        torch=torch.__version__,
        torchvision=torchvision.__version__,
        input=spec,
        labels="imagenet-1k",
        num_classes=len(WEIGHTS.meta["categories"]),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("models/resnet18.pt"),
        help="artifact path; the manifest goes beside it as .json",
    )
    parser.add_argument("--weights", type=Path, help="local state_dict file to use")
    parser.add_argument(
        "--require-trained",
        action="store_true",
        help="fail instead of falling back to random weights",
    )
    parser.add_argument("--format", choices=("torchscript", "pt2"), default="torchscript")
    parser.add_argument(
        "--precision",
        choices=pt2.PRECISIONS,
        default="fp32",
        help="fp32/bf16/int8 (pt2 only; int8 implies --format pt2)",
    )
    parser.add_argument(
        "--calibrate",
        type=Path,
        metavar="DIR",
        help=f"int8: calibrate on the first {pt2.CALIBRATION_IMAGES} images of DIR (sorted)",
    )
    parser.add_argument("--max-batch", type=int, default=8, help="pt2: largest batch served")
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="pt2: the device it will serve on"
    )
    args = parser.parse_args(argv)
    if args.precision == "int8":
        args.format = "pt2"
        if args.calibrate is None:
            parser.error("--precision int8 needs --calibrate DIR (images like those served)")
    if args.format == "torchscript" and args.precision != "fp32":
        parser.error("TorchScript is exported in fp32 (the service casts it): use --format pt2")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    manifest = export(
        args.out,
        args.weights,
        args.format,
        args.precision,
        args.calibrate,
        args.max_batch,
        args.device,
    )
    if not manifest["trained"]:
        banner = "!" * 78
        log.warning(
            "%s\nUNTRAINED MODEL: pretrained weights were unavailable; %s holds a seeded "
            "random init.\nIts predictions are meaningless. Re-run with network access "
            "or --weights PATH.\n%s",
            banner,
            args.out,
            banner,
        )
        if args.require_trained:
            return 1
    log.info(
        "wrote %s (sha256 %s, trained=%s)",
        args.out,
        manifest["artifact_sha256"][:12],
        manifest["trained"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
