"""The CPU quota and memory limit the service runs under, from cgroup v2 or v1.

A container sees its own cgroup at /sys/fs/cgroup: one unified hierarchy under cgroup v2
(`cpu.max`, `memory.max`, `memory.current`), one folder per controller under v1
(`cpu/cpu.cfs_quota_us` and `cpu.cfs_period_us`, `memory/memory.limit_in_bytes` and
`memory.usage_in_bytes`). v2 is read first. No limit reads as None: v2's "max", v1's quota of
-1, and a memory limit at least the machine's memory (v1's "none" is its page counter's
maximum, about 8 EiB), which limits nothing.
"""

from __future__ import annotations

import os

ROOT = "/sys/fs/cgroup"
_CPU_V2 = ("cpu.max",)
_CPU_V1 = ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us")
_MEMORY_V2 = ("memory.max", "memory.current")
_MEMORY_V1 = ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")


def _words(names: tuple[str, ...]) -> list[str] | None:
    """The files' words, in order, or None if any of them cannot be read."""
    words: list[str] = []
    for name in names:
        try:
            with open(os.path.join(ROOT, name)) as f:
                words += f.read().split()
        except OSError:
            return None
    return words


def cpu_quota() -> float | None:
    """The CPUs' worth of time the cgroup may use per period, or None without a quota."""
    words = _words(_CPU_V2) or _words(_CPU_V1)
    if not words or words[0] in ("max", "-1"):
        return None
    quota, period = words
    return int(quota) / int(period)


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory() -> tuple[int, int] | None:
    """The cgroup's memory use and limit in bytes, or None where it has no limit.

    Use is read only beside a limit: at the root of a v1 hierarchy (a host, not a container)
    the use counts the whole machine, and only a limit tells a container's cgroup from it.
    """
    words = _words(_MEMORY_V2) or _words(_MEMORY_V1)
    if not words or words[0] == "max" or int(words[0]) >= physical_memory():
        return None
    limit, usage = words
    return int(usage), int(limit)
