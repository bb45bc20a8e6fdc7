#!/usr/bin/env python3
"""Where a request's CPU time goes in the running service, under closed-loop load.

Starts real Gunicorn (gunicorn.conf.py) with the given WANWU_* settings, drives --clients
closed-loop clients with real JPEGs, and reads each worker thread's CPU time from
/proc/<pid>/task/*/stat before and after. It reports CPU milliseconds per request for the model
thread (with its OpenMP helpers, which inherit its name), the request threads (HTTP, decoding,
preprocessing, top-k, JSON) and the load generator, beside the model alone: the same forward
passes timed in a fresh process at the worker's thread count and the mean batch served.
Then it sends lone requests one after another and splits their latency by the server's own
`timing_ms`: outside the app (client, socket, Gunicorn), in the app before the queue
(decoding, preprocessing, Flask), queue hand-off, and the forward pass.
With py-spy installed (`pip install py-spy`; not a project dependency), --py-spy also samples
the workers' Python stacks and shows which functions the request threads spend their time in.
"""

from __future__ import annotations

import collections
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from app import runtime
from app.engine import MODEL_THREAD_NAME
from app.settings import usable_cpus
from benchkit import cpu, options
from benchkit.bench import (
    batch_stats,
    header,
    in_fresh_process,
    load_images,
)
from benchkit.loadgen import MakeRequest, closed_loop, raw_jpeg
from benchkit.timing import best_rate

# Request-thread stages told apart in the py-spy breakdown; the rest is HTTP, Flask, top-k, JSON.
STAGES = {"decode": "decode (app/imaging.py", "preprocess": "preprocess (app/imaging.py"}


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of one worker's threads so far: model, main, and request threads."""
    seconds: collections.Counter[str] = collections.Counter()
    for tid, (name, used) in cpu.thread_cpu(pid).items():
        if name == MODEL_THREAD_NAME:
            group = "model"  # the batcher thread and the OpenMP helpers it started
        elif tid == pid:
            group = "main"
        else:
            group = "requests"
        seconds[group] += used
    return seconds


def stage_shares(out: Path) -> dict[str, float]:
    """Share of the request threads' busy samples in each stage (waits left out)."""
    samples: collections.Counter[str] = collections.Counter()
    for path in out.glob("*.txt"):
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if "ThreadWorker.handle" not in stack or ";Condition.wait (" in stack:
                continue  # another thread, or a request thread waiting for the model
            stage = next((name for name, frame in STAGES.items() if frame in stack), "rest")
            samples[stage] += int(count)
    total = sum(samples.values())
    return {stage: samples[stage] / total for stage in [*STAGES, "rest"]} if total else {}


def lone_request_split(make: MakeRequest, n: int) -> dict[str, float]:
    """Median ms of each part of a lone request's latency, from the server's `timing_ms`."""
    parts: dict[str, list[float]] = collections.defaultdict(list)
    with requests.Session() as session:
        for i in range(n):
            started = time.perf_counter()
            response = make(session, i)
            latency = (time.perf_counter() - started) * 1000
            timing = response.json()["timing_ms"]
            parts["latency"].append(latency)
            parts["outside the app"].append(latency - timing["total"])
            parts["app, outside queue and pass"].append(
                timing["total"] - timing["queue"] - timing["inference"]
            )
            parts["queue hand-off"].append(timing["queue"])
            parts["forward pass"].append(timing["inference"])
    return {name: statistics.median(values) for name, values in parts.items()}


def main() -> int:
    parser = options.parser(__doc__, server=True, clients=16, seconds=20)
    parser.add_argument("--py-spy", action="store_true", help="sample Python stacks too")
    parser.add_argument("--lone", type=int, default=200, help="lone requests to time")
    args = parser.parse_args()
    if args.py_spy and shutil.which("py-spy") is None:
        parser.error("--py-spy needs py-spy on PATH (pip install py-spy)")
    settings = options.server_settings(args.set)
    device = runtime.planned_device(settings.device)
    if device.type != "cpu":
        parser.error("this profile reads CPU time; run it with a CPU device")
    precision = runtime.resolve_precision(settings.precision, device)
    images = load_images(args.images)
    print(header("Where the CPU goes (scripts/profile_service.py)"))
    print(
        f"- server: workers={settings.worker_processes} torch_threads={settings.torch_threads} "
        f"max_batch={settings.max_batch} precision={precision} fusion={settings.cpu_fusion}; "
        f"{args.clients} clients for {args.seconds:g} s{' under py-spy' if args.py_spy else ''}"
    )
    spy_dir = Path(tempfile.mkdtemp(prefix="wanwu-spy-"))
    with options.start_server(args.model, args.set) as srv:
        make = raw_jpeg(srv.url, images)
        closed_loop(make, 4, 3)  # settle
        pids = srv.worker_pids()
        before = [thread_cpu(pid) for pid in pids]
        images_before, passes_before = batch_stats(srv.url)
        began, client_before = time.monotonic(), time.process_time()
        answered: list = []
        load_thread = threading.Thread(
            target=lambda: answered.extend(closed_loop(make, args.clients, args.seconds))
        )
        load_thread.start()
        spies = cpu.spy(pids, args.seconds - 2, spy_dir) if args.py_spy else []
        load_thread.join()
        for process in spies:
            process.wait()
        elapsed, client = time.monotonic() - began, time.process_time() - client_before
        after = [thread_cpu(pid) for pid in pids]
        images_after, passes_after = batch_stats(srv.url)
        lone = lone_request_split(make, args.lone)
    ok = sum(1 for r in answered if r.status == 200)
    mean_batch = (images_after - images_before) / max(1.0, passes_after - passes_before)
    batch, threads = max(1, round(mean_batch)), settings.torch_threads
    # The same passes alone: `threads` cores busy for each, shared by its images.
    rate = in_fresh_process(
        best_rate, args.model, precision, settings.cpu_fusion, threads, [batch], "cpu"
    )
    alone = 1000 * threads / rate
    per_request = collections.Counter()
    for b, a in zip(before, after, strict=True):
        for group in a:
            per_request[group] += (a[group] - b.get(group, 0.0)) * 1000 / ok
    per_request["load generator"] = client * 1000 / ok
    total = sum(per_request.values())
    print(
        f"\n{ok} requests answered 200 of {len(answered)}: {ok / elapsed:.1f}/s, mean batch "
        f"{mean_batch:.2f}; CPU used {total * ok / elapsed / 1000:.2f} of "
        f"{usable_cpus()} CPUs\n"
    )
    print("| where | CPU ms per request | share |")
    print("|---|---:|---:|")
    for group in ("model", "requests", "main", "load generator"):
        print(f"| {group} | {per_request[group]:.2f} | {100 * per_request[group] / total:.0f} % |")
    print(f"| total | {total:.2f} | 100 % |")
    print(
        f"\nmodel alone (fresh process, {threads} threads, batch {batch}): {alone:.2f} "
        "CPU ms per image; in the service "
        f"{per_request['model']:.2f} ({per_request['model'] / alone:.2f}x)"
    )
    shares = stage_shares(spy_dir)
    if shares:
        print("\nrequest threads by py-spy samples (HTTP, Flask, top-k and JSON are the rest): ")
        print(
            ", ".join(
                f"{stage} {100 * share:.0f} % (~{share * per_request['requests']:.2f} ms)"
                for stage, share in shares.items()
            )
        )
    shutil.rmtree(spy_dir, ignore_errors=True)
    print(
        f"\n{args.lone} lone requests, median ms: "
        + ", ".join(f"{name} {ms:.2f}" for name, ms in lone.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
