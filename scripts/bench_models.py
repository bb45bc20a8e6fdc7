#!/usr/bin/env python3
"""Memory each extra served model costs: real Gunicorn over repositories of 1..N models.

Each run serves N copies of one artifact (separate models, each loaded on its own) from a
model repository, waits for every worker to warm up, classifies one image with each model,
then reads the anonymous PSS of the master and its workers (heap and weights, shared
copy-on-write pages counted once; libraries left out, since every torch process on the machine
maps them and their PSS moves with what else runs) and each worker's private memory. The cost
of a model is the growth from N-1 to N models.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import requests

from app import memory
from app.artifact import manifest_path
from app.settings import DEFAULT_MODEL
from benchkit import options
from benchkit.bench import ROOT, header
from benchkit.images import image_bytes
from benchkit.server import GunicornServer

MIB = 1024 * 1024


def repository(root: Path, artifact: Path, models: int) -> Path:
    """A repository of `models` models, each version 1 of `artifact` (symlinks, no copies)."""
    folder = root / f"repo-{models}"
    for i in range(models):
        version = folder / f"m{i}" / "1"
        version.mkdir(parents=True)
        os.symlink(artifact.resolve(), version / artifact.name)
        os.symlink(manifest_path(artifact).resolve(), manifest_path(version / artifact.name))
    return folder


def measure(root: Path, artifact: Path, models: int, args: argparse.Namespace) -> dict[str, float]:
    """Serve `models` models; return the server's PSS and a worker's private memory, MiB."""
    folder = repository(root, artifact, models)
    settings = {"model_repository": folder, "max_batch": 4, "cpu_fusion": args.cpu_fusion}
    with GunicornServer(root, workers=args.workers, **settings) as server:
        for i in range(models):
            requests.post(
                f"{server.url}/predict?model=m{i}",
                data=image_bytes(),
                headers={"Content-Type": "image/jpeg"},
                timeout=60,
            ).raise_for_status()
        pids = [server.pid, *server.worker_pids()]
        rollups = [memory.smaps_rollup(pid) for pid in pids]
    return {
        "pss": sum(r["pss_anon"] for r in rollups) / MIB,
        "master_private": rollups[0]["private"] / MIB,
        "worker_private": max(r["private"] for r in rollups[1:]) / MIB,
    }


def main() -> None:
    parser = options.parser(__doc__, model=ROOT / DEFAULT_MODEL, workers=2)
    parser.add_argument("--models", type=int, default=3, help="measure 1..N models")
    parser.add_argument("--cpu-fusion", type=int, choices=(0, 1), default=1, help="0 or 1")
    args = parser.parse_args()
    print(header("Memory per served model"))
    print(
        f"artifact {args.model}, {args.workers} workers, WANWU_MAX_BATCH=4, "
        f"WANWU_CPU_FUSION={args.cpu_fusion}\n"
    )
    print(
        "| models | server anon. PSS MiB | + per model | master private MiB | worker private MiB |"
    )
    print("|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        previous = None
        for n in range(1, args.models + 1):
            row = measure(Path(tmp), args.model, n, args)
            growth = f"{row['pss'] - previous:.0f}" if previous is not None else "-"
            previous = row["pss"]
            print(
                f"| {n} | {row['pss']:.0f} | {growth} | {row['master_private']:.0f} "
                f"| {row['worker_private']:.0f} |"
            )


if __name__ == "__main__":
    main()
