"""Model-only timing: load an artifact as the service would and time its forward passes."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from app.model import Classifier


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


def load(model: Path, precision: str, fuse: bool = False, device: str = "cpu") -> Classifier:
    """Load `model` and prepare it on `device` in `precision`, as a worker does."""
    classifier = Classifier.load(model)
    classifier.prepare(torch.device(device), precision, fuse)
    return classifier


def best_rate(
    model: Path, precision: str, fuse: bool, threads: int, batches: list[int], device: str
) -> float:
    """Model-only images/s at the best of `batches` with `threads` torch threads."""
    torch.set_num_threads(threads)
    classifier = load(model, precision, fuse, device)
    return max(b / statistics.median(time_batches(classifier, b, 8)) for b in batches)
