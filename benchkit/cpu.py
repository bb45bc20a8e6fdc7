"""Where a running worker's CPU goes: per-thread CPU time from /proc, split into stages by
py-spy's stack samples.

Policy: /proc gives each thread's exact CPU time (utime + stime); py-spy's samples of the
Python threads (by native id) only split their time between stages, in proportion. A sample counts
for the stage of its innermost frame that matches one (`STAGES`, most specific first), so a
metrics update inside a Flask view is metrics, not web framework. A thread py-spy does not see
(an OpenMP helper of the model thread, named after it) is all forward pass.
"""

from __future__ import annotations

import collections
import os
import subprocess
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")

# Stage: frames (a "function (file" prefix, or a path) that put a sample in it. The order
# breaks ties within one frame only; the innermost matching frame decides.
STAGES: dict[str, tuple[str, ...]] = {
    "decode": (
        "decode (app/imaging.py",
        "_decoded (app/imaging.py",
        "decode_for (app/imaging.py",
        "decode_jpeg_pixels (app/imaging.py",
        "_libjpeg_pixels (app/imaging.py",
        "_opened (app/imaging.py",
        "to_rgb (app/imaging.py",
    ),
    # With the copy of Pillow's bytes (`channels_last`, under `pixels`); torch's uint8 resize
    # (fast mode) is the one torch.nn.functional call outside a model.
    "resize/crop": (
        "torchvision/transforms/",
        "resize_crop",
        "channels_last (app/imaging.py",
        "pixels (app/imaging.py",
        "torch/nn/functional.py",
    ),
    "normalise": ("preprocess (app/imaging.py", "normalise (app/imaging.py"),
    "forward": ("app/model.py", "app/backends/", "torch/"),
    "metrics": ("prometheus_client/", "app/metrics.py"),
    "logging": ("logging/",),
    "JSON": ("json/", "jsonify", "orjson"),
    "framing": ("app/intake/framing.py", "gunicorn/http/"),
    "connections": ("app/intake/", "gunicorn/workers/", "concurrent/futures/thread.py"),
    "web framework": ("flask/", "werkzeug/"),
    "batching hand-offs": ("app/batcher.py", "concurrent/futures/", "threading.py"),
}
REST = "rest (adapters, core, sockets)"
# A sample whose innermost frame is one of these is a thread blocked, or woken and waiting for
# a CPU (py-spy counts a runnable thread as busy), not spending CPU. py-spy names methods
# with their class, as the event loop's wait on Linux: "EpollSelector.select (selectors.py".
_WAITS = ("Condition.wait (", "Event.wait (", "EpollSelector.select (", "_worker (concurrent")


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """Each thread of `pid`: its name and CPU seconds so far."""
    threads = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        threads[int(task.name)] = name, (int(fields[11]) + int(fields[12])) / TICK
    return threads


def cpu_used(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[int, tuple[str, float]]:
    """CPU seconds each thread spent between two `thread_cpu` readings."""
    return {
        tid: (name, seconds - before.get(tid, (name, 0.0))[1])
        for tid, (name, seconds) in after.items()
    }


def spy(pids: list[int], seconds: float, out: Path) -> list[subprocess.Popen]:
    """Start py-spy on each worker: Python stacks by thread, without pausing the process."""
    return [
        subprocess.Popen(
            ["py-spy", "record", "-r", "100", "-d", str(int(seconds)), "-f", "raw"]
            + ["--nonblocking", "--threads", "-o", str(out / f"{pid}.txt"), "-p", str(pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid in pids
    ]


def stage_of(frames: list[str]) -> str | None:
    """The stage of one stack (outermost frame first); None for a thread waiting."""
    if frames[-1].startswith(_WAITS):
        return None
    for frame in reversed(frames):
        for stage, marks in STAGES.items():
            if any(mark in frame for mark in marks):
                return stage
    return REST


def samples_by_thread(out: Path) -> dict[int, collections.Counter[str]]:
    """Busy samples per native thread id and stage, from py-spy's raw files in `out`."""
    samples: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for path in out.glob("*.txt"):
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            first, *frames = stack.split(";")  # "thread (TID): NAME", then the frames
            if not frames or not first.startswith("thread ("):
                continue
            tid = int(first.removeprefix("thread (").partition(")")[0])
            stage = stage_of(frames)
            if stage is not None:
                samples[tid][stage] += int(count)
    return samples


# What each kind of worker thread is called in reports.
KINDS = {
    "model": "the model's thread and its OpenMP helpers",
    "requests": "request threads and the worker's other threads",
    "loop": "event loops",
}


def kind_of(tid: int, name: str, model_thread: str, loop_threads: frozenset[int]) -> str:
    """A worker thread's kind: the model's (and its helpers, which share its name), an event
    loop (a worker's main thread), or a request thread (with the few others, which /proc names
    alike: the model-change follower)."""
    return "model" if name == model_thread else "loop" if tid in loop_threads else "requests"


def cpu_by_kind(
    used: dict[int, tuple[str, float]], model_thread: str, loop_threads: frozenset[int]
) -> collections.Counter[str]:
    """CPU seconds per kind of thread, exactly as /proc counts them."""
    kinds: collections.Counter[str] = collections.Counter()
    for tid, (name, seconds) in used.items():
        kinds[kind_of(tid, name, model_thread, loop_threads)] += seconds
    return kinds


def split_cpu(
    used: dict[int, tuple[str, float]],
    samples: dict[int, collections.Counter[str]],
    model_thread: str,
    loop_threads: frozenset[int] = frozenset(),
) -> collections.Counter[str]:
    """CPU seconds per stage: each kind of thread's time shared out by its own samples.

    Three kinds, each pooled: the model's thread, the workers' event loops (`loop_threads`:
    their main threads) and the request threads. Pooled, not thread by thread: at a few dozen
    samples a second a request thread that ran for a few milliseconds may have none, and its
    time still belongs to some stage. Not across kinds: py-spy samples a runnable thread
    waiting for its CPU as busy, and the model's thread, preempted by request threads on the
    same CPU, would take their time.
    """
    stages: collections.Counter[str] = collections.Counter()
    pooled: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    sampled: collections.Counter[str] = collections.Counter()
    for tid, (name, seconds) in used.items():
        kind = kind_of(tid, name, model_thread, loop_threads)
        if tid in samples:
            pooled[kind].update(samples[tid])
            sampled[kind] += seconds
        elif kind == "model":
            stages["forward"] += seconds  # an OpenMP helper of the model thread
        else:
            sampled[kind] += seconds
    for kind, seconds in sampled.items():
        total = sum(pooled[kind].values())
        if not total:
            stages[REST] += seconds
        for stage, n in pooled[kind].items():
            stages[stage] += seconds * n / total
    return stages
