"""How request_cost shares each thread's CPU time out to stages (benchkit/cpu.py)."""

from __future__ import annotations

import collections

import pytest

from benchkit import cpu

MODEL = "wanwu-model"


def test_each_kind_of_thread_shares_out_only_its_own_time():
    used = {
        100: ("python", 1.0),  # the worker's event loop (its main thread)
        101: (MODEL, 2.0),
        102: ("python", 1.0),  # a request thread
        103: (MODEL, 0.5),  # an OpenMP helper of the model's thread: py-spy cannot see it
    }
    samples = {
        100: collections.Counter({"connections": 5}),
        # The model's thread is runnable throughout, so it is sampled far more often than
        # the request thread that shares its CPU; its samples must not take that thread's time.
        101: collections.Counter({"forward": 190, "batching hand-offs": 10}),
        102: collections.Counter({"decode": 10, "web framework": 10}),
    }
    stages = cpu.split_cpu(used, samples, MODEL, frozenset({100}))
    assert stages["connections"] == pytest.approx(1.0)
    assert stages["forward"] == pytest.approx(2.0 * 0.95 + 0.5)
    assert stages["batching hand-offs"] == pytest.approx(0.1)
    assert stages["decode"] == pytest.approx(0.5)
    assert stages["web framework"] == pytest.approx(0.5)
    assert sum(stages.values()) == pytest.approx(4.5)
    kinds = cpu.cpu_by_kind(used, MODEL, frozenset({100}))
    assert kinds == {"loop": 1.0, "model": 2.5, "requests": 1.0}


def test_time_of_threads_never_sampled_stays_in_the_total():
    used = {100: ("python", 1.0), 102: ("python", 0.25)}
    stages = cpu.split_cpu(used, {}, MODEL, frozenset({100}))
    assert stages[cpu.REST] == pytest.approx(1.25)


def test_a_sample_in_the_event_loops_wait_or_a_condition_is_not_work():
    assert (
        cpu.stage_of(
            ["run (gunicorn/workers/gthread.py:1)", "EpollSelector.select (selectors.py:468)"]
        )
        is None
    )
    assert cpu.stage_of(["wait (app/engine.py:1)", "Condition.wait (threading.py:320)"]) is None
    resize = ["pixels (app/imaging.py:1)", "interpolate (torch/nn/functional.py:5003)"]
    assert cpu.stage_of(resize) == "resize/crop"
    copy = [
        "pixels (app/imaging.py:1)",
        "channels_last (app/imaging.py:2)",
        "tobytes (PIL/Image.py:3)",
    ]
    assert cpu.stage_of(copy) == "resize/crop"
