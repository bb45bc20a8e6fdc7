"""Process-level set-up: torch threads, CPU affinity and device choice, before and after fork.

The Gunicorn master loads the model but must not start OpenMP pools or touch CUDA:
both break in forked children (docs/DESIGN notes in the README, FIELD-NOTES B). Workers
set their own thread counts and pick their device after the fork.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from app.settings import Settings, SettingsError, usable_cpus, uses_gpu

log = logging.getLogger(__name__)


_M_ARENA_MAX = -8  # glibc mallopt parameter


def prepare_master() -> None:
    """Cap torch at one thread in the master so no OpenMP pool exists at fork time.

    Also cap glibc at two malloc arenas: by default every request thread may get its own
    arena, and worker memory crept up ~20 % under overload before levelling off
    (docs/RELIABILITY.md); with two it stays flat.
    """
    torch.set_num_threads(1)
    try:
        ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, 2)
    except OSError:
        pass  # not glibc


_PR_SET_NAME = 15  # prctl option


def name_os_thread(name: str) -> None:
    """Give the calling thread an OS-level name (top -H, /proc/<pid>/task/<tid>/comm).

    Threads it starts later inherit the name: the model thread's OpenMP helpers do, so a
    worker's model CPU can be told apart from its request threads' (scripts/profile_service.py).
    """
    try:
        ctypes.CDLL(None).prctl(_PR_SET_NAME, name.encode()[:15])
    except (OSError, AttributeError):
        pass  # not Linux


def free_slot(taken: set[int]) -> int:
    """Return the lowest worker slot not in `taken` (slots index disjoint CPU sets)."""
    slot = 0
    while slot in taken:
        slot += 1
    return slot


def cpu_set(slot: int, threads: int, cpus: list[int]) -> list[int]:
    """Return the CPUs of worker `slot`: `threads` consecutive CPUs, wrapping around."""
    start = (slot * threads) % len(cpus)
    return [cpus[(start + i) % len(cpus)] for i in range(min(threads, len(cpus)))]


def configure_worker(settings: Settings, slot: int) -> dict[str, object]:
    """Pin this worker's CPUs and torch threads; return what was set, for the log."""
    threads = settings.torch_threads
    allowed = sorted(os.sched_getaffinity(0))
    pinned: list[int] | None = None
    # Pin only when this process owns every CPU it may run on. Under a CPU quota (a container
    # with a CPU limit but the node's whole affinity set), every replica would pick the same
    # first CPUs: leave placement to the kernel there.
    if settings.pin_cpus and len(allowed) <= usable_cpus():
        pinned = cpu_set(slot, threads, allowed)
        os.sched_setaffinity(0, pinned)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)  # one inference thread: no inter-op pool needed
    except RuntimeError:
        pass  # already fixed in this process (e.g. a test that configures twice)
    return {"slot": slot, "torch_threads": threads, "cpus": pinned}


def planned_device(setting: str) -> torch.device:
    """The device WANWU_DEVICE asks for, decided without any CUDA call (safe in the master)."""
    if setting == "auto":
        return torch.device("cuda" if uses_gpu(setting) else "cpu")
    return torch.device(setting)


def worker_device(planned: torch.device, setting: str, slot: int) -> torch.device:
    """Settle the planned device in a worker (this initialises CUDA): one GPU per slot."""
    if planned.type == "cpu":
        return planned
    if not torch.cuda.is_available():
        if setting == "auto":
            log.warning("GPU device nodes exist but CUDA is unusable; serving on the CPU")
            return torch.device("cpu")
        raise SettingsError(f"WANWU_DEVICE={setting} but no CUDA device is available")
    count = torch.cuda.device_count()
    if planned.index is None:
        return torch.device("cuda", slot % count)
    if planned.index >= count:
        raise SettingsError(f"WANWU_DEVICE={setting} but only {count} CUDA devices exist")
    return planned


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 matrix support (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(setting: str, device: torch.device) -> str:
    """Turn WANWU_PRECISION into fp32/bf16/fp16 for `device`, refusing what it cannot do.

    `auto` is the fastest precision measured (docs/BENCHMARKS.md): fp16 on CUDA, bf16 on a
    CPU with native bf16, else fp32. It does not call CUDA, so the master may use it.
    """
    if setting == "auto":
        if device.type == "cuda":
            return "fp16"
        return "bf16" if cpu_supports_bf16() else "fp32"
    if setting == "fp16" and device.type != "cuda":
        raise SettingsError("WANWU_PRECISION=fp16 needs a CUDA device")
    if setting == "bf16" and device.type == "cpu" and not cpu_supports_bf16():
        raise SettingsError("WANWU_PRECISION=bf16 needs a CPU with AVX512-BF16 or AMX")
    return setting


def precision_reason(setting: str, served: str, device: torch.device) -> str:
    """Why a model runs in `served` on `device` under WANWU_PRECISION=`setting`, in words."""
    if setting == "auto" and served == resolve_precision("auto", device):
        if device.type == "cuda":
            return "WANWU_PRECISION=auto: fp16 on CUDA"
        native = "has" if served == "bf16" else "has no"
        return f"WANWU_PRECISION=auto: this CPU {native} native bf16 (AVX512-BF16 or AMX)"
    if served == setting:
        return f"WANWU_PRECISION={setting}"
    return f"the artifact runs in {served} whatever WANWU_PRECISION ({setting}) says"


@contextmanager
def torchscript_api() -> Iterator[None]:
    """Call torch.jit without its deprecation notice (a FutureWarning per call in torch 2.14).

    Serving TorchScript is this service's choice, not something a user can act on, so the
    notice is dropped around those calls only; any other warning still shows.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", FutureWarning)
        yield


STOP_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM)


@contextmanager
def stop_signals() -> Iterator[list[int]]:
    """Record SIGINT, SIGQUIT and SIGTERM in the yielded list instead of acting on them.

    For a worker's warm-up: Gunicorn's own handlers raise SystemExit from whatever the main
    thread is doing, and inside a lock wait that left "release unlocked lock" tracebacks and a
    boot error. Here the caller checks the list and decides how to leave. The previous
    handlers are back when the block ends.
    """
    stopped: list[int] = []
    previous = {sig: signal.signal(sig, lambda sig, _: stopped.append(sig)) for sig in STOP_SIGNALS}
    try:
        yield stopped
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def configure_logging(level: str) -> None:
    """Log to stderr; access lines (logger wanwu.access) are bare JSON, one per request."""
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"
    )
    access = logging.getLogger("wanwu.access")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(handler)
    access.propagate = False


def exit_if_stopping_cleanly() -> None:
    """End this process at once if Gunicorn is stopping it cleanly (its worker_exit and
    on_exit hooks call this last), without the interpreter's teardown.

    By then everything the process owes is done: requests answered, the batcher drained,
    metrics in shared memory, folders removed. What remains is Python freeing, object by object,
    a heap that holds torch and a model: about 0.7 s in the master, whose heap is frozen before
    the fork, and 3 to 4 s in a worker, whose is not, on every stop an orchestrator waits
    for (docs/BENCHMARKS.md, "Stopping"). A clean stop is the one Gunicorn is handling: a
    worker's SystemExit(0), the master's StopIteration or KeyboardInterrupt (SIGTERM, SIGINT,
    SIGQUIT). Any other ending takes Python's way out with its exit status: a worker that
    failed to boot must exit with the code that tells the master so.
    """
    stopping = sys.exc_info()[1]
    clean = isinstance(stopping, StopIteration | KeyboardInterrupt) or (
        isinstance(stopping, SystemExit) and stopping.code in (0, None)
    )
    if clean:
        logging.shutdown()  # flush every log handler, Gunicorn's included
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
