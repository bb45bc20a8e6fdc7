#!/usr/bin/env python3
"""How far WANWU_DECODE=fast strays from the exact path, by margin, and what it saves.

For each image in --images, the exact path (full decode, torchvision-identical resize and
crop) is the reference. For each margin m, the fast path decodes the picture scaled down to a
short side of at least m x the resize target (JPEG DCT scaling, else Image.reduce), then
resizes and crops as usual. Reports per margin: decode + preprocess ms per image (median, one
thread, as in a request thread), the deviation of the preprocessed tensor from the reference
(mean absolute per photo: median and worst photo; largest single value), and top-1 agreement
with the reference on the given model (its manifest says whether it is trained: an untrained
model's agreement measures the preprocessing only, not accuracy).
"""

from __future__ import annotations

import math
import statistics
import sys
import time

import torch

from app import imaging
from app.artifact import read_manifest
from benchkit import options
from benchkit.bench import ROOT, header, load_images


def preprocessed(data: bytes, spec: dict, min_short: int | None) -> tuple[torch.Tensor, float]:
    """The model input for one image and the seconds it took."""
    start = time.perf_counter()
    picture = imaging.decode(data, 10**9, min_short)
    tensor = imaging.preprocess(picture, spec["resize"], spec["crop"], spec["mean"], spec["std"])
    return tensor, time.perf_counter() - start


def main() -> int:
    parser = options.parser(__doc__, images=None, model=ROOT / "models/resnet18.pt")
    parser.add_argument("--margins", default="1,1.5,2,3", help="comma-separated fast margins")
    args = parser.parse_args()
    torch.set_num_threads(1)
    images = load_images(args.images)
    manifest = read_manifest(args.model)
    spec = manifest["input"]
    model = torch.jit.load(str(args.model)).eval()

    def top1(tensors: list[torch.Tensor]) -> list[int]:
        with torch.inference_mode():
            return [int(model(t[None]).argmax()) for t in tensors]

    print(header("Fast decode fidelity (scripts/decode_fidelity.py)"))
    print(
        f"- {len(images)} images from {args.images or 'the shared samples'}; model "
        f"{args.model.name} (trained: {manifest['trained']}); resize {spec['resize']}, "
        f"crop {spec['crop']}; one thread\n"
    )
    print(
        "| path | ms/image (median) | mean abs dev: median photo | worst photo | "
        "largest value | photos not identical | top-1 agreement |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    runs = [preprocessed(d, spec, None) for _, d in images]
    reference = [tensor for tensor, _ in runs]
    labels = top1(reference)
    print(f"| exact | {statistics.median(s for _, s in runs) * 1000:.1f} | 0 | 0 | 0 | 0 | - |")
    for margin in (float(m) for m in args.margins.split(",")):
        min_short = math.ceil(spec["resize"] * margin)
        runs = [preprocessed(d, spec, min_short) for _, d in images]
        diffs = [(t - r).abs() for (t, _), r in zip(runs, reference, strict=True)]
        means = [float(d.mean()) for d in diffs]
        agree = sum(a == b for a, b in zip(top1([t for t, _ in runs]), labels, strict=True))
        print(
            f"| fast, margin {margin:g} (short side >= {min_short}) | "
            f"{statistics.median(s for _, s in runs) * 1000:.1f} | "
            f"{statistics.median(means):.4f} | {max(means):.4f} | "
            f"{max(float(d.max()) for d in diffs):.3f} | "
            f"{sum(m > 0 for m in means)}/{len(images)} | {agree}/{len(images)} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
