#!/usr/bin/env python3
"""ONNX Runtime against TorchScript on the same model: fp32, and int8 QDQ calibrated on photos.

Exports --model (a TorchScript artifact) to ONNX through `python -m app.export`'s library,
quantizes that with onnxruntime.quantization (benchkit/onnx_int8.py, calibrated on the first
--calibration photos), then times each engine through the served code path
(app.model.Classifier) with no HTTP and no batcher, each in a fresh process, the engines
interleaved over --rounds rounds: TorchScript fused (what the service runs) and plain, ONNX
Runtime fp32 and int8. Then top-1
agreement of each against TorchScript fp32 on every photo.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

import torch

from app import imaging
from app.artifact import read_manifest
from app.backends.onnx import OnnxBackend
from app.export.library import export
from app.export.request import ExportRequest
from app.model import Classifier
from app.settings import DEFAULT_MODEL
from benchkit import options
from benchkit.bench import ROOT, header, in_fresh_process, load_images
from benchkit.onnx_int8 import quantize
from benchkit.timing import load, time_batches


def engine(kind: str, path: Path) -> Classifier:
    """A classifier placed as a worker places it; an int8 copy shares its fp32 manifest."""
    if kind == "int8":
        fp32 = path.with_name(path.name.replace("-int8", ""))
        classifier = Classifier(OnnxBackend.load(path), read_manifest(fp32), path)
        classifier.prepare(torch.device("cpu"), "fp32")
        return classifier
    return load(path, "fp32", kind == "fused")


def medians(threads: int, kind: str, path: Path, batches: list[int], reps: int) -> list[float]:
    """Seconds per pass (median of `reps`) for each batch size, in a process of its own."""
    torch.set_num_threads(threads)
    classifier = engine(kind, path)
    return [statistics.median(time_batches(classifier, batch, reps)) for batch in batches]


def main() -> int:
    parser = options.parser(
        __doc__, model=ROOT / DEFAULT_MODEL, images=None, threads="1,2", reps=10, rounds=3
    )
    parser.add_argument("--calibration", type=int, default=32, help="photos that calibrate int8")
    parser.add_argument("--batch-sizes", type=options.ints, default=[1, 8])
    args = parser.parse_args()
    print(header("ONNX Runtime vs TorchScript (scripts/bench_onnx.py)"))
    manifest = read_manifest(args.model)
    print(
        f"- model: {args.model.name} ({manifest.get('arch') or manifest['format']}), "
        f"trained: {manifest['trained']}"
    )
    photos = load_images(args.images)
    with tempfile.TemporaryDirectory() as tmp:
        onnx = Path(tmp) / f"{args.model.stem}.onnx"
        spec = manifest["input"]
        given = {k: spec[k] for k in ("resize", "crop", "mean", "std", "interpolation")}
        export(ExportRequest(torchscript=args.model, format="onnx", out=onnx, **given))
        int8 = quantize(
            onnx,
            onnx.with_name(f"{args.model.stem}-int8.onnx"),
            [data for _, data in photos[: args.calibration]],
            spec,
        )
        print(f"- int8: QDQ, calibrated on {min(args.calibration, len(photos))} photos")
        print(
            f"\n{args.rounds} rounds, the engines interleaved in each; the fastest round's "
            "median per cell (the least disturbed on a shared machine), and the slowest's"
        )
        print(
            "\n| threads | engine | batch | ms/batch (best round) | images/s | slowest round ms |"
        )
        print("|---:|---|---:|---:|---:|---:|")
        engines = [("fused", args.model), ("plain", args.model), ("onnx", onnx), ("int8", int8)]
        for threads in args.threads:
            runs = {kind: [] for kind, _ in engines}
            for _ in range(args.rounds):
                for kind, path in engines:
                    runs[kind].append(
                        in_fresh_process(medians, threads, kind, path, args.batch_sizes, args.reps)
                    )
            for kind, _ in engines:
                for i, batch in enumerate(args.batch_sizes):
                    times = [run[i] for run in runs[kind]]
                    print(
                        f"| {threads} | {kind} | {batch} | {min(times) * 1000:.1f} | "
                        f"{batch / min(times):.1f} | {max(times) * 1000:.1f} |",
                        flush=True,
                    )
        torch.set_num_threads(max(args.threads))
        batch = torch.stack([imaging.load(data, spec, 10**9) for _, data in photos])
        reference = engine("plain", args.model)(batch)
        for kind, path in engines[2:]:
            probs = engine(kind, path)(batch)
            same = int((probs.argmax(1) == reference.argmax(1)).sum())
            print(
                f"\n{kind} vs TorchScript fp32 on {len(photos)} photos: top-1 agreement "
                f"{same}/{len(photos)}, max |Δp| {float((probs - reference).abs().max()):.2e}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
