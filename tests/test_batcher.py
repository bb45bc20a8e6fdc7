"""The dynamic batcher with a fake model: batching, routing, isolation, bounds, deadlines."""

from __future__ import annotations

import threading

import pytest
import torch

from app.batcher import SHARE, Batcher, BatchStats, DeadlineExceeded, Overloaded, Stopped


class FakeModel:
    """Doubles its input; can hold a pass open, fail on a marked image, and records batches."""

    def __init__(self) -> None:
        self.batches: list[list[float]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.entered.set()
        self.gate.wait(10)
        values = batch[:, 0].tolist()
        self.batches.append(values)
        if -1.0 in values:
            raise ValueError("poisoned image")
        return batch * 2


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def image(value: float) -> torch.Tensor:
    return torch.full((1,), value)


@pytest.fixture
def model() -> FakeModel:
    return FakeModel()


@pytest.fixture
def make_batcher(model: FakeModel):
    made: list[Batcher] = []

    def factory(**kwargs: object) -> Batcher:
        options = {"max_batch": 4, "max_wait_s": 5.0, "queue_max": 16, **kwargs}
        batcher = Batcher(model, **options)  # type: ignore[arg-type]
        batcher.start()
        made.append(batcher)
        return batcher

    yield factory
    model.gate.set()
    for batcher in made:
        batcher.stop(timeout=10)


def submit(batcher: Batcher, value: float, deadline: float = 1e12):
    with batcher.reserve(1, deadline) as reservation:
        return reservation.submit(image(value))


def test_requests_queued_while_busy_form_full_batches(make_batcher, model):
    batcher = make_batcher()
    model.gate.clear()
    first = submit(batcher, 0)
    assert model.entered.wait(5)
    rest = [submit(batcher, v) for v in range(1, 7)]
    model.gate.set()
    results = [f.result(5) for f in [first, *rest]]
    assert model.batches == [[0], [1, 2, 3, 4], [5, 6]]
    # Each caller gets the output of its own image, whatever batch it landed in.
    assert [float(r.output[0]) for r in results] == [2.0 * v for v in range(7)]
    assert [r.batch_size for r in results] == [1, 4, 4, 4, 4, 2, 2]


def test_idle_model_runs_a_lone_request_without_waiting(make_batcher, model):
    batcher = make_batcher(max_wait_s=30.0)
    result = submit(batcher, 1).result(timeout=10)  # far less than max_wait
    assert result.batch_size == 1
    assert model.batches == [[1]]


def test_partial_batch_waits_for_images_still_decoding(make_batcher, model):
    batcher = make_batcher(max_wait_s=30.0)
    with batcher.reserve(2, 1e12) as reservation:
        first = reservation.submit(image(1))
        # The second image is still "decoding": the batcher must hold the first back.
        assert not model.entered.wait(0.2)
        second = reservation.submit(image(2))
    assert first.result(5).batch_size == second.result(5).batch_size == 2
    assert model.batches == [[1, 2]]


def test_wait_for_stragglers_is_bounded_by_max_wait(make_batcher, model):
    batcher = make_batcher(max_wait_s=0.05)
    with batcher.reserve(2, 1e12) as reservation:
        first = reservation.submit(image(1))
        assert first.result(timeout=10).batch_size == 1  # ran without the second
    assert model.batches == [[1]]


def test_a_failing_pass_fails_only_its_own_images(make_batcher, model):
    batcher = make_batcher()
    model.gate.clear()
    blocker = submit(batcher, 0)
    assert model.entered.wait(5)
    poisoned = [submit(batcher, v) for v in (1, -1, 3, 4)]
    healthy = submit(batcher, 5)
    model.gate.set()
    assert float(blocker.result(5).output[0]) == 0
    for future in poisoned:
        with pytest.raises(ValueError, match="poisoned"):
            future.result(5)
    assert float(healthy.result(5).output[0]) == 10.0
    # The thread survived and keeps serving.
    assert float(submit(batcher, 7).result(5).output[0]) == 14.0


def test_output_count_mismatch_is_an_error_not_a_misroute():
    # A long max wait: the batcher holds the first image until its reserved
    # neighbour arrives, so both are in one pass whatever the thread timing.
    batcher = Batcher(lambda batch: batch[:1], max_batch=4, max_wait_s=30, queue_max=8)
    batcher.start()
    try:
        futures = []
        with batcher.reserve(2, 1e12) as reservation:
            futures = [reservation.submit(image(1)), reservation.submit(image(2))]
        for future in futures:
            with pytest.raises(RuntimeError, match="outputs for a batch of"):
                future.result(5)
    finally:
        batcher.stop(5)


def test_admission_is_bounded_and_places_come_back(make_batcher, model):
    batcher = make_batcher(queue_max=4)
    model.gate.clear()
    submit(batcher, 0)
    assert model.entered.wait(5)  # the first image is in the model, not the queue
    held = batcher.reserve(4, 1e12)
    with pytest.raises(Overloaded):
        batcher.reserve(1, 1e12)
    assert batcher.depth == 4
    with held:
        held.submit(image(1))  # three images never arrive (say, failed to decode)
    assert batcher.depth == 1
    batcher.reserve(3, 1e12).__exit__(None, None, None)
    model.gate.set()


def test_expired_images_never_reach_the_model(model):
    clock = FakeClock()
    stats: list[BatchStats] = []
    batcher = Batcher(
        model, max_batch=4, max_wait_s=0, queue_max=8, clock=clock, on_batch=stats.append
    )
    batcher.start()
    try:
        model.gate.clear()
        first = submit(batcher, 0, deadline=clock.now + 10)
        assert model.entered.wait(5)
        late = submit(batcher, 1, deadline=clock.now + 1)
        on_time = submit(batcher, 2, deadline=clock.now + 10)
        clock.now += 5  # the first pass "took" 5 s
        model.gate.set()
        first.result(5)
        with pytest.raises(DeadlineExceeded):
            late.result(5)
        assert float(on_time.result(5).output[0]) == 4.0
        assert model.batches == [[0], [2]]
        assert stats[-1].expired == 1 and stats[-1].size == 1
    finally:
        batcher.stop(5)


def test_stop_answers_everything_admitted_then_refuses(make_batcher, model):
    batcher = make_batcher()
    model.gate.clear()
    futures = [submit(batcher, 0)]
    assert model.entered.wait(5)
    futures += [submit(batcher, v) for v in range(1, 6)]
    stopper = threading.Thread(target=batcher.stop, kwargs={"timeout": 10})
    stopper.start()
    with pytest.raises(Stopped):
        batcher.reserve(1, 1e12)
    model.gate.set()
    stopper.join(10)
    assert [float(f.result(5).output[0]) for f in futures] == [2.0 * v for v in range(6)]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_wait_ready_follows_the_warm_up_and_reports_its_failure(model):
    warming = threading.Event()
    ok = Batcher(model, max_batch=4, max_wait_s=0.0, queue_max=4)
    ok.start(warm_up=lambda: warming.wait(10))
    assert ok.wait_ready(0.05) is False  # still warming
    warming.set()
    assert ok.wait_ready(5) is True
    ok.stop(timeout=10)

    def broken() -> None:
        raise RuntimeError("no memory for the warm-up")

    failed = Batcher(model, max_batch=4, max_wait_s=0.0, queue_max=4)
    failed.start(warm_up=broken)
    with pytest.raises(RuntimeError, match="ended before it was ready"):
        failed.wait_ready(1)


def test_batch_stats_report_size_and_waits(make_batcher, model):
    stats: list[BatchStats] = []
    batcher = make_batcher(on_batch=stats.append)
    submit(batcher, 1).result(5)
    assert stats[0].size == 1 and len(stats[0].queue_waits_s) == 1 and stats[0].inference_s >= 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch": 0}, "max_batch must be an integer >= 1"),
        ({"max_wait_s": -1}, "max_wait_s must be >= 0"),
        ({"queue_max": 2}, "queue_max"),
    ],
)
def test_bad_arguments_are_refused_with_the_value(kwargs, message):
    options = {"max_batch": 4, "max_wait_s": 0.0, "queue_max": 8, **kwargs}
    with pytest.raises(ValueError, match=message):
        Batcher(lambda b: b, **options)  # type: ignore[arg-type]


def test_a_pass_holds_one_verb_and_classification_goes_first_for_its_share(model):
    def explain(batch: torch.Tensor) -> list[float]:
        model.batches.append(["explain", *batch[:, 0].tolist()])
        return [-v for v in batch[:, 0].tolist()]

    batcher = Batcher(model, max_batch=1, max_wait_s=0.0, queue_max=16, verbs={"explain": explain})
    model.gate.clear()
    batcher.start()
    try:
        submit(batcher, 0.0)
        assert model.entered.wait(10)  # the model is busy: what follows queues up
        with batcher.reserve(2, 1e12, "explain") as reservation:
            explains = [reservation.submit(image(v)) for v in (1.0, 2.0)]
        classified = [submit(batcher, v) for v in (3.0, 4.0, 5.0, 6.0, 7.0)]
        model.gate.set()
        assert [f.result(10).output for f in explains] == [-1.0, -2.0]
        assert [f.result(10).output.item() for f in classified] == [6.0, 8.0, 10.0, 12.0, 14.0]
        # The older explanations wait through SHARE classification passes, then get one.
        assert SHARE == 3 and model.batches == [
            [0.0], [3.0], [4.0], [5.0], ["explain", 1.0], [6.0], [7.0], ["explain", 2.0]
        ]  # fmt: skip
    finally:
        model.gate.set()
        batcher.stop(timeout=10)
