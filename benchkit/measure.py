"""One measurement of a server under closed-loop load, and the protocol every server implements.

Every benchmark compares servers the same way: start a `Target`, settle it with a short load,
then `measure(target, clients, seconds)` once per level. Servers differ only in how they
start and how a request is sent (`Target.make`).
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psutil
import requests

from benchkit.bench import percentile
from benchkit.loadgen import MakeRequest, Record, closed_loop
from benchkit.server import free_port

SETTLE_CLIENTS, SETTLE_SECONDS = 4, 3


class Target(Protocol):
    """A server under test: a context manager that starts and stops it."""

    url: str

    def __enter__(self) -> Target: ...

    def __exit__(self, *exc: object) -> None: ...

    @property
    def pid(self) -> int:
        """The server's root process (its CPU time includes its children's)."""
        ...

    def make(self, images: list[tuple[str, bytes]]) -> MakeRequest:
        """How one request with image n (round-robin) is sent to this server."""
        ...


@dataclass(frozen=True)
class Row:
    """What one load level gave: answered rate, latency percentiles (ms), failures."""

    clients: int
    seconds: float
    rate: float
    p50: float
    p90: float
    p99: float
    errors: str
    records: tuple[Record, ...]


def failures(records: list[Record] | tuple[Record, ...]) -> str:
    """Non-200 outcomes by status, e.g. '503 x4', or '0'."""
    counts = Counter(str(r.status) for r in records if r.status != 200)
    return ", ".join(f"{status} x{n}" for status, n in counts.items()) or "0"


def measure(make: MakeRequest, clients: int, seconds: float, processes: int = 1) -> Row:
    """Closed-loop load from `clients` (in `processes`) for `seconds`; only 200s count."""
    began = time.monotonic()
    records = closed_loop(make, clients, seconds, processes)
    elapsed = time.monotonic() - began
    ok = [r.latency * 1000 for r in records if r.status == 200]
    p50, p90, p99 = (percentile(ok, q) for q in (50, 90, 99))
    rate = len(ok) / elapsed
    return Row(clients, elapsed, rate, p50, p90, p99, failures(records), tuple(records))


def settle(make: MakeRequest) -> None:
    """A short load before measuring: caches, connection pools, lazy initialisation."""
    closed_loop(make, SETTLE_CLIENTS, SETTLE_SECONDS)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its descendants."""
    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        times = proc.cpu_times()
        total += times.user + times.system
    return total


def stop_tree(pid: int) -> None:
    """Terminate a process and all its descendants (servers fork workers of their own)."""
    root = psutil.Process(pid)
    processes = [root, *root.children(recursive=True)]
    for process in processes:
        process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=20)
    for process in alive:
        process.kill()


class ProcessTarget:
    """A server under test run as one command on a free port, stopped with its children.

    A subclass passes its command (built with `self.port`) to `launch` and defines `make`.
    """

    health_path = "/"

    def __init__(self, log: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.command: list[str] = []

    def __enter__(self) -> ProcessTarget:
        output = open(self.log, "wb") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.command, stdout=output, stderr=subprocess.STDOUT)
        wait_until_up(f"{self.url}{self.health_path}")
        return self

    def __exit__(self, *exc: object) -> None:
        stop_tree(self.proc.pid)

    @property
    def pid(self) -> int:
        return self.proc.pid


def wait_until_up(url: str, seconds: float = 180) -> None:
    """Wait until `url` answers below 500 (servers without a readiness endpoint of ours)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up within {seconds:g} s")
