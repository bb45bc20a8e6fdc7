#!/usr/bin/env python3
"""One normal client's latency with and without slow and idle attackers (issue #17's target).

Starts real Gunicorn with default settings (or those given with --set), optionally behind
the shipped nginx config (--nginx), and measures one closed-loop client posting JPEGs: first
alone, then while 1,000 idle keep-alive connections, 200 slowloris connections (a header byte
every 2 s) and 50 slow POSTs (a body byte a second) hold on, all from loopback addresses
spread as a botnet's would be (50, 20 and 10 connections per address); --flood adds that
many connections from one more address, re-opened as fast as the server closes them.
Reports the client's p50/p99 and failures in both phases, each worker's RSS, and how the
attack connections ended.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from contextlib import nullcontext
from pathlib import Path

from app.memory import smaps_rollup
from benchkit import options
from benchkit.attacks import Attack, intake_metrics, spread, wait_until
from benchkit.bench import header, load_images, percentile
from benchkit.loadgen import Record, closed_loop, raw_jpeg
from benchkit.nginx import NginxProxy


def worker_rss_mib(server) -> list[float]:  # noqa: ANN001  (a GunicornServer)
    return [smaps_rollup(pid)["rss"] / 2**20 for pid in server.worker_pids()]


def summary(records: list[Record]) -> tuple[float, float, int]:
    """(p50 ms, p99 ms, failed requests) of one phase."""
    ok = [r.latency for r in records if r.status == 200]
    return percentile(ok, 50) * 1000, percentile(ok, 99) * 1000, len(records) - len(ok)


def main() -> int:
    parser = options.parser(__doc__, server=True, seconds=30)
    parser.add_argument("--idle", type=int, default=1000, help="idle keep-alive connections")
    parser.add_argument("--slowloris", type=int, default=200)
    parser.add_argument("--slow-post", type=int, default=50)
    parser.add_argument("--flood", type=int, default=0, help="connections from one address")
    parser.add_argument("--nginx", action="store_true", help="through deploy/nginx")
    args = parser.parse_args()
    images = load_images(args.images, limit=16)
    print(header("Slow and idle clients (scripts/attack_bench.py)"))
    with options.start_server(args.model, args.set) as server:
        proxy = NginxProxy(Path("/tmp"), [f"127.0.0.1:{server.port}"]) if args.nginx else None
        with proxy or nullcontext():
            front = proxy or server
            client = raw_jpeg(front.url, images)
            closed_loop(client, 1, 3)  # warm-up
            calm = closed_loop(client, 1, args.seconds)
            rss_calm = worker_rss_mib(server)
            before = intake_metrics(server.url)
            attacks = [
                Attack("keepalive", front.port, args.idle, 3 * args.seconds, spread(20)),
                Attack(
                    "slowloris",
                    front.port,
                    args.slowloris,
                    3 * args.seconds,
                    spread(10, "127.2.0.1"),
                ),
                Attack(
                    "slow_post",
                    front.port,
                    args.slow_post,
                    3 * args.seconds,
                    spread(5, "127.3.0.1"),
                    interval=1.0,
                ),
            ]
            if args.flood:
                attacks.append(
                    Attack("flood", front.port, args.flood, 3 * args.seconds, ["127.4.0.1"])
                )
            total = args.idle + args.slowloris + args.slow_post + args.flood
            for attack in attacks:
                attack.start()
            rss_peak = rss_calm
            try:
                wait_until(lambda: sum(a.stats.opened for a in attacks) >= total, 60, "attack up")
                peak_open = intake_metrics(server.url)["open"]
                result: dict[str, list[Record]] = {}
                loader = threading.Thread(
                    target=lambda: result.update(r=closed_loop(client, 1, args.seconds))
                )
                loader.start()
                while loader.is_alive():
                    rss_peak = [
                        max(a, b) for a, b in zip(rss_peak, worker_rss_mib(server), strict=True)
                    ]
                    time.sleep(1)
                loader.join()
                attacked = result["r"]
            finally:
                for attack in attacks:
                    attack.stop()
            after = intake_metrics(server.url)
    closes = {
        k: int(v - before.get(k, 0)) for k, v in after.items() if k not in ("open", "buffered")
    }
    for phase, records in (("alone", calm), ("under attack", attacked)):
        p50, p99, failed = summary(records)
        statuses = dict(Counter(r.status for r in records))
        print(
            f"- {phase}: {len(records)} requests, p50 {p50:.0f} ms, p99 {p99:.0f} ms, "
            f"failed {failed} {statuses}"
        )
    print(f"- p99 under attack / alone: {summary(attacked)[1] / summary(calm)[1]:.2f}")
    print(
        f"- attack: {total} connections ({args.idle} idle keep-alive, {args.slowloris} "
        f"slowloris, {args.slow_post} slow POST, {args.flood} flood)"
        f"{' through nginx' if args.nginx else ''}; "
        f"server held {peak_open:.0f} open at the start"
    )
    for attack in attacks:
        s = attack.stats
        print(
            f"  - {attack.kind}: opened {s.opened}, closed by the server {s.closed_by_server}, "
            f"refused {s.refused}, answers {s.answers}"
        )
    print(f"- server's early closes meanwhile: {closes}")
    print(
        f"- worker RSS MiB: alone {[round(x) for x in rss_calm]}, "
        f"peak under attack {[round(x) for x in rss_peak]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
