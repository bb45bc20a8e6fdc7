#!/usr/bin/env python3
"""Offer several times the service's capacity and check it degrades gracefully.

Starts real Gunicorn (or targets --url), measures capacity with a short closed-loop run,
then offers `--factor` times that rate open-loop for `--seconds`. Reports accepted
latency percentiles, 503s (with Retry-After) and how fast they came back, client-side
failures, the server's RSS before and after, and latency once the load drops.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

from app.memory import smaps_rollup
from app.settings import DEFAULT_MODEL
from benchkit import options
from benchkit.bench import ROOT, header, load_images, percentile
from benchkit.loadgen import closed_loop, open_loop, raw_jpeg
from benchkit.server import GunicornServer


def rss_mib(server: GunicornServer) -> float:
    pids = [server.proc.pid, *server.worker_pids()]
    return sum(smaps_rollup(pid)["rss"] for pid in pids) / 2**20


def ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) * 1000:.0f}"


def main() -> int:
    parser = options.parser(__doc__, seconds=60, images=None)
    parser.add_argument("--factor", type=float, default=3.0, help="offered load / capacity")
    parser.add_argument("--queue-max", default="32", help="WANWU_QUEUE_MAX for the server")
    parser.add_argument("--timeout-ms", default="5000", help="WANWU_TIMEOUT_MS for the server")
    args = parser.parse_args()
    images = load_images(args.images)
    print(header("Overload (scripts/overload.py)"))
    with GunicornServer(
        Path("/tmp"),
        workers=1,
        model=ROOT / DEFAULT_MODEL,
        threads=0,
        queue_max=args.queue_max,
        timeout_ms=args.timeout_ms,
        http_threads=64,
    ) as server:
        make = raw_jpeg(server.url, images)
        closed_loop(make, 4, 3)
        calm = closed_loop(make, 1, 5)
        capacity = len(closed_loop(make, 16, 10)) / 10
        rate = capacity * args.factor
        cold = rss_mib(server)
        open_loop(make, rate, 5)  # warm-up: every request thread and malloc arena exists
        before = rss_mib(server)
        records = open_loop(make, rate, args.seconds)
        after = rss_mib(server)
        time.sleep(2)
        recovered = closed_loop(make, 1, 5)
    statuses = Counter(r.status for r in records)
    accepted = [r.latency for r in records if r.status == 200]
    rejected = [r for r in records if r.status == 503]
    print(
        f"- capacity (16 clients, closed loop): {capacity:.1f} req/s; offered {rate:.1f} req/s "
        f"({args.factor:g}x) for {args.seconds:g} s; queue_max={args.queue_max}, "
        f"timeout_ms={args.timeout_ms}"
    )
    print(f"- outcomes: {dict(statuses)}")
    print(
        f"- accepted: {len(accepted)} ({len(accepted) / args.seconds:.1f}/s), p50 "
        f"{ms(accepted, 50)} ms, p99 {ms(accepted, 99)} ms, max {ms(accepted, 100)} ms"
    )
    print(
        f"- 503: {len(rejected)}, all with Retry-After: "
        f"{all(r.retry_after for r in rejected)}, p50 {ms([r.latency for r in rejected], 50)} "
        f"ms, p99 {ms([r.latency for r in rejected], 99)} ms"
    )
    print(
        f"- server RSS: {cold:.0f} MiB idle, {before:.0f} MiB after a 5 s overload warm-up, "
        f"{after:.0f} MiB after the run ({100 * (after - before) / before:+.1f} %)"
    )
    calm_ms = [r.latency for r in calm]
    recovered_ms = [r.latency for r in recovered]
    print(
        f"- one client, before: p50 {ms(calm_ms, 50)} ms; after the load: p50 "
        f"{ms(recovered_ms, 50)} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
