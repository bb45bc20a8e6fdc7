#!/usr/bin/env python3
"""Decode + preprocess per image: the served Pillow path against torchvision.io's tensor path.

Both use libjpeg-turbo. Reports the median ms per image (one thread, as in a request
thread) and each path's largest deviation from torchvision's reference transforms.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision.transforms.functional as F
from PIL import Image
from torchvision.io import ImageReadMode, decode_image
from torchvision.models import ResNet18_Weights
from torchvision.transforms import InterpolationMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import header, load_images  # noqa: E402

from app import imaging  # noqa: E402

SPEC = ResNet18_Weights.IMAGENET1K_V1.transforms()


def served(data: bytes) -> torch.Tensor:
    """The service's path (app.imaging): Pillow decode, Pillow resize."""
    return imaging.preprocess(imaging.decode(data, 10**9), 256, 224, SPEC.mean, SPEC.std)


def tensor_path(data: bytes) -> torch.Tensor:
    """torchvision.io decode, then resize on the uint8 tensor."""
    x = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.RGB)
    x = F.resize(x, [256], interpolation=InterpolationMode.BILINEAR, antialias=True)
    return F.normalize(F.center_crop(x, [224]).float().div_(255), SPEC.mean, SPEC.std)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=Path, help="directory of JPEGs (default ../shared)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    images = load_images(args.images)
    references = [SPEC(Image.open(io.BytesIO(d)).convert("RGB")) for _, d in images]
    print(header("Decode + preprocess (scripts/bench_decode.py)"))
    print(f"- {len(images)} images, one thread\n")
    print("| path | ms/image (median) | max abs deviation from reference |")
    print("|---|---:|---:|")
    for name, fn in (("Pillow (served)", served), ("torchvision.io + tensor resize", tensor_path)):
        times, deviation = [], 0.0
        for (_, data), reference in zip(images, references, strict=True):
            start = time.perf_counter()
            out = fn(data)
            times.append(time.perf_counter() - start)
            deviation = max(deviation, float((out - reference).abs().max()))
        print(f"| {name} | {statistics.median(times) * 1000:.2f} | {deviation:.2e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
