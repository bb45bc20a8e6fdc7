#!/usr/bin/env python3
"""What an idle server spends: each Gunicorn process's threads, CPU ms per second at rest.

Starts real Gunicorn (gunicorn.conf.py, --set WANWU_* settings), sends a few requests so every
worker is warm and has its request threads, then reads every thread's CPU time from /proc
before and after --seconds with no request at all. A thread that wakes on a timer (a poller,
a sweep) shows here; one blocked until work arrives shows 0. /proc counts in clock ticks
(10 ms on most Linux kernels), so run long enough for a small cost to show.
"""

from __future__ import annotations

import sys
import time

from benchkit import cpu, options
from benchkit.bench import header, load_images
from benchkit.loadgen import closed_loop


def main() -> int:
    parser = options.parser(__doc__, server=True, seconds=20)
    args = parser.parse_args()
    images = load_images(args.images)
    with options.start_server(args.model, args.set) as srv:
        closed_loop(srv.make(images), 4, 2)  # warm, with request threads started
        pids = [srv.pid, *srv.worker_pids()]
        before = {pid: cpu.thread_cpu(pid) for pid in pids}
        time.sleep(args.seconds)
        after = {pid: cpu.thread_cpu(pid) for pid in pids}
    print(header("An idle server's threads (scripts/idle_cpu.py)"))
    print(f"\n{args.seconds:g} s without a request; CPU ms per second\n")
    print("| process | thread | name | CPU ms/s |")
    print("|---|---:|---|---:|")
    for pid in pids:
        role = "master" if pid == srv.pid else "worker"
        for tid, (name, seconds) in sorted(cpu.cpu_used(before[pid], after[pid]).items()):
            print(f"| {role} {pid} | {tid} | {name} | {1000 * seconds / args.seconds:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
