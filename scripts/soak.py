#!/usr/bin/env python3
"""Soak: mixed load for a long time, with memory and latency reported minute by minute.

Starts real Gunicorn with its defaults and runs `--clients` closed-loop clients sending a
mix: single raw JPEGs, multipart requests of three images, and a bad request now and then
(expected 4xx). Every `--every` seconds it prints requests, error count, p50/p99 latency and
the server's memory (master + workers PSS). Not part of CI.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import requests

from app.memory import smaps_rollup
from app.settings import DEFAULT_MODEL
from benchkit import options
from benchkit.bench import ROOT, header, load_images, percentile
from benchkit.loadgen import closed_loop
from benchkit.server import GunicornServer


def mixed(url: str, images: list[tuple[str, bytes]]):
    """Nine good requests in ten (raw or three-file multipart), one unsupported type."""

    def make(session: requests.Session, n: int) -> requests.Response:
        name, data = images[n % len(images)]
        if n % 10 == 9:
            return session.post(
                f"{url}/predict",
                data=b"not an image",
                timeout=60,
                headers={"Content-Type": "text/plain"},
            )
        if n % 3 == 0:
            files = [("file", images[(n + i) % len(images)]) for i in range(3)]
            return session.post(f"{url}/predict?topk=5", files=files, timeout=60)
        return session.post(
            f"{url}/predict?lang=zh", data=data, timeout=60, headers={"Content-Type": "image/jpeg"}
        )

    return make


def main() -> int:
    parser = options.parser(__doc__, clients=8, images=None)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--every", type=float, default=60, help="seconds per report line")
    args = parser.parse_args()
    images = load_images(args.images)
    print(header("Soak (scripts/soak.py)"))
    print("\n| t (s) | requests | unexpected | p50 ms | p99 ms | server PSS MiB |")
    print("|---:|---:|---:|---:|---:|---:|")
    total: Counter[str] = Counter()
    with GunicornServer(Path("/tmp"), workers=1, model=ROOT / DEFAULT_MODEL, threads=0) as server:
        make = mixed(server.url, images)
        began = time.monotonic()
        while time.monotonic() - began < args.minutes * 60:
            records = closed_loop(make, args.clients, args.every)
            wrong = [r for r in records if r.status not in (200, 415)]
            total.update(str(r.status) for r in records)
            latencies = [r.latency for r in records if r.status == 200]
            pss = sum(smaps_rollup(p)["pss"] for p in [server.proc.pid, *server.worker_pids()])
            print(
                f"| {time.monotonic() - began:.0f} | {len(records)} | {len(wrong)} | "
                f"{percentile(latencies, 50) * 1000:.0f} | "
                f"{percentile(latencies, 99) * 1000:.0f} | {pss / 2**20:.0f} |",
                flush=True,
            )
    print(f"\nall outcomes: {dict(total)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
