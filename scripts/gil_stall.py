#!/usr/bin/env python3
"""Does a forward pass hold Python's GIL? The longest stall of another Python thread during it.

A worker's request threads decode images in Python while the model thread runs a batch; if the
pass holds the GIL they wait for it, and decoding no longer overlaps inference. For each
artifact: batches on a model thread (the service's Classifier, one torch thread) while the
main thread spins, recording the longest gap between two of its loop iterations; the median of
--reps passes. A .pt2 package is measured twice: called through torch's own loader (which holds
the GIL) and as served (app.backends.pt2 picks its runner: `ctypes`, app/backends/aoti.py, when
its self-check passes). On a loaded machine the scheduler's own pauses show up as gaps too: the
last row of each artifact measures them alone, with a thread hashing as long as the pass took.
"""

from __future__ import annotations

import functools
import hashlib
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from app.artifact import read_manifest
from app.model import Classifier
from benchkit import options
from benchkit.timing import load


def stall(run: Callable[[torch.Tensor], object], x: torch.Tensor) -> tuple[float, float]:
    """(pass seconds, longest gap between two iterations of a Python loop meanwhile)."""
    took: list[float] = []

    def timed() -> None:
        start = time.perf_counter()
        run(x)
        took.append(time.perf_counter() - start)

    thread = threading.Thread(target=timed)
    last, gap = time.perf_counter(), 0.0
    thread.start()
    while not took:
        now = time.perf_counter()
        gap, last = max(gap, now - last), now
    thread.join()
    return took[0], gap


def runners(path: Path) -> list[tuple[str, Callable[[torch.Tensor], object]]]:
    """What to measure for `path`: as served, and for a package also torch's own loader."""
    precision = Classifier.load(path).resolve_precision("fp32", torch.device("cpu"), 1)
    classifier = load(path, precision, fuse=True)
    classifier(torch.zeros(1, 3, *[classifier.input_spec["crop"]] * 2))  # picks its runner
    served = [(f"{precision}, served by {classifier.runner}", classifier)]
    if classifier.format == "torchscript":
        return served
    loader = torch._inductor.aoti_load_package(str(path))
    dtype = classifier.module.input_dtype

    def torchs(x: torch.Tensor) -> object:
        return loader(x.to(dtype).contiguous(memory_format=torch.channels_last))

    return [(f"{precision}, torch's loader", torchs), *served]


def main() -> int:
    parser = options.parser(__doc__, reps=5)
    parser.add_argument("models", type=Path, nargs="+", help="artifacts (.pt, .pt2)")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for path in args.models:
        crop = read_manifest(path)["input"]["crop"]
        x = torch.randn(args.batch, 3, crop, crop)
        for name, run in runners(path):
            run(x)
            run(x)
            seconds = report(f"{path.name} ({name})", run, x, args.reps)
        busy = functools.partial(hash_for, seconds)
        report("noise floor (SHA-256 as long, GIL released)", busy, x, args.reps)
    return 0


def hash_for(seconds: float, _: object) -> None:
    """Busy on one CPU for `seconds` without the GIL (hashlib releases it on large buffers):
    what the scheduler alone costs the loop while a thread computes."""
    data, deadline = bytes(1 << 20), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        hashlib.sha256(data)


def report(name: str, run: Callable[[torch.Tensor], object], x: torch.Tensor, reps: int) -> float:
    """Print the medians of `reps` passes' time and stall; return the pass's seconds."""
    passes = [stall(run, x) for _ in range(reps)]
    seconds = statistics.median(p[0] for p in passes)
    gap = statistics.median(p[1] for p in passes)
    print(
        f"{name}: pass {seconds * 1000:.0f} ms, longest stall of another Python thread "
        f"{gap * 1000:.1f} ms ({100 * gap / seconds:.1f} % of the pass), medians of {reps}",
        flush=True,
    )
    return seconds


if __name__ == "__main__":
    sys.exit(main())
