#!/usr/bin/env python3
"""What one image costs the service, stage by stage, under closed-loop load, per precision.

For each checkout (--checkout, repeatable: compare a change with the code before it in one
run) and each precision, starts real Gunicorn from that checkout, drives --clients clients with
real JPEGs through one --route (a raw body to /predict, an OIP v2 binary request over HTTP, or
tritonclient.grpc's ModelInfer), and splits every worker thread's CPU time (/proc) into stages
by py-spy's samples of the same thread (benchkit/cpu.py): decode, resize/crop, normalise,
framing, connections, web framework, JSON, metrics, logging, batching hand-offs, forward, the
rest. It prints CPU ms per image for each; what the request path costs outside decoding and
the model's thread (every other thread's CPU less decode and resize/crop); the throughput, the
clients' mean latency and its p99 over the mean; where a request's time went by the server's
own `timing_ms` (the wait in the batcher's queue, the handler's total, and the rest: the
intake's loop and the wait for a request thread); and the share of the CPU time that went to
the forward pass and decoding: on CPUs the service has to itself, the throughput over the
limit those two set, `CPUs / (forward + decode per image)`.
Then --lone requests one at a time: their median latency over the median forward pass (the
server's `timing_ms`) plus the JPEG decode (timed here, in this process), and their median
wait in the batcher's queue. The rows from `timing_ms` and the lone requests are /predict's
only: its answer carries `timing_ms`.
Needs py-spy on the PATH (`pip install py-spy`, in the `dev` extra).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from app.artifact import read_manifest
from app.engine import MODEL_THREAD_NAME
from benchkit import cpu, options
from benchkit.bench import (
    ROOT,
    batch_stats,
    decode_times,
    header,
    histogram,
    load_images,
    percentile,
)
from benchkit.grpcload import grpc_infer, reserved_port, wait_listening
from benchkit.loadgen import MakeRequest, closed_loop, oip, raw_jpeg

ROWS = [*cpu.STAGES, cpu.REST]


def loaded(checkout: Path, args: argparse.Namespace, precision: str, images) -> dict:
    """One server from `checkout` at `precision`: CPU ms per image by stage, rate, lone latency."""
    items = [*args.set, f"PRECISION={precision}"]
    spy_dir = Path(tempfile.mkdtemp(prefix="wanwu-cost-"))
    with contextlib.ExitStack() as stack:
        port = stack.enter_context(reserved_port()) if args.route == "grpc" else None
        grpc = [f"GRPC_BIND=127.0.0.1:{port}"] if port else []
        server = options.start_server(args.model, [*items, *grpc])
        server.cwd = checkout  # `python -m gunicorn` there imports that checkout's `app`
        srv = stack.enter_context(server)
        timings: list[dict] = []
        name = read_manifest(args.model)["name"]
        if args.route == "grpc":
            wait_listening(srv.worker_pids(), port)
            make = grpc_infer(f"127.0.0.1:{port}", images, name)
        elif args.route == "oip":
            make = oip(srv.url, images, name)
        else:
            make = recording(raw_jpeg(srv.url, images), timings)
        closed_loop(make, 4, 3)  # settle
        timings.clear()
        pids = srv.worker_pids()
        before = {pid: cpu.thread_cpu(pid) for pid in pids}
        images_before, passes_before = batch_stats(srv.url)
        waits_before = histogram(srv.url, "wanwu_queue_wait_seconds")
        began = time.monotonic()
        answered: list = []
        load = threading.Thread(
            target=lambda: answered.extend(closed_loop(make, args.clients, args.seconds))
        )
        load.start()
        for process in cpu.spy(pids, args.seconds - 2, spy_dir):
            process.wait()
        load.join()
        elapsed = time.monotonic() - began
        used = {}
        for pid in pids:
            used.update(cpu.cpu_used(before[pid], cpu.thread_cpu(pid)))
        images_after, passes_after = batch_stats(srv.url)
        waits_after = histogram(srv.url, "wanwu_queue_wait_seconds")
        lone = lone_requests(srv.url, images, args.lone) if args.route == "predict" else None
    latencies = [1000 * r.latency for r in answered if r.status == 200]
    ok = len(latencies)
    stages = cpu.split_cpu(used, cpu.samples_by_thread(spy_dir), MODEL_THREAD_NAME, frozenset(pids))
    kinds = cpu.cpu_by_kind(used, MODEL_THREAD_NAME, frozenset(pids))
    shutil.rmtree(spy_dir, ignore_errors=True)
    return {
        "ms": {stage: 1000 * seconds / ok for stage, seconds in stages.items()},
        "kinds": {kind: 1000 * seconds / ok for kind, seconds in kinds.items()},
        "rate": ok / elapsed,
        "batch": (images_after - images_before) / max(1.0, passes_after - passes_before),
        "latency": (statistics.mean(latencies), percentile(latencies, 99)),
        "queue": 1000 * (waits_after[0] - waits_before[0]) / (waits_after[1] - waits_before[1]),
        "spread": spread(timings) if timings else None,
        "lone": lone,
    }


def recording(make: MakeRequest, timings: list[dict]) -> MakeRequest:
    """`make`, keeping each answer's `timing_ms` (list.append is atomic: clients share it)."""

    def make_and_keep(session: requests.Session, n: int) -> requests.Response:
        response = make(session, n)
        if response.status_code == 200:
            timings.append(response.json()["timing_ms"])
        return response

    return make_and_keep


def spread(timings: list[dict]) -> dict[str, tuple[float, float]]:
    """Mean and p99 (ms) of the queue wait and of the handler's total, from `timing_ms`."""
    return {
        key: (statistics.mean(values), percentile(values, 99))
        for key in ("queue", "total")
        for values in [[t[key] for t in timings]]
    }


def lone_requests(url: str, images, n: int) -> tuple[float, ...]:
    """Median latency, forward pass and queue wait (ms) of `n` requests sent one at a time."""
    make = raw_jpeg(url, images)
    latencies, forwards, queued = [], [], []
    with requests.Session() as session:
        for i in range(n):
            started = time.perf_counter()
            response = make(session, i)
            latencies.append((time.perf_counter() - started) * 1000)
            timing = response.json()["timing_ms"]
            forwards.append(timing["inference"])
            queued.append(timing["queue"])
    return tuple(statistics.median(values) for values in (latencies, forwards, queued))


def row(name: str, values: list[float | None], form: str = "{:.2f}") -> None:
    """One row of the markdown table (None: not measured on this route)."""
    cells = ("—" if v is None else form.format(v) for v in values)
    print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> int:
    parser = options.parser(__doc__, server=True, clients=16, seconds=20)
    parser.add_argument("--checkout", type=Path, action="append", help="default: this one")
    parser.add_argument("--precision", action="append", help="default: fp32 and bf16")
    parser.add_argument("--lone", type=int, default=100, help="lone requests to time")
    parser.add_argument(
        "--route",
        choices=("predict", "oip", "grpc"),
        default="predict",
        help="raw bodies to /predict (default), OIP v2 binary requests to /v2/models/M/infer, "
        "or gRPC ModelInfer from tritonclient.grpc",
    )
    args = parser.parse_args()
    if shutil.which("py-spy") is None:
        parser.error("needs py-spy on the PATH (pip install py-spy)")
    checkouts = [c.resolve() for c in args.checkout or [ROOT]]
    precisions = args.precision or ["fp32", "bf16"]
    settings = options.server_settings(args.set)
    images = load_images(args.images)
    print(header("What one image costs (scripts/request_cost.py)"))
    print(
        f"- server: workers={settings.worker_processes} torch_threads={settings.torch_threads} "
        f"max_batch={settings.max_batch} decode={settings.decode}; route {args.route}; "
        f"{args.clients} clients for "
        f"{args.seconds:g} s; load average {os.getloadavg()[0]:.1f} at the start"
    )
    runs = {
        (checkout, precision): loaded(checkout, args, precision, images)
        for checkout in checkouts
        for precision in precisions
    }
    names = [f"{c.name} {p}" for c, p in runs]
    print(f"\nCPU ms per image, {args.clients} clients:\n")
    print("| stage | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(runs))
    for stage in ROWS:
        row(stage, [r["ms"].get(stage, 0) for r in runs.values()])
    totals = [sum(r["ms"].values()) for r in runs.values()]
    row("**total**", totals)
    for kind, name in cpu.KINDS.items():  # exact: the stages above share these out by samples
        row(f"{name} (/proc, exact)", [r["kinds"].get(kind, 0) for r in runs.values()])
    row(
        "**outside decode and the model's thread**",
        [
            sum(r["kinds"].values())
            - r["kinds"].get("model", 0)
            - r["ms"].get("decode", 0)
            - r["ms"].get("resize/crop", 0)
            for r in runs.values()
        ],
    )
    row("images/s", [r["rate"] for r in runs.values()], "{:.1f}")
    row("CPUs used", [r["rate"] * t / 1000 for r, t in zip(runs.values(), totals, strict=True)])
    row("mean batch", [r["batch"] for r in runs.values()])
    row("latency: mean, ms", [r["latency"][0] for r in runs.values()], "{:.1f}")
    row("latency: p99 / mean", [r["latency"][1] / r["latency"][0] for r in runs.values()])
    row("mean queue wait, ms", [r["queue"] for r in runs.values()], "{:.1f}")
    spreads = [r["spread"] for r in runs.values()]
    for key, name in (("queue", "queue wait"), ("total", "handler total")):
        row(f"{name} (timing_ms): mean, ms", [s and s[key][0] for s in spreads], "{:.1f}")
        row(f"{name}: p99 / mean", [s and s[key][1] / s[key][0] for s in spreads])
    row(
        "outside the handler (intake, request thread): mean, ms",
        [
            s and r["latency"][0] - s["total"][0]
            for r, s in zip(runs.values(), spreads, strict=True)
        ],
        "{:.1f}",
    )
    # On CPUs the service has to itself, throughput / (CPUs / (forward + decode)) is this.
    row(
        "(forward + decode) / total",
        [
            (r["ms"].get("forward", 0) + r["ms"].get("decode", 0)) / t
            for r, t in zip(runs.values(), totals, strict=True)
        ],
    )
    if args.route != "predict":
        return 0
    load_ms = statistics.median(decode_times(args.model, images, settings.decode))
    row(
        "lone p50 / (forward + decode)",
        [r["lone"][0] / (r["lone"][1] + load_ms) for r in runs.values()],
    )
    row("lone median queue wait, ms", [r["lone"][2] for r in runs.values()])
    print(
        f"\nlone requests: {args.lone} one at a time; decoding here "
        f"{load_ms:.2f} ms per image (median); load average {os.getloadavg()[0]:.1f} at the end"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
