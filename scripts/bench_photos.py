#!/usr/bin/env python3
"""Phone photos against ImageNet-sized ones, on the same server, per decode policy.

For each WANWU_DECODE policy (--policies), starts real Gunicorn (gunicorn.conf.py, default
settings unless --set) and drives closed-loop load (raw-body POSTs, one image each) with each
corpus in turn at each client count: the ImageNet samples, then the folders of
`python -m benchkit.phones --out DIR` given by --phones (12mp, then mixed, then heif). Reports
images/s and latency per corpus, the phone corpora's ratios to the ImageNet photos measured a
few seconds apart on the same server, and each worker's peak RSS (VmHWM) after each corpus.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from app import memory
from benchkit import options
from benchkit.bench import header, load_images, percentile
from benchkit.loadgen import closed_loop, raw_jpeg

CORPORA = ("12mp", "mixed", "heif")


def main() -> int:
    parser = options.parser(__doc__, server=True, concurrency="1,8", seconds=10)
    parser.add_argument("--phones", type=Path, required=True, help="benchkit.phones --out DIR")
    parser.add_argument("--corpora", default="12mp", help=f"phone folders, from {CORPORA}")
    parser.add_argument("--policies", default="fast,exact", help="WANWU_DECODE values")
    args = parser.parse_args()
    corpora = {"imagenet": load_images(args.images)}
    corpora |= {name: load_images(args.phones / name) for name in args.corpora.split(",")}
    levels = args.concurrency
    print(header("Phone photos vs ImageNet-sized photos (scripts/bench_photos.py)"))
    for name, images in corpora.items():
        mib = sum(len(d) for _, d in images) / len(images) / 2**20
        print(f"- {name}: {len(images)} images, {mib:.2f} MiB each on average")
    print(
        "\n| decode | corpus | clients | images/s | p50 ms | p99 ms | errors "
        "| images/s vs imagenet | p50 vs imagenet | peak RSS per worker |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for policy in args.policies.split(","):
        with options.start_server(args.model, [*args.set, f"DECODE={policy}"]) as srv:
            closed_loop(raw_jpeg(srv.url, corpora["imagenet"]), 4, 3)  # settle
            baseline: dict[int, tuple[float, float]] = {}
            for name, images in corpora.items():
                make = raw_jpeg(srv.url, images)
                for clients in levels:
                    began = time.monotonic()
                    records = closed_loop(make, clients, args.seconds)
                    elapsed = time.monotonic() - began
                    latencies = [r.latency for r in records if r.status == 200]
                    rate, p50 = len(latencies) / elapsed, percentile(latencies, 50) * 1000
                    baseline.setdefault(clients, (rate, p50))
                    base_rate, base_p50 = baseline[clients]
                    peaks = [memory.peak_rss(pid) / 2**20 for pid in srv.worker_pids()]
                    print(
                        f"| {policy} | {name} | {clients} | {rate:.1f} | {p50:.1f} | "
                        f"{percentile(latencies, 99) * 1000:.1f} | "
                        f"{len(records) - len(latencies)} | {100 * rate / base_rate:.0f} % | "
                        f"{p50 / base_p50:.2f}x | "
                        f"{', '.join(f'{p:.0f}' for p in peaks)} MiB |",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
