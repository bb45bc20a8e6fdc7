#!/usr/bin/env python3
"""Socket-level fuzzing of the front door while normal clients run (bounded in time, not CI).

Starts real Gunicorn (defaults, or --set), runs --clients closed-loop clients posting JPEGs,
and meanwhile sends mutated requests from benchkit/wire.py's corpus over raw sockets for
--seconds: each a random case with random mutations (bytes flipped, inserted, dropped or
repeated, lines duplicated or cut, line endings changed, two cases spliced, the rest
truncated), from --senders threads at once. With --killer it sends instead the request that
used to kill a worker (a Content-Length of 5,000 digits), --rate a second.

Reports the cases sent and how they ended, 5xx answers other than 503 (must be 0), worker
restarts (PIDs before and after, must be 0), tracebacks in the log, and the normal clients'
requests and failures (must be 0).
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from benchkit.attacks import intake_metrics
from benchkit.bench import add_server_arguments, header, load_images, start_server
from benchkit.loadgen import closed_loop, raw_jpeg
from benchkit.wire import WireCase, exchange, wire_cases

KILLER = next(case for case in wire_cases() if case.name == "cl-5000-digits")


def mutate(rng: random.Random, data: bytes, corpus: list[WireCase]) -> bytes:
    """One to four random edits of `data`."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(out) + 1)
        edit = rng.randrange(8)
        if edit == 0 and out:  # flip a byte
            out[min(at, len(out) - 1)] = rng.randrange(256)
        elif edit == 1:  # insert a byte a framing parser cares about
            out[at:at] = rng.choice([b"\r", b"\n", b"\x00", b" ", b"\t", b":", b"\x7f", b"\xff"])
        elif edit == 2:  # drop a run
            del out[at : at + rng.randint(1, 16)]
        elif edit == 3:  # repeat a run
            out[at:at] = out[at : at + rng.randint(1, 64)] * rng.randint(2, 50)
        elif edit == 4:  # duplicate a line
            lines = bytes(out).split(b"\r\n")
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
            out = bytearray(b"\r\n".join(lines))
        elif edit == 5:  # change the line endings
            out = bytearray(bytes(out).replace(b"\r\n", rng.choice([b"\n", b"\r", b"\r\r\n"])))
        elif edit == 6:  # splice another case in
            out[at:] = rng.choice(corpus).data
        else:  # truncate
            del out[at:]
    return bytes(out)


def fuzz(port: int, seconds: float, senders: int, seed: int, killer_rate: float) -> Counter:
    """Send cases until `seconds` pass; count how each ended."""
    corpus, outcomes, lock = wire_cases(), Counter(), threading.Lock()
    stop_at = time.monotonic() + seconds

    def sender(n: int) -> None:
        rng = random.Random(seed + n)
        while (now := time.monotonic()) < stop_at:
            if killer_rate:
                data, half_close = KILLER.data, False
            else:
                case = rng.choice(corpus)
                data, half_close = mutate(rng, case.data, corpus), case.half_close
            outcome = exchange(port, data, half_close, timeout=30)
            kinds = ["sent"]
            first = outcome.statuses[0] if outcome.statuses else None
            kinds.append(f"{first // 100}xx" if first else "no answer")
            kinds += ["5xx (not 503)"] * sum(s >= 500 and s != 503 for s in outcome.statuses)
            kinds += [] if outcome.closed else ["left open (30 s)"]
            with lock:
                outcomes.update(kinds)
            if killer_rate:  # open loop: one every senders / rate seconds per sender
                time.sleep(max(0.0, now + senders / killer_rate - time.monotonic()))

    with ThreadPoolExecutor(senders) as pool:
        list(pool.map(sender, range(senders)))
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_server_arguments(parser)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--clients", type=int, default=4, help="normal closed-loop clients")
    parser.add_argument("--senders", type=int, default=8, help="fuzzing threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--killer", action="store_true", help="send only the killer request")
    parser.add_argument("--rate", type=float, default=5, help="killer requests a second")
    args = parser.parse_args()
    images = load_images(args.images, limit=16)
    print(header("Socket-level fuzzing of the front door (scripts/fuzz_http.py)"))
    with start_server(args.model, args.set) as server:
        client = raw_jpeg(server.url, images)
        closed_loop(client, 1, 2)  # warm-up
        pids = sorted(server.worker_pids())
        normal: list = []
        clients = threading.Thread(
            target=lambda: normal.extend(closed_loop(client, args.clients, args.seconds))
        )
        clients.start()
        outcomes = fuzz(
            server.port, args.seconds, args.senders, args.seed, args.rate if args.killer else 0
        )
        clients.join()
        restarted = len(set(pids) - set(server.worker_pids()))
        fenced = intake_metrics(server.url).get("error", 0)  # answered 400, but a bug
        log = server.log()
    failed = Counter(r.status for r in normal if r.status != 200)
    print(f"- cases sent: {outcomes.pop('sent', 0)} ({'killer' if args.killer else 'mutated'})")
    for kind, count in sorted(outcomes.items()):
        print(f"  - {kind}: {count}")
    print(f"- worker restarts: {restarted}; tracebacks in the log: {log.count('Traceback')}")
    print(f"- exceptions the intake's fence caught: {fenced:g}")
    print(f"- normal clients: {len(normal)} requests, {sum(failed.values())} failed {dict(failed)}")
    bad = restarted or outcomes["5xx (not 503)"] or failed or fenced or "Traceback" in log
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
