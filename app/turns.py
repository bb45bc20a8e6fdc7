"""Oldest-first turns: at most `limit` holders at once; the lowest rank waiting goes next.

The batcher gives each worker's image decodes their turns by this (app/batcher.py): a
request admitted earlier decodes first, and only as many decode at once as the worker has
CPUs. A turn passes straight from the thread that leaves to the one that enters, so each
hand-off wakes exactly one thread.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Turns:
    """Up to `limit` holders at once, lowest rank first; `limit` 0 means no limit."""

    def __init__(self, limit: int = 0) -> None:
        self._lock = threading.Lock()
        self._waiting: list[tuple[int, threading.Event]] = []
        self.limit = self._free = 0
        self.set_limit(limit)

    def set_limit(self, limit: int) -> None:
        """Set the limit before anyone holds a turn (a worker learns its CPUs after fork)."""
        if not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit must be an integer >= 0, got {limit!r}")
        with self._lock:
            if self._free != self.limit or self._waiting:
                raise RuntimeError("turns are held: set the limit before the first")
            self.limit = self._free = limit

    @contextmanager
    def hold(self, rank: int) -> Iterator[None]:
        """Wait for a turn (the lowest `rank` waiting is next), hold it inside the block."""
        if not self.limit:
            yield
            return
        with self._lock:
            wake = None
            if self._free and not self._waiting:
                self._free -= 1
            else:
                wake = threading.Event()
                heapq.heappush(self._waiting, (rank, wake))
        if wake is not None:
            wake.wait()  # set by the holder that leaves, who hands its turn over
        try:
            yield
        finally:
            with self._lock:
                if self._waiting:
                    heapq.heappop(self._waiting)[1].set()
                else:
                    self._free += 1

    @property
    def waiting(self) -> int:
        """Threads waiting for a turn."""
        with self._lock:
            return len(self._waiting)
