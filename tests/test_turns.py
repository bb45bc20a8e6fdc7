"""Oldest-first turns: the limit holds, the lowest rank waiting goes next."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest

from app.batcher import Batcher
from app.turns import Turns
from benchkit.attacks import wait_until


def holder(turn: Callable[[], AbstractContextManager[None]], name: object, order: list, release):
    """A thread that takes `turn()`, notes `name` in `order`, and holds it until `release`."""

    def run() -> None:
        with turn():
            order.append(name)
            release.wait(10)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_the_lowest_rank_waiting_goes_next_not_the_first_to_ask():
    turns = Turns(1)
    order: list[int] = []
    release = threading.Event()
    threads = [holder(lambda: turns.hold(0), 0, order, release)]
    wait_until(lambda: order == [0], 10, "the first turn taken")
    for asked, rank in enumerate((5, 3, 9, 1), start=1):  # ask in this order, turn held
        threads.append(holder(lambda rank=rank: turns.hold(rank), rank, order, release))
        wait_until(lambda asked=asked: turns.waiting == asked, 10, f"{asked} waiting")
    release.set()
    for thread in threads:
        thread.join(10)
    assert order == [0, 1, 3, 5, 9]


def test_no_more_than_the_limit_hold_a_turn_at_once():
    turns = Turns(2)
    order: list[int] = []
    release = threading.Event()
    threads = [holder(lambda r=r: turns.hold(r), r, order, release) for r in range(5)]
    wait_until(lambda: len(order) == 2 and turns.waiting == 3, 10, "two held, three waiting")
    release.set()
    for thread in threads:
        thread.join(10)
    assert sorted(order) == list(range(5))


def test_no_limit_never_waits_and_the_limit_is_set_before_use():
    turns = Turns()
    with turns.hold(1), turns.hold(2), turns.hold(3):
        assert turns.waiting == 0
    turns.set_limit(1)
    with turns.hold(1), pytest.raises(RuntimeError, match="held"):
        turns.set_limit(2)
    with pytest.raises(ValueError, match="-1"):
        Turns(-1)


def test_a_request_admitted_earlier_decodes_first():
    batcher = Batcher(lambda batch: batch, max_batch=4, max_wait_s=0.0, queue_max=8)
    batcher.start(decoders=1)
    first, second, third = (batcher.reserve(1, 1e12) for _ in range(3))
    order: list[str] = []
    release = threading.Event()
    threads = [holder(first.turn, "first", order, release)]
    wait_until(lambda: order == ["first"], 10, "the first decoding")
    threads.append(holder(third.turn, "third", order, release))
    wait_until(lambda: batcher.turns.waiting == 1, 10, "the third waiting")
    threads.append(holder(second.turn, "second", order, release))  # asks last
    wait_until(lambda: batcher.turns.waiting == 2, 10, "the second waiting")
    release.set()
    for thread in threads:
        thread.join(10)
    assert order == ["first", "second", "third"]
    for reservation in (first, second, third):
        reservation.__exit__(None, None, None)
    batcher.stop(10)
