#!/usr/bin/env python3
"""What an explanation costs, and that explanations cannot starve predictions.

One Gunicorn, the same photos. First one client, /predict and /explain taking turns for
--rounds rounds of --seconds each (a raw JPEG body; /explain answers the top class's heatmap
and overlay PNG): p50 of each and their ratio within each round. Then --flood clients send
/explain as fast as they are answered (waiting Retry-After after a 503, as a client should)
while --clients clients send /predict, against the same /predict load alone: predictions never
get a 503; explanations past WANWU_EXPLAIN_QUEUE_MAX do, with Retry-After.
"""

from __future__ import annotations

import sys
import threading
import time

import requests

from benchkit import options
from benchkit.bench import (
    ROOT,
    header,
    load_images,
)
from benchkit.loadgen import MakeRequest, closed_loop, post_images
from benchkit.measure import Row, failures, measure, settle

DEMO_MODEL = ROOT / "models" / "efficientnet_lite0.pt"


def main() -> int:
    parser = options.parser(__doc__, server=True, model=DEMO_MODEL, seconds=10, rounds=3, clients=4)
    parser.add_argument("--flood", type=int, default=16, help="/explain clients in the flood")
    args = parser.parse_args()
    settings = options.server_settings(args.set)
    images = load_images(args.images)
    jpeg = {"Content-Type": "image/jpeg"}
    print(header("Explanations (scripts/bench_explain.py)"))
    print(
        f"- server: {args.model.name}, workers={settings.worker_processes} "
        f"torch_threads={settings.torch_threads} max_batch={settings.max_batch} "
        f"queue_max={settings.queue_max} explain_queue_max={settings.explain_queue_max}; "
        f"{len(images)} photos, {args.seconds:g} s per measurement\n"
    )
    with options.start_server(args.model, args.set) as srv:
        routes = {
            "/predict": post_images(f"{srv.url}/predict", images, **jpeg),
            "/explain": post_images(f"{srv.url}/explain", images, **jpeg),
        }
        for make in routes.values():
            settle(make)
        print("## One client\n")
        print("| round | /predict p50 ms | /explain p50 ms | ratio | errors |")
        print("|---:|---:|---:|---:|---:|")
        ratios = []
        for n in range(1, args.rounds + 1):
            predict, explain = (measure(make, 1, args.seconds) for make in routes.values())
            ratios.append(explain.p50 / predict.p50)
            print(
                f"| {n} | {predict.p50:.1f} | {explain.p50:.1f} | {ratios[-1]:.2f} | "
                f"{failures(predict.records + explain.records)} |",
                flush=True,
            )
        print(f"\nmedian ratio: {sorted(ratios)[len(ratios) // 2]:.2f}\n")

        print(f"## {args.clients} /predict clients, alone and beside {args.flood} /explain\n")
        print("| load | /predict req/s | p50 ms | p99 ms | /predict errors | /explain req/s | "
              "/explain errors |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|---:|")
        alone = measure(routes["/predict"], args.clients, args.seconds)
        print(row("alone", alone, None, args.seconds), flush=True)
        flood: list = []
        thread = threading.Thread(
            target=lambda: flood.extend(
                closed_loop(polite(routes["/explain"]), args.flood, args.seconds + 2)
            )
        )
        thread.start()
        beside = measure(routes["/predict"], args.clients, args.seconds)
        thread.join()
        print(row(f"beside {args.flood} /explain", beside, flood, args.seconds + 2))
    return 0


def polite(make: MakeRequest) -> MakeRequest:
    """`make`, waiting the Retry-After of a 503 before the next request."""

    def send(session: requests.Session, n: int) -> requests.Response:
        response = make(session, n)
        if response.status_code == 503:
            time.sleep(float(response.headers.get("Retry-After", "1")))
        return response

    return send


def row(load: str, predict: Row, flood: list | None, flood_seconds: float) -> str:
    """One line of the flood table."""
    explained = (
        "" if flood is None else f"{sum(r.status == 200 for r in flood) / flood_seconds:.1f}"
    )
    explain_errors = "" if flood is None else failures(flood)
    if flood:
        retry = {r.retry_after for r in flood if r.status == 503}
        explain_errors += f" (Retry-After: {', '.join(sorted(retry))})" if retry else ""
    return (
        f"| {load} | {predict.rate:.1f} | {predict.p50:.0f} | {predict.p99:.0f} | "
        f"{predict.errors} | {explained} | {explain_errors} |"
    )


if __name__ == "__main__":
    sys.exit(main())
