#!/usr/bin/env python3
"""Switching a model's version under load: the time it takes, what clients see, the memory.

Real Gunicorn serves one model from a repository (version 1 preloaded in the master, shared
copy-on-write), while closed-loop clients classify photos with it. Each round makes the other
version the default through the management API (`PUT /models/{m}/{v}/set-default`): every
worker loads and warms it beside the served one, then all switch at once, and the old one
drains and stops. Reported per round: the management call's own split (staged: loaded and
warmed everywhere; switched: swapped everywhere), the clients' failures and latency while the
call ran against the rounds' quiet stretches, and the server's anonymous PSS and a worker's
private memory after it (a version loaded at runtime is each worker's own copy).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from app import memory
from app.artifact import manifest_path
from app.settings import DEFAULT_MODEL
from benchkit import options
from benchkit.bench import ROOT, header
from benchkit.images import image_bytes, sample_photos
from benchkit.loadgen import Record, closed_loop, post_images
from benchkit.server import GunicornServer

MIB = 1024 * 1024
KEY = "bench-admin"


def repository(root: Path, artifact: Path) -> Path:
    """Versions 1 (served at start: pinned) and 2 of model `m`, each `artifact` (symlinks:
    loaded separately)."""
    for version in ("1", "2"):
        folder = root / "m" / version
        folder.mkdir(parents=True)
        os.symlink(artifact.resolve(), folder / artifact.name)
        os.symlink(manifest_path(artifact).resolve(), manifest_path(folder / artifact.name))
    return root


def spread(seconds: list[float]) -> str:
    """p50 / p99 in ms."""
    if len(seconds) < 2:
        return "-"
    q = statistics.quantiles(seconds, n=100)
    return f"{q[49] * 1000:.0f} / {q[98] * 1000:.0f}"


def memory_mib(server: GunicornServer) -> dict[str, float]:
    """The server's anonymous PSS and its larger worker's private memory, MiB."""
    rollups = [memory.smaps_rollup(pid) for pid in [server.pid, *server.worker_pids()]]
    return {
        "pss": sum(r["pss_anon"] for r in rollups) / MIB,
        "private": max(r["private"] for r in rollups[1:]) / MIB,
    }


def main() -> None:
    parser = options.parser(__doc__, model=ROOT / DEFAULT_MODEL, clients=8, workers=2)
    parser.add_argument("--rounds", type=int, default=4, help="switches, alternating 2 and 1")
    parser.add_argument("--quiet-s", type=float, default=5.0, help="load between switches")
    parser.add_argument("--cpu-fusion", type=int, choices=(0, 1), default=1, help="0 or 1")
    args = parser.parse_args()
    photos = [p.read_bytes() for p in sample_photos(32)] or [image_bytes(size=(500, 375))]
    print(header("Switching versions under load"))
    print(
        f"artifact {args.model}, {args.workers} workers, WANWU_CPU_FUSION={args.cpu_fusion}, "
        f"{args.clients} clients, "
        f"{len(photos)} images, {args.quiet_s:g} s of load between switches\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = repository(Path(tmp) / "repository", args.model)
        settings = {
            "model_repository": root,
            "admin_keys": KEY,
            "pinned_versions": "m=1",
            "cpu_fusion": args.cpu_fusion,
        }
        with GunicornServer(Path(tmp), workers=args.workers, management=True, **settings) as server:
            rounds, records = switch_under_load(server, photos, args)
    print(
        f"before: server anon. PSS {rounds[0]['pss']:.0f} MiB, "
        f"worker private {rounds[0]['private']:.0f} MiB\n"
    )
    print(
        "| round | to | staged s | switched s | call s | requests in call | failed "
        "| p50 / p99 ms in call | p50 / p99 ms quiet | PSS MiB | worker private MiB |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, row in enumerate(rounds[1:], 1):
        during = [r for r in records if row["began"] <= r.started < row["ended"]]
        quiet = [r for r in records if row["began"] - args.quiet_s <= r.started < row["began"]]
        print(
            f"| {n} | {row['version']} | {row['staged_s']:.2f} | {row['switched_s']:.3f} "
            f"| {row['ended'] - row['began']:.2f} | {len(during)} | {failed(during)} "
            f"| {spread([r.latency for r in during])} | {spread([r.latency for r in quiet])} "
            f"| {row['pss']:.0f} | {row['private']:.0f} |"
        )
    print(f"\n{len(records)} requests in all, {failed(records)} failed")


def switch_under_load(
    server: GunicornServer, photos: list[bytes], args: argparse.Namespace
) -> tuple[list[dict], list[Record]]:
    """Run the clients (benchkit.loadgen) while the rounds switch; each round's figures
    (the first: memory before any switch) and every request's record."""
    images = [(f"{i}.jpg", photo) for i, photo in enumerate(photos)]
    make = post_images(f"{server.url}/predict?model=m", images, **{"Content-Type": "image/jpeg"})
    stop = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        load = pool.submit(closed_loop, make, args.clients, math.inf, until=stop)
        time.sleep(args.quiet_s)
        rounds = [memory_mib(server)]
        for n in range(1, args.rounds + 1):
            version = "2" if n % 2 else "1"
            began = time.monotonic()
            answer = requests.put(
                f"{server.management_url}/models/m/{version}/set-default",
                headers={"Authorization": f"Bearer {KEY}"},
                timeout=600,
            )
            ended = time.monotonic()
            answer.raise_for_status()
            time.sleep(args.quiet_s)
            rounds.append(
                {
                    "version": version,
                    "began": began,
                    "ended": ended,
                    **answer.json(),
                    **memory_mib(server),
                }
            )
        stop.set()
        return rounds, load.result()


def failed(records: list[Record]) -> int:
    return sum(r.status != 200 for r in records)


if __name__ == "__main__":
    main()
