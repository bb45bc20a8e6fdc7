#!/usr/bin/env python3
"""Does a forward pass hold Python's GIL? The longest stall of another Python thread during it.

A worker's request threads decode images in Python while the model thread runs a batch; if the
pass holds the GIL they wait for it, and decoding no longer overlaps inference. For each
artifact: one batch on a model thread (the service's Classifier, one torch thread) while the
main thread spins, recording the longest gap between two of its loop iterations.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import torch

from app.model import Classifier
from benchkit.timing import load


def stall(classifier: Classifier, batch: int) -> tuple[float, float]:
    """(pass seconds, longest gap between two iterations of a Python loop meanwhile)."""
    crop = classifier.input_spec["crop"]
    x = torch.randn(batch, 3, crop, crop)
    classifier(x)
    classifier(x)
    took: list[float] = []

    def run() -> None:
        start = time.perf_counter()
        classifier(x)
        took.append(time.perf_counter() - start)

    thread = threading.Thread(target=run)
    last, gap = time.perf_counter(), 0.0
    thread.start()
    while not took:
        now = time.perf_counter()
        gap, last = max(gap, now - last), now
    thread.join()
    return took[0], gap


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models", type=Path, nargs="+", help="artifacts (.pt, .pt2)")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for path in args.models:
        precision = Classifier.load(path).resolve_precision("fp32", torch.device("cpu"), 1)
        seconds, gap = stall(load(path, precision, fuse=True), args.batch)
        print(
            f"{path.name} ({precision}): pass {seconds * 1000:.0f} ms, longest stall of "
            f"another Python thread {gap * 1000:.0f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
