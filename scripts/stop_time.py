#!/usr/bin/env python3
"""How long a warm server takes to stop on SIGTERM, idle and with requests in flight.

Starts real Gunicorn `--repeats` times with the default model and `--workers` workers; each
time, once every worker is warm, sends SIGTERM to the master and times its exit. `--load N`
first starts N concurrent /predict requests and signals once the workers have taken them all:
every one must still be answered (200), and the time then includes answering those in flight.
"""

from __future__ import annotations

import signal
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from app.settings import DEFAULT_MODEL
from benchkit import options
from benchkit.bench import ROOT, header, percentile
from benchkit.images import image_bytes
from benchkit.server import GunicornServer


def in_flight(url: str) -> float:
    """Requests the workers hold, less the scrape itself."""
    families = text_string_to_metric_families(requests.get(f"{url}/metrics", timeout=30).text)
    return next(f.samples[0].value for f in families if f.name == "wanwu_requests_in_flight") - 1


def stop_once(workers: int, load: int, log_dir: Path) -> tuple[float, list[int]]:
    """Seconds from SIGTERM to the master's exit, and the status of each request in flight."""
    server = GunicornServer(
        log_dir, workers=workers, model=ROOT / DEFAULT_MODEL, http_threads=max(8, load)
    ).start()
    image = image_bytes(seed=0)

    def predict(_: int) -> int:
        headers = {"Content-Type": "image/jpeg"}
        url = f"{server.url}/predict"
        return requests.post(url, data=image, headers=headers, timeout=120).status_code

    with ThreadPoolExecutor(max(1, load)) as pool:
        answers = [pool.submit(predict, n) for n in range(load)]
        # Until the workers have taken every request (held, or already answered).
        while load and in_flight(server.url) + sum(a.done() for a in answers) < load:
            time.sleep(0.005)
        sent = time.monotonic()
        server.signal(signal.SIGTERM)
        server.proc.wait(120)
        took = time.monotonic() - sent
        codes = [a.result() for a in answers]
    server.stop()
    return took, codes


def main() -> int:
    parser = options.parser(__doc__, workers=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--load", type=int, default=0, help="requests in flight at SIGTERM")
    args = parser.parse_args()
    print(header("Stop time on SIGTERM (scripts/stop_time.py)"))
    print(f"workers={args.workers} load={args.load} repeats={args.repeats}")
    times, codes = [], []
    with tempfile.TemporaryDirectory() as logs:
        for _ in range(args.repeats):
            took, answered = stop_once(args.workers, args.load, Path(logs))
            times.append(took)
            codes += answered
    print("seconds to exit: " + " ".join(f"{t:.2f}" for t in times))
    print(f"median {percentile(times, 50):.2f} s, max {max(times):.2f} s")
    if args.load:
        print(f"requests in flight answered 200: {codes.count(200)} of {len(codes)}")
    return 0 if codes.count(200) == len(codes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
