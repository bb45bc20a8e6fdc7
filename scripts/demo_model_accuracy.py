#!/usr/bin/env python3
"""make demo's EfficientNet-Lite0 on the 100 shared ImageNet photos (the k-th, sorted, is
class 10k): top-1 and top-5 of the model itself under several preprocessings, and of exported
artifacts served over HTTP by real Gunicorn (fp32 TorchScript, bf16 and int8 .pt2). The
top-1 of the odd-numbered 50 is given apart: docs/BENCHMARKS.md calibrates int8 on the others.

  python -m scripts.demo_model_accuracy --variants
  python -m app.export.zoo efficientnet_lite0 --out models/efficientnet_lite0.pt
  python -m app.export.zoo efficientnet_lite0 --format pt2 --precision bf16 --out /tmp/l-bf16.pt2
  python -m scripts.demo_model_accuracy --served models/efficientnet_lite0.pt /tmp/l-bf16.pt2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import requests
import torch
from PIL import Image

from app import imaging
from app.export import zoo
from benchkit.bench import header
from benchkit.images import SAMPLES
from benchkit.server import GunicornServer

LITE0 = (127 / 255, 128 / 255)
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
# name: resize, crop, interpolation, mean, std
VARIANTS = {
    "reference: 256/224 bicubic, (x-127)/128": (256, 224, "bicubic", *LITE0),
    "256/224 bilinear, (x-127)/128": (256, 224, "bilinear", *LITE0),
    "224/224 bicubic, (x-127)/128": (224, 224, "bicubic", *LITE0),
    "256/224 bicubic, ImageNet mean/std": (256, 224, "bicubic", *IMAGENET),
}


def score(top5: list[list[int]]) -> tuple[int, int]:
    """Top-1 and top-5 hits, the k-th photo being class 10k."""
    top1 = sum(row[0] == 10 * k for k, row in enumerate(top5))
    return top1, sum(10 * k in row for k, row in enumerate(top5))


@torch.inference_mode()
def variants(photos: list[Path]) -> None:
    model = zoo.efficientnet_lite0()
    pictures = [imaging.to_rgb(Image.open(p)) for p in photos]
    for name, (resize, crop, interpolation, mean, std) in VARIANTS.items():
        batch = torch.stack(
            [
                imaging.preprocess(p, resize, crop, mean, std, interpolation=interpolation)
                for p in pictures
            ]
        )
        top1, hits5 = score(model(batch).topk(5).indices.tolist())
        print(f"{name:44s} top-1 {top1:3d}  top-5 {hits5:3d}")


def predict(url: str, photo: Path) -> list[int]:
    """The served top-5 class indices of one photo."""
    response = requests.post(
        f"{url}/predict?topk=5", files={"file": photo.read_bytes()}, timeout=300
    )
    response.raise_for_status()
    return [p["index"] for p in response.json()["predictions"]]


def served(photos: list[Path], artifacts: list[Path]) -> None:
    first: list[int] | None = None
    for artifact in artifacts:
        with tempfile.TemporaryDirectory() as logs:
            server = GunicornServer(Path(logs), workers=1, model=artifact).start(timeout=900)
            try:
                top5 = [predict(server.url, photo) for photo in photos]
            finally:
                server.stop()
        top1, hits5 = score(top5)
        same = ""
        if first is not None:
            agree = sum(a == b[0] for a, b in zip(first, top5, strict=True))
            same = f"  same top-1 as {artifacts[0].name}: {agree}"
        first = first or [row[0] for row in top5]
        odd = sum(row[0] == 10 * k for k, row in enumerate(top5) if k % 2)
        print(
            f"{artifact.name:24s} over HTTP: top-1 {top1:3d} (odd 50: {odd:2d})"
            f"  top-5 {hits5:3d}{same}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--variants", action="store_true", help="the model under each preprocessing"
    )
    parser.add_argument("--served", type=Path, nargs="*", default=[], help="artifacts to serve")
    parser.add_argument("--photos", type=Path, default=SAMPLES, help=f"default {SAMPLES}")
    args = parser.parse_args(argv)
    photos = sorted(args.photos.glob("*.JPEG"))
    if len(photos) != 100:
        print(
            f"{args.photos}: expected the 100 shared photos, found {len(photos)}", file=sys.stderr
        )
        return 1
    print(header("EfficientNet-Lite0 on the shared ImageNet photos"))
    if args.variants:
        variants(photos)
    served(photos, args.served)
    return 0


if __name__ == "__main__":
    sys.exit(main())
