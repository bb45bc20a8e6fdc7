#!/usr/bin/env python3
"""Decode + preprocess per image: the served Pillow path against two faster candidates.

The candidates: torchvision.io's tensor path, and Pillow resizing only the crop window
(`Image.resize(box=...)`) instead of the whole picture before cropping. All use
libjpeg-turbo. Reports the median ms per image (one thread, as in a request thread), each
path's largest deviation from torchvision's reference transforms, and how many images
deviate at all.
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

from app import imaging
from benchkit.bench import header, load_images

SPEC = ResNet18_Weights.IMAGENET1K_V1.transforms()


def served(data: bytes) -> torch.Tensor:
    """The service's path (app.imaging): Pillow decode, Pillow resize."""
    return imaging.preprocess(imaging.decode(data, 10**9), 256, 224, SPEC.mean, SPEC.std)


def tensor_path(data: bytes) -> torch.Tensor:
    """torchvision.io decode, then resize on the uint8 tensor."""
    x = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.RGB)
    x = F.resize(x, [256], interpolation=InterpolationMode.BILINEAR, antialias=True)
    return F.normalize(F.center_crop(x, [224]).float().div_(255), SPEC.mean, SPEC.std)


def crop_box_path(data: bytes) -> torch.Tensor:
    """Pillow decode, then resize only the part of the picture the centre crop keeps."""
    img = imaging.decode(data, 10**9)
    width, height = img.size  # torchvision's resized size: short side 256, long side truncated
    short, long = sorted(img.size)
    new_w, new_h = (256, int(256 * long / short))[:: 1 if width <= height else -1]
    left, top = round((new_w - 224) / 2), round((new_h - 224) / 2)
    sx, sy = width / new_w, height / new_h
    box = (left * sx, top * sy, (left + 224) * sx, (top + 224) * sy)
    cropped = img.resize((224, 224), Image.BILINEAR, box=box)
    return F.normalize(F.pil_to_tensor(cropped).float().div_(255), SPEC.mean, SPEC.std)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=Path, help="directory of JPEGs (default ../shared)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    images = load_images(args.images)
    references = [SPEC(Image.open(io.BytesIO(d)).convert("RGB")) for _, d in images]
    print(header("Decode + preprocess (scripts/bench_decode.py)"))
    print(f"- {len(images)} images, one thread\n")
    print("| path | ms/image (median) | max abs deviation from reference | images off it |")
    print("|---|---:|---:|---:|")
    paths = (
        ("Pillow (served)", served),
        ("torchvision.io + tensor resize", tensor_path),
        ("Pillow, resizing the crop box only", crop_box_path),
    )
    for name, fn in paths:
        times, deviations = [], []
        for (_, data), reference in zip(images, references, strict=True):
            start = time.perf_counter()
            out = fn(data)
            times.append(time.perf_counter() - start)
            deviations.append(float((out - reference).abs().max()))
        off = sum(d > 1e-6 for d in deviations)
        print(
            f"| {name} | {statistics.median(times) * 1000:.2f} | {max(deviations):.2e} | "
            f"{off}/{len(images)} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
