#!/usr/bin/env python3
"""Socket-level fuzzing of the front door while normal clients run (bounded in time, not CI).

Starts real Gunicorn (defaults, or --set), runs --clients closed-loop clients posting JPEGs,
and meanwhile sends mutated requests from benchkit/wire.py's corpus over raw sockets for
--seconds: each a random case with random mutations (bytes flipped, inserted, dropped or
repeated, lines duplicated or cut, line endings changed, two cases spliced, the rest
truncated), from --senders threads at once. With --case NAME it sends instead that one case
unmutated, --rate a second: --killer is the request that used to kill a worker (a
Content-Length of 5,000 digits); `--case oip-outputs-10000` asks for one output 10,000 times
(once 229 MB of JSON); `--case refused-unread-body-404-then-next` is refused before its body
is read, then a request follows on the same connection, which must be answered too.

Reports the cases sent and how they ended, 5xx answers other than 503 (must be 0), worker
restarts (PIDs before and after, must be 0), tracebacks in the log, each worker's peak memory
(VmHWM, reset once warm) against its size then, and the normal clients' requests and
failures (must be 0).
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from benchkit import options
from benchkit.attacks import intake_metrics, peak_memory, reset_peak_memory
from benchkit.bench import header, load_images
from benchkit.loadgen import closed_loop, raw_jpeg
from benchkit.wire import WireCase, exchange, wire_cases

CASES = {case.name: case for case in wire_cases()}
MIB = 1 << 20


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


def fuzz(
    port: int, seconds: float, senders: int, seed: int, only: WireCase | None, rate: float
) -> Counter:
    """Send cases (or `only`, `rate` a second) until `seconds` pass; count how each ended."""
    corpus, outcomes, lock = wire_cases(), Counter(), threading.Lock()
    stop_at = time.monotonic() + seconds

    def sender(n: int) -> None:
        rng = random.Random(seed + n)
        while (now := time.monotonic()) < stop_at:
            if only is not None:
                data, half_close = only.data, only.half_close
            else:
                case = rng.choice(corpus)
                data, half_close = mutate(rng, case.data, corpus), case.half_close
            outcome = exchange(port, data, half_close, timeout=30)
            kinds = ["sent"]
            first = outcome.statuses[0] if outcome.statuses else None
            kinds.append(f"{first // 100}xx" if first else "no answer")
            kinds += ["5xx (not 503)"] * sum(s >= 500 and s != 503 for s in outcome.statuses)
            kinds += [] if outcome.closed else ["left open (30 s)"]
            if only is not None and only.then is not None:
                answered = outcome.statuses[1:] == [only.then]
                kinds.append("next request answered" if answered else "next request lost")
            with lock:
                outcomes.update(kinds)
            if only is not None:  # open loop: one every senders / rate seconds per sender
                time.sleep(max(0.0, now + senders / rate - time.monotonic()))

    with ThreadPoolExecutor(senders) as pool:
        list(pool.map(sender, range(senders)))
    return outcomes


def main() -> int:
    parser = options.parser(__doc__, server=True, seconds=30, clients=4)
    parser.add_argument("--senders", type=int, default=8, help="fuzzing threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--case", choices=sorted(CASES), help="send only this case, unmutated")
    parser.add_argument(
        "--killer",
        action="store_const",
        const="cl-5000-digits",
        dest="case",
        help="--case cl-5000-digits",
    )
    parser.add_argument("--rate", type=float, default=5, help="--case requests a second")
    args = parser.parse_args()
    only = CASES[args.case] if args.case else None
    images = load_images(args.images, limit=16)
    print(header("Socket-level fuzzing of the front door (scripts/fuzz_http.py)"))
    with options.start_server(args.model, args.set) as server:
        client = raw_jpeg(server.url, images)
        closed_loop(client, 1, 2)  # warm-up
        pids = sorted(server.worker_pids())
        for pid in pids:
            reset_peak_memory(pid)
        warm = {pid: peak_memory(pid) for pid in pids}
        normal: list = []
        clients = threading.Thread(
            target=lambda: normal.extend(closed_loop(client, args.clients, args.seconds))
        )
        clients.start()
        outcomes = fuzz(server.port, args.seconds, args.senders, args.seed, only, args.rate)
        clients.join()
        peaks = {pid: peak_memory(pid) for pid in pids if pid in server.worker_pids()}
        restarted = len(set(pids) - set(server.worker_pids()))
        fenced = intake_metrics(server.url).get("error", 0)  # answered 400, but a bug
        log = server.log()
    failed = Counter(r.status for r in normal if r.status != 200)
    print(f"- cases sent: {outcomes.pop('sent', 0)} ({args.case or 'mutated'})")
    for kind, count in sorted(outcomes.items()):
        print(f"  - {kind}: {count}")
    print(f"- worker restarts: {restarted}; tracebacks in the log: {log.count('Traceback')}")
    print(f"- exceptions the intake's fence caught: {fenced:g}")
    for pid, peak in peaks.items():
        growth = 100 * (peak / warm[pid] - 1)
        print(
            f"- worker {pid} peak memory: {warm[pid] / MIB:.0f} MiB warm, {peak / MIB:.0f} MiB "
            f"peak during the run ({growth:+.1f} %)"
        )
    print(f"- normal clients: {len(normal)} requests, {sum(failed.values())} failed {dict(failed)}")
    bad = restarted or outcomes["5xx (not 503)"] or failed or fenced or "Traceback" in log
    bad = bad or outcomes["next request lost"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
