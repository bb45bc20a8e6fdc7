#!/usr/bin/env python3
"""Export torchvision's ResNet-18 (ImageNet-1K) to TorchScript plus a manifest.

Weights, in order of preference:
  --weights PATH   a local state_dict file (e.g. the official resnet18-f37072fd.pth);
  otherwise        torchvision's IMAGENET1K_V1 weights, downloaded with their hash checked;
  offline          a seeded (0) random init, written as `"trained": false` and said loudly.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch
import torchvision
from torchvision.models import ResNet18_Weights, resnet18

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


def export(out: Path, weights_path: Path | None) -> dict:
    """Build, trace and save the model; write its manifest; return the manifest."""
    torch.manual_seed(RANDOM_SEED)
    model = resnet18(weights=None)
    weights = load_weights(model, weights_path)
    model.eval()
    crop = WEIGHTS.transforms().crop_size[0]
    with torch.inference_mode():
        traced = torch.jit.trace(model, torch.zeros(1, 3, crop, crop))
    out.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(out))
    transforms = WEIGHTS.transforms()
    return write_manifest(
        out,
        name="resnet18",
        format="torchscript-trace",
        weights=weights,
        trained=weights.pop("trained"),
        torch=torch.__version__,
        torchvision=torchvision.__version__,
        input={
            "resize": transforms.resize_size[0],
            "crop": crop,
            "mean": list(transforms.mean),
            "std": list(transforms.std),
            "interpolation": "bilinear",
        },
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    manifest = export(args.out, args.weights)
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
