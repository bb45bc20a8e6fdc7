#!/usr/bin/env python3
"""The optimisation ladder: the same load and photos against each step of the design.

Rungs: (a) Flask dev server + eager model, one image at a time; (b) the same with the
TorchScript artifact; (c) with torch threads set to the cores; (d) Gunicorn + the service
(one worker, dynamic batching); (e) Gunicorn with several workers; (f) oneDNN Graph
fusion; (g) bf16, where the CPU has it. Each rung gets closed-loop load at --concurrency
for --seconds. Prints a markdown table (requests/s, latency percentiles, server CPU use,
speed-up over rung a) and writes a PNG chart.
"""

from __future__ import annotations

import sys
from pathlib import Path

from app.runtime import cpu_supports_bf16
from app.settings import DEFAULT_MODEL, usable_cpus
from benchkit import options
from benchkit.bench import ROOT, header, load_images
from benchkit.loadgen import MakeRequest, raw_jpeg
from benchkit.measure import ProcessTarget, Target, cpu_seconds, measure, settle
from benchkit.server import GunicornServer

CORES = usable_cpus()
RUNGS = {
    "a": ("Flask dev server, eager model, one at a time", ["--model", "eager"]),
    "b": ("+ TorchScript artifact", ["--model", "torchscript"]),
    "c": (
        f"+ torch threads = {CORES}, inter-op 1",
        ["--model", "torchscript", "--threads", str(CORES)],
    ),
    "d": (
        "Gunicorn + dynamic batching (1 worker)",
        {"workers": 1, "threads": CORES, "max_batch": 8, "cpu_fusion": 0},
    ),
    "e": (
        f"Gunicorn, {CORES} workers x 1 thread",
        {"workers": CORES, "threads": 1, "max_batch": 8, "cpu_fusion": 0},
    ),
    "f": (
        "+ oneDNN Graph fusion (the default)",
        {"workers": CORES, "threads": 1, "max_batch": 8, "cpu_fusion": 1},
    ),
    "g": (
        "+ bf16",
        {"workers": CORES, "threads": 1, "max_batch": 8, "cpu_fusion": 1, "precision": "bf16"},
    ),
}


class Baseline(ProcessTarget):
    """scripts/ladder_baseline.py as a subprocess."""

    def __init__(self, args: list[str]) -> None:
        super().__init__()
        script = str(ROOT / "scripts/ladder_baseline.py")
        self.command = [sys.executable, script, "--port", str(self.port), *args]

    def make(self, images: list[tuple[str, bytes]]) -> MakeRequest:
        return raw_jpeg(self.url, images)


def target(rung: str, out: Path) -> Target:
    """The server of one rung."""
    spec = RUNGS[rung][1]
    if isinstance(spec, list):
        return Baseline(spec)
    settings = dict(spec)
    workers = settings.pop("workers")
    return GunicornServer(out, workers=workers, model=ROOT / DEFAULT_MODEL, **settings)


def main() -> int:
    parser = options.parser(__doc__, seconds=20, images=None)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rungs", default="abcdefg")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "ladder")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    images = load_images(args.images)
    print(header("Optimisation ladder (scripts/bench_ladder.py)"))
    print(
        f"- load: {args.concurrency} closed-loop clients, {args.seconds:g} s per rung, "
        f"{len(images)} photos as raw JPEG bodies\n"
    )
    print("| rung | server | req/s | p50 ms | p90 ms | p99 ms | server CPU | speed-up |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    rows, base = [], None
    for rung in args.rungs:
        title = RUNGS[rung][0]
        if rung == "g" and not cpu_supports_bf16():
            print(f"| {rung} | {title} | unavailable: no native bf16 on this CPU ||||||")
            continue
        with target(rung, args.out) as server:
            make = server.make(images)
            settle(make)
            cpu_before = cpu_seconds(server.pid)
            row = measure(make, args.concurrency, args.seconds)
            cpu = (cpu_seconds(server.pid) - cpu_before) / row.seconds / CORES
        rate = row.rate
        base = base or rate
        rows.append((rung, rate))
        print(
            f"| {rung} | {title} | {rate:.1f} | {row.p50:.0f} | {row.p90:.0f} | {row.p99:.0f} | "
            f"{100 * cpu:.0f} % | "
            f"{rate / base:.2f}x |",
            flush=True,
        )
    chart(rows, args.out / "ladder.png")
    print(f"\nchart: {args.out / 'ladder.png'}")
    return 0


def chart(rows: list[tuple[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.barh(
        [f"{r}: {RUNGS[r][0]}" for r, _ in rows][::-1], [v for _, v in rows][::-1], color="#1f5fbf"
    )
    ax.set_xlabel("requests/s (higher is better)")
    ax.set_title("wanwu optimisation ladder")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
