#!/usr/bin/env python3
"""Model-only throughput: images/s and ms per batch by batch size, precision and thread count.

Runs the served code path (app.model.Classifier: frozen TorchScript, channels-last, with
and without oneDNN Graph fusion), one process per thread count, with no HTTP and no batcher:
the ceiling the service is measured against. With --images it also reports how often bf16
picks the same top-1 class as fp32 on real photos.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import ROOT, header, in_fresh_process, load_images  # noqa: E402

from app import imaging  # noqa: E402
from app.model import Classifier  # noqa: E402
from app.runtime import cpu_supports_bf16  # noqa: E402


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def time_batches(classifier: Classifier, batch: int, reps: int) -> list[float]:
    """Return seconds per forward pass for `reps` passes of a random batch."""
    crop = classifier.input_spec["crop"]
    x = torch.randn(batch, 3, crop, crop)
    classifier(x)
    classifier(x)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        classifier(x)
        times.append(time.perf_counter() - start)
    return times


def load(model: Path, precision: str, fuse: bool = False) -> Classifier:
    classifier = Classifier.load(model)
    classifier.prepare(torch.device("cpu"), precision, fuse)
    return classifier


def agreement(model: Path, images: list[tuple[str, bytes]]) -> str:
    """Top-1 agreement and largest probability gap of bf16 against fp32."""
    fp32, bf16 = load(model, "fp32"), load(model, "bf16")
    spec = fp32.input_spec
    batch = torch.stack([imaging.load(data, spec, 10**9) for _, data in images])
    p32, p16 = fp32(batch), bf16(batch)
    same = int((p32.argmax(1) == p16.argmax(1)).sum())
    return (
        f"bf16 vs fp32 on {len(images)} photos: top-1 agreement {same}/{len(images)} "
        f"({100 * same / len(images):.1f} %), max |Δp| {float((p32 - p16).abs().max()):.4f}, "
        f"trained weights: {fp32.trained}"
    )


def rows(args: argparse.Namespace, threads: int) -> None:
    """Print the table rows of one thread count."""
    torch.set_num_threads(threads)
    for precision in args.precisions.split(","):
        for fuse in args.fusion:
            classifier = load(args.model, precision, bool(fuse))
            for batch in args.batch_sizes:
                median = statistics.median(time_batches(classifier, batch, args.reps))
                print(
                    f"| {threads} | {precision} | {'yes' if fuse else 'no'} | {batch} | "
                    f"{median * 1000:.1f} | {batch / median:.1f} |",
                    flush=True,
                )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=ROOT / "models/resnet18.pt")
    parser.add_argument("--batch-sizes", type=ints, default=[1, 2, 4, 8, 16])
    parser.add_argument("--threads", type=ints, default=[1, 2])
    parser.add_argument("--precisions", default="fp32,bf16" if cpu_supports_bf16() else "fp32")
    parser.add_argument("--fusion", type=ints, default=[0, 1], help="0: plain, 1: oneDNN fused")
    parser.add_argument("--reps", type=int, default=10, help="timed passes per cell")
    parser.add_argument("--images", type=Path, help="photos for the bf16 agreement check")
    args = parser.parse_args()
    print(header("Model-only throughput (scripts/bench_model.py)"))
    print("\n| threads | precision | fused | batch | ms/batch (median) | images/s |")
    print("|---:|---|---|---:|---:|---:|")
    for threads in args.threads:
        in_fresh_process(rows, args, threads)
    if "bf16" in args.precisions:
        torch.set_num_threads(max(args.threads))
        print("\n" + agreement(args.model, load_images(args.images)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
