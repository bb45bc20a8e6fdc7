"""Process memory accounting: PSS and private memory, and how much of the weights is shared.

Workers are forked from a master that holds the frozen weights; those pages stay shared
copy-on-write until someone writes them. /proc/self/pagemap tells, page by page, whether a
present page is mapped by this process alone (bit 56, readable without privileges).
"""

from __future__ import annotations

import ctypes
import gc
import os
import struct
from collections.abc import Iterable

import torch

_PRESENT = 1 << 63
# glibc's, from the symbols already loaded (musl and other C libraries have none).
_MALLOC_TRIM = getattr(ctypes.CDLL(None), "malloc_trim", None)
_EXCLUSIVE = 1 << 56


def release() -> None:
    """Collect garbage, then hand the heap pages freed back to the OS (glibc's malloc_trim).

    After a model is dropped its hundreds of MiB are free but stay in the process: glibc
    keeps freed heap for reuse, and the next model does not fit exactly where the last was.
    """
    gc.collect()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def smaps_rollup(pid: int | str = "self") -> dict[str, int]:
    """Return Rss, Pss (all, and anonymous) and private memory of a process, in bytes."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return {
        "rss": fields.get("Rss", 0),
        "pss": fields.get("Pss", 0),
        # Anonymous pages only: heap, weights, arenas; not libraries other processes map too.
        "pss_anon": fields.get("Pss_Anon", 0),
        "private": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0),
    }


def peak_rss(pid: int | str = "self") -> int:
    """Return the most resident memory a process has held (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def shared_fraction(tensors: Iterable[torch.Tensor]) -> float:
    """Fraction of the CPU tensors' present pages that other processes map too."""
    page = os.sysconf("SC_PAGE_SIZE")
    shared = total = 0
    with open("/proc/self/pagemap", "rb") as pagemap:
        for tensor in tensors:
            if tensor.device.type != "cpu" or tensor.nbytes == 0:
                continue
            first = tensor.data_ptr() // page
            last = (tensor.data_ptr() + tensor.nbytes - 1) // page
            pagemap.seek(first * 8)
            for (entry,) in struct.iter_unpack("<Q", pagemap.read((last - first + 1) * 8)):
                if entry & _PRESENT:
                    total += 1
                    shared += not entry & _EXCLUSIVE
    return shared / total if total else 0.0


def report(weights: list[torch.Tensor]) -> dict[str, float | int]:
    """Memory figures for /v1/model: this process's PSS/private and the weights' sharing."""
    return {
        **smaps_rollup(),
        "peak_rss": peak_rss(),
        "weights_bytes": sum(t.nbytes for t in weights),
        "weights_shared_fraction": round(shared_fraction(weights), 4),
    }
