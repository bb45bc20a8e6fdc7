#!/usr/bin/env python3
"""How closed-loop keep-alive clients end up spread over Gunicorn's workers.

Starts real Gunicorn (gunicorn.conf.py, --workers single-threaded workers, as tests/server.py
starts them), starts
--clients closed-loop clients at once, and after a few seconds counts each worker's
established connections (psutil). Repeats --runs times. With --plain the workers are
Gunicorn's stock gthread workers instead of app/balance.py's, to compare.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import psutil

from app.settings import DEFAULT_MODEL
from benchkit import options
from benchkit.bench import ROOT, header, load_images
from benchkit.loadgen import closed_loop, raw_jpeg
from benchkit.server import GunicornServer


def connections_per_worker(pids: list[int], port: int) -> list[int]:
    """Established connections on `port` held by each worker, smallest first."""
    return sorted(
        sum(
            1
            for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
        )
        for pid in pids
    )


def main() -> int:
    parser = options.parser(__doc__, workers=2, clients=32, images=None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--plain", action="store_true", help="stock gthread workers")
    args = parser.parse_args()
    if args.plain:
        os.environ["GUNICORN_CMD_ARGS"] = "--worker-class gthread"  # overrides the config file
    images = load_images(args.images)
    print(header("Connection split (scripts/connection_split.py)"))
    print(
        f"- {args.workers} workers, {args.clients} clients, {'plain' if args.plain else 'balanced'}"
    )
    out = Path(os.environ.get("TMPDIR", "/tmp"))
    for run in range(1, args.runs + 1):
        with GunicornServer(out, workers=args.workers, model=ROOT / DEFAULT_MODEL) as srv:
            load = threading.Thread(
                target=closed_loop, args=(raw_jpeg(srv.url, images), args.clients, 6)
            )
            load.start()
            time.sleep(3)
            split = connections_per_worker(srv.worker_pids(), srv.port)
            load.join()
        print(f"run {run}: connections per worker {split}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
