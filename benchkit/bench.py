"""Shared pieces of the benchmark scripts: machine description, percentiles, corpus loading
(their command line is benchkit.options)."""

from __future__ import annotations

import multiprocessing
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import requests
import torch
from prometheus_client.parser import text_string_to_metric_families

from app import imaging
from app.artifact import read_manifest
from app.runtime import cpu_supports_bf16
from app.settings import usable_cpus

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IMAGES = ROOT.parent / "shared" / "imagenet-samples"
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".heif", ".heic", ".avif")


def cpu_model() -> str:
    """Return the CPU's model name from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def device_name(device: str) -> str:
    """Name the device a benchmark runs on (the GPU's model for CUDA)."""
    if device.startswith("cuda"):
        return f"{device}: {torch.cuda.get_device_name(torch.device(device))}"
    return f"cpu: {cpu_model()}"


def header(title: str) -> str:
    """Describe the run: what, where, with which software, and the exact command."""
    return "\n".join(
        [
            f"# {title}",
            f"- machine: {cpu_model()}, {usable_cpus()} usable CPUs, "
            f"bf16 native: {cpu_supports_bf16()}",
            f"- software: Python {platform.python_version()}, torch {torch.__version__}",
            f"- command: {shlex.join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])}",
        ]
    )


def percentile(values: list[float], q: float) -> float:
    """Return the q-th percentile (0-100) by linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def load_images(directory: Path | None, limit: int | None = None) -> list[tuple[str, bytes]]:
    """Read the image files in `directory` (default: ../shared/imagenet-samples)."""
    directory = directory or DEFAULT_IMAGES
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"no images in {directory}: pass --images DIR")
    return [(p.name, p.read_bytes()) for p in files[:limit]]


def decode_times(model: Path, images: list[tuple[str, bytes]], policy: str) -> list[float]:
    """CPU ms of decoding each image as the service does under `policy` (exact or fast),
    for `model`'s input, in this thread: libjpeg's array where the service takes it."""
    spec = read_manifest(model)["input"]
    times = []
    for _, data in images:
        started = time.thread_time()
        imaging.decode_for(data, spec, 10**9, policy)
        times.append((time.thread_time() - started) * 1000)
    return times


def histogram(url: str, name: str) -> tuple[float, float]:
    """Sum and count of one of the service's Prometheus histograms so far, over all its
    label sets (each served model and version has its own)."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    family = next(f for f in text_string_to_metric_families(text) if f.name == name)
    totals = {f"{name}_sum": 0.0, f"{name}_count": 0.0}
    for sample in family.samples:
        if sample.name in totals:
            totals[sample.name] += sample.value
    return totals[f"{name}_sum"], totals[f"{name}_count"]


def batch_stats(url: str) -> tuple[float, float]:
    """(images, passes) served so far: sum and count of the wanwu_batch_size histogram."""
    return histogram(url, "wanwu_batch_size")


def in_fresh_process(fn: Callable[..., Any], *args: Any) -> Any:
    """Run `fn(*args)` in a new interpreter and return its result.

    For each torch thread count: oneDNN caches the kernels it builds for the thread count
    current at the time, so a second count measured in the same process is measured wrong.
    """
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()
