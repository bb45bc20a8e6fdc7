#!/usr/bin/env python3
"""Model-only throughput: images/s and ms per batch by batch size, precision and thread count.

Runs the served code path (app.model.Classifier: frozen TorchScript, channels-last, with
and without oneDNN Graph fusion on the CPU), one process per thread count, with no HTTP and no
batcher: the ceiling the service is measured against. On CUDA (--device cuda) a pass includes
the copies to and from the GPU, as in the service. With --images it also reports how often each
reduced precision picks the same top-1 class as fp32 on real photos. Each --package (.pt2) is
measured the same way, in its own precision, after the TorchScript rows; every configuration
also reports the private memory its process gained by loading and warming up batch sizes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from app import imaging, memory
from app.artifact import read_manifest
from app.model import Classifier
from app.runtime import cpu_supports_bf16
from app.settings import DEFAULT_MODEL
from benchkit import options
from benchkit.bench import ROOT, device_name, header, in_fresh_process, load_images
from benchkit.timing import load, time_batches


def package_precision(path: Path) -> str:
    """The precision a .pt2 package was compiled in (from its manifest)."""
    return read_manifest(path)["precision"]


def agreement(
    model: Path,
    images: list[tuple[str, bytes]],
    device: str,
    reduced: list[tuple[Path, str]],
) -> Iterator[str]:
    """Yield, for each (artifact, precision), its top-1 agreement and largest gap against fp32."""
    reference = load(model, "fp32", device=device)
    batch = torch.stack([imaging.load(data, reference.input_spec, 10**9) for _, data in images])
    p32 = scores(reference, model, batch)
    for path, precision in reduced:
        p16 = scores(load(path, precision, device=device), path, batch)
        same = int((p32.argmax(1) == p16.argmax(1)).sum())
        yield (
            f"{path.name} {precision} vs fp32 on {len(images)} photos ({device}): top-1 agreement "
            f"{same}/{len(images)} ({100 * same / len(images):.1f} %), "
            f"max |Δp| {float((p32 - p16).abs().max()):.4f}, trained weights: {reference.trained}"
        )


def scores(classifier: Classifier, path: Path, batch: torch.Tensor) -> torch.Tensor:
    """The classifier's probabilities for `batch`, in passes no larger than its artifact
    takes (a .pt2 package is compiled for batches up to its manifest's max_batch)."""
    most = read_manifest(path).get("max_batch") or len(batch)
    return torch.cat([classifier(part) for part in batch.split(most)])


def rows(args: argparse.Namespace, threads: int, model: Path, precision: str, fuse: int) -> None:
    """Print the table rows of one artifact, precision, fusion and thread count."""
    torch.set_num_threads(threads)
    before = memory.smaps_rollup()["private"]
    classifier = load(model, precision, bool(fuse), args.device)
    kind = "pt2" if model.suffix == ".pt2" else "fused" if fuse else "plain"
    for batch in args.batch_sizes:
        median = statistics.median(time_batches(classifier, batch, args.reps))
        print(
            f"| {threads} | {model.name} | {precision} | {kind} | {batch} | "
            f"{median * 1000:.1f} | {batch / median:.1f} |",
            flush=True,
        )
    grown = (memory.smaps_rollup()["private"] - before) / 2**20
    print(f"| {threads} | {model.name} | {precision} | {kind} | private +{grown:.0f} MiB |||")


def main() -> int:
    parser = options.parser(
        __doc__, model=ROOT / DEFAULT_MODEL, threads="1,2", reps=10, images=None
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument(
        "--batch-sizes", type=options.ints, help="default 1..16 (CPU), 1..128 (CUDA)"
    )
    parser.add_argument("--precisions", help="default: every precision the device supports")
    parser.add_argument(
        "--fusion", type=options.ints, default=[0, 1], help="0: plain, 1: oneDNN fused"
    )
    parser.add_argument(
        "--package", type=Path, action="append", default=[], help=".pt2 package to measure too"
    )
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    if args.precisions is None:
        args.precisions = (
            "fp32,fp16,bf16" if cuda else "fp32,bf16" if cpu_supports_bf16() else "fp32"
        )
    if args.batch_sizes is None:
        args.batch_sizes = [1, 2, 4, 8, 16, 32, 64, 128] if cuda else [1, 2, 4, 8, 16]
    if cuda:  # fusion is oneDNN's (CPU only); torch threads barely matter to a GPU pass
        args.fusion, args.threads = [0], args.threads[:1]
    print(header("Model-only throughput (scripts/bench_model.py)"))
    print(f"- device: {device_name(args.device)}")
    manifest = read_manifest(args.model)
    print(
        f"- model: {args.model.name}: {manifest.get('arch') or manifest['format']}, "
        f"{manifest['num_classes']} classes, {manifest['input']['crop']}px input, "
        f"trained: {manifest['trained']}"
    )
    print("\n| threads | artifact | precision | kind | batch | ms/batch (median) | images/s |")
    print("|---:|---|---|---|---:|---:|---:|")
    configs = [
        (args.model, precision, fuse)
        for precision in args.precisions.split(",")
        for fuse in args.fusion
    ] + [(path, package_precision(path), 0) for path in args.package]
    for threads in args.threads:
        for config in configs:
            in_fresh_process(rows, args, threads, *config)
    reduced = [(args.model, p) for p in args.precisions.split(",") if p != "fp32"]
    reduced += [(path, package_precision(path)) for path in args.package]
    if reduced:
        torch.set_num_threads(max(args.threads))
        for line in agreement(args.model, load_images(args.images), args.device, reduced):
            print("\n" + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
