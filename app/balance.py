"""Spread new connections evenly over Gunicorn's workers.

A client keeps its keep-alive connection on the worker that accepted it, and every worker
races for each new connection, so 32 clients can land 24 on one worker and 8 on the other;
the busier worker's clients then wait longer for as long as they stay connected
(docs/BENCHMARKS.md). Here each worker publishes its open-connection count in memory that
the master shares with all its workers, and a worker that holds more connections than a
sibling lets that sibling take a new connection first.
"""

from __future__ import annotations

import mmap
import time

from app.intake import IntakeWorker

# How long a busier worker leaves a new connection to a less busy sibling before taking it
# itself (the sibling may be busy or dying). Siblings wake for the same connection together,
# but under load the less busy one can wait a few ms for its CPU. scripts/connection_split.py
# measures the split; with 2 ms (an ad-hoc edit of this constant) one burst of 32 clients in
# three still split 13/19, with 10 ms five in five split 16/16.
YIELD_S = 0.01

_UNKNOWN = 2**62  # a slot with no live worker: never counts as less busy


class ConnectionBoard:
    """Open connections per worker slot, in an anonymous shared mapping inherited on fork."""

    def __init__(self, slots: int) -> None:
        self._map = mmap.mmap(-1, 8 * slots)  # MAP_SHARED: writes are seen by every process
        self._counts = memoryview(self._map).cast("q")
        for slot in range(slots):
            self._counts[slot] = _UNKNOWN

    def publish(self, slot: int, connections: int) -> None:
        if slot < len(self._counts):
            self._counts[slot] = connections

    def forget(self, slot: int) -> None:
        """Mark a slot empty (its worker exited)."""
        self.publish(slot, _UNKNOWN)

    def sibling_has_fewer(self, slot: int, connections: int) -> bool:
        return any(count < connections for other, count in enumerate(self._counts) if other != slot)


board: ConnectionBoard | None = None


def install(slots: int) -> None:
    """Create the board in the master, before any worker is forked."""
    global board
    board = ConnectionBoard(slots)


class BalancedThreadWorker(IntakeWorker):
    """The intake worker (app/intake/) that leaves new connections to less busy siblings.

    A busier worker stops accepting for YIELD_S instead of sleeping: its main loop reads every
    connection it holds, and a connection flood must not stall it 10 ms per accept. After a
    pause it takes a connection still waiting whatever the board says.

    app.server installs the board and sets `wanwu_slot` on each worker before fork.
    """

    yield_until = 0.0

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        board.publish(self.wanwu_slot, self.nr_conns)
        pause = self.yield_until - time.monotonic()
        super().wait_for_and_dispatch_events(min(timeout, pause) if pause > 0 else timeout)

    def set_accept_enabled(self, enabled: bool) -> None:
        if not enabled or time.monotonic() >= self.yield_until:
            super().set_accept_enabled(enabled)

    def accept(self, listener) -> None:  # noqa: ANN001  (a socket, as in gunicorn)
        now = time.monotonic()
        # Right after a pause: the connection a sibling left, taken once whatever the board
        # says. Only once: a quick client's next connection is weighed again.
        after_pause = self.yield_until <= now < self.yield_until + YIELD_S
        self.yield_until = 0.0
        if not after_pause and board.sibling_has_fewer(self.wanwu_slot, self.nr_conns):
            self.yield_until = now + YIELD_S
            super().set_accept_enabled(False)  # gthread's loop re-enables it after the pause
            return
        super().accept(listener)
        board.publish(self.wanwu_slot, self.nr_conns)

    def take_more(self) -> bool:
        board.publish(self.wanwu_slot, self.nr_conns)
        return not board.sibling_has_fewer(self.wanwu_slot, self.nr_conns)
