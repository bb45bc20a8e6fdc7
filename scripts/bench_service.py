#!/usr/bin/env python3
"""Service throughput and latency under concurrent load, against the model-only ceiling.

Starts real Gunicorn (gunicorn.conf.py) with the given WANWU_* settings, drives closed-loop
load with real JPEGs (raw-body POSTs, one image each) at each concurrency, from Python's
`requests` or, with --client wrk, from wrk (which leaves the server more of the CPUs it
shares with the load generator), and reports
images/s, p50/p90/p99 latency and p99 over the mean, mean batch size (from /metrics), the
server's CPU ms and its forward passes' ms per image (where the time goes) and per-worker
memory. In the same run it measures, in fresh processes, the model-only ceiling (best images/s
at batch sizes up to WANWU_MAX_BATCH, all usable CPUs), one unbatched pass plus decode, and the
limit a service would reach if an image cost only its forward pass and its JPEG decode
(`usable CPUs / (forward + decode CPU ms per image)`), and prints the service's ratio to each.
A second ceiling runs the service's own layout model-only: one fresh process per worker, each
with the worker's threads, all at once (their images/s summed); on a loaded machine a pass
whose threads wait for each other at every barrier stalls, so the all-CPUs figure can fall
below what the workers' layout does.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from app import imaging, memory, runtime
from app.artifact import read_manifest
from app.model import Classifier
from app.settings import Settings, usable_cpus
from benchkit import options, wrk
from benchkit.bench import (
    batch_stats,
    decode_times,
    header,
    histogram,
    in_fresh_process,
    load_images,
)
from benchkit.measure import cpu_seconds, measure, settle
from benchkit.timing import best_rate

# Where an image's time goes: the workers' forward passes (wall time of each pass, summed over
# workers, per image served) beside the server's CPU time per image (decoding, HTTP, launches).
PASS = "wanwu_inference_seconds"


def layout_ceiling(model: Path, settings: Settings, precision: str) -> float:
    """Model-only images/s of the workers' layout: one process per worker, all at once."""
    device = str(runtime.planned_device(settings.device))
    batches = [b for b in (1, 2, 4, 8, 16, 32, 64, 128, 256) if b <= settings.max_batch]
    args = (model, precision, settings.cpu_fusion, settings.torch_threads, batches, device)
    workers = settings.worker_processes
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        return sum(f.result() for f in [pool.submit(best_rate, *args) for _ in range(workers)])


def ceilings(model: Path, settings: Settings, precision: str, images) -> tuple[float, float]:
    """Model-only images/s at the best batch size, and ms of one pass + decode at batch 1."""
    device = runtime.planned_device(settings.device)
    batches = [b for b in (1, 2, 4, 8, 16, 32, 64, 128, 256) if b <= settings.max_batch]
    args = (model, precision, settings.cpu_fusion)
    best = in_fresh_process(best_rate, *args, usable_cpus(), batches, str(device))
    single = 1 / in_fresh_process(best_rate, *args, settings.torch_threads, [1], str(device))
    spec = read_manifest(model)["input"]
    decode_times = []
    for _, data in images[:30]:
        start = time.perf_counter()
        imaging.load(data, spec, 10**9, settings.decode)
        decode_times.append(time.perf_counter() - start)
    return best, (single + statistics.median(decode_times)) * 1000


def generator_cpu() -> float:
    """CPU seconds of this process and of its finished load-generator processes."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def main() -> int:
    parser = options.parser(__doc__, server=True, concurrency="1,16", seconds=20)
    parser.add_argument(
        "--client-processes",
        type=int,
        default=1,
        help="spread the clients over this many load-generator processes (one Python process "
        "sends a few thousand requests/s at most)",
    )
    parser.add_argument(
        "--client",
        choices=("python", "wrk"),
        default="python",
        help="the load generator: Python's requests (default), or wrk (apt install wrk), "
        "which leaves the server most of the CPUs it shares with the clients",
    )
    args = parser.parse_args()
    settings = options.server_settings(args.set)
    images = load_images(args.images)
    # The artifact has its say: a .pt2 package runs in the precision it was compiled for.
    classifier = Classifier.load(args.model)
    precision = classifier.resolve_precision(
        settings.precision, runtime.planned_device(settings.device), settings.max_batch
    )
    print(header("Service under load (scripts/bench_service.py)"))
    print(
        f"- server: workers={settings.worker_processes} torch_threads={settings.torch_threads} "
        f"max_batch={settings.max_batch} max_wait_ms={settings.max_wait_ms} "
        f"device={settings.device} model={args.model.name} ({classifier.format}, {precision}) "
        f"http_threads={settings.request_threads}"
    )
    ceiling, single_ms = ceilings(args.model, settings, precision, images)
    print(
        f"- model-only ceiling ({usable_cpus()} threads, best batch "
        f"<= {settings.max_batch}, same device and precision): {ceiling:.1f} images/s"
    )
    layout = layout_ceiling(args.model, settings, precision)
    print(
        f"- model-only ceiling in the workers' layout ({settings.worker_processes} processes x "
        f"{settings.torch_threads} threads at once): {layout:.1f} images/s"
    )
    print(f"- one unbatched pass + decode ({settings.torch_threads} threads): {single_ms:.1f} ms")
    # The forward pass's CPU time per image at the better of the two ceilings.
    forward_ms = usable_cpus() * 1000 / max(ceiling, layout)
    jpeg_ms = statistics.fmean(decode_times(args.model, images, settings.decode))
    limit = usable_cpus() * 1000 / (forward_ms + jpeg_ms)
    print(
        f"- limit: {usable_cpus()} CPUs / (forward {forward_ms:.2f} + JPEG decode {jpeg_ms:.2f} "
        f"CPU ms per image) = {limit:.1f} images/s"
    )
    print(
        "\n| clients | images/s | vs ceiling | vs layout | vs limit | p50 ms | p90 ms | p99 ms "
        "| p99/mean | mean batch | server CPU ms/image | pass ms/image | load generator CPU "
        "| errors |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    with options.start_server(args.model, args.set) as srv:
        make = srv.make(images)
        settle(make)
        for concurrency in args.concurrency:
            before, client_cpu = batch_stats(srv.url), generator_cpu()
            server_cpu, passes = cpu_seconds(srv.pid), histogram(srv.url, PASS)[0]
            if args.client == "wrk":
                url = f"{srv.url}/predict"
                row, mean_ms = wrk.measure(url, images, concurrency, args.seconds, "image/jpeg")
            else:
                row = measure(make, concurrency, args.seconds, args.client_processes)
                mean_ms = statistics.fmean(r.latency * 1000 for r in row.records if r.status == 200)
            client_share = (generator_cpu() - client_cpu) / row.seconds / usable_cpus()
            after = batch_stats(srv.url)
            served = max(1.0, after[0] - before[0])
            mean_batch = (after[0] - before[0]) / max(1.0, after[1] - before[1])
            server_ms = (cpu_seconds(srv.pid) - server_cpu) * 1000 / served
            pass_ms = (histogram(srv.url, PASS)[0] - passes) * 1000 / served
            print(
                f"| {concurrency} | {row.rate:.1f} | {100 * row.rate / ceiling:.0f} % | "
                f"{100 * row.rate / layout:.0f} % | {row.rate / limit:.2f} | "
                f"{row.p50:.1f} | {row.p90:.1f} | {row.p99:.1f} | {row.p99 / mean_ms:.2f} | "
                f"{mean_batch:.2f} | "
                f"{server_ms:.2f} | {pass_ms:.2f} | {100 * client_share:.0f} % | {row.errors} |",
                flush=True,
            )
            if concurrency == 1:
                ratio = row.p50 / single_ms
                print(f"|   | c=1 p50 vs one pass + decode: {ratio:.2f}x |||||||||||||")
        pids = srv.worker_pids()
        memories = [memory.smaps_rollup(pid) for pid in pids]
    print(
        "\nper-worker memory: "
        + ", ".join(
            f"PSS {m['pss'] / 2**20:.0f} MiB / private {m['private'] / 2**20:.0f} MiB"
            for m in memories
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
