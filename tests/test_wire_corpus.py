"""The hostile HTTP corpus (benchkit/wire.py) against real Gunicorn while a normal client
runs: each case gets its 4xx or a clean close, no worker restarts, no traceback is logged,
and the normal client loses nothing."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from benchkit.attacks import intake_metrics
from benchkit.images import image_bytes
from benchkit.wire import WireCase, exchange, wire_cases

pytestmark = pytest.mark.integration
CASES = wire_cases()
IMAGE = image_bytes()


class NormalClient(threading.Thread):
    """Posts an image on a kept-alive connection, again and again, until stopped."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.statuses, self.errors = url, [], []
        self.stopping = threading.Event()

    def run(self) -> None:
        with requests.Session() as session:
            while not self.stopping.is_set():
                try:
                    response = session.post(
                        f"{self.url}/predict",
                        data=IMAGE,
                        headers={"Content-Type": "image/jpeg"},
                        timeout=30,
                    )
                    self.statuses.append(response.status_code)
                except requests.RequestException as e:
                    self.errors.append(repr(e))


@pytest.fixture(scope="module")
def run(tiny_model_path, gunicorn):
    """Every case sent, eight at a time, while a normal client runs; the server's state after."""
    with gunicorn(
        workers=2,
        model=tiny_model_path,
        http_threads=4,
        header_timeout_s=2,  # cases whose head never ends are closed quickly
    ) as server:
        pids = sorted(server.worker_pids())
        normal = NormalClient(server.url)
        normal.start()
        with ThreadPoolExecutor(8) as pool:
            outcomes = dict(
                zip(
                    CASES,
                    pool.map(lambda c: exchange(server.port, c.data, c.half_close), CASES),
                    strict=True,
                )
            )
        normal.stopping.set()
        normal.join(60)
        yield {
            "outcomes": outcomes,
            "normal": normal,
            "pids": (pids, sorted(server.worker_pids())),
            "log": server.log(),
            "errors": intake_metrics(server.url).get("error", 0),
        }


def test_the_corpus_is_large_and_named_once():
    assert len(CASES) >= 60 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_each_case_gets_its_answer_or_a_clean_close(run, case: WireCase):
    outcome = run["outcomes"][case]
    assert outcome.closed, f"the server kept the connection open: {outcome}"
    if case.status is None:
        assert outcome.statuses == [], outcome
    else:
        assert outcome.statuses[:1] == [case.status], outcome
    if case.then is not None:  # the connection stayed usable for the next request
        assert outcome.statuses[1:] == [case.then], outcome
    assert all(s < 500 or s == 503 for s in outcome.statuses), outcome


def test_no_worker_restarted_and_nothing_was_lost(run):
    before, after = run["pids"]
    assert before == after
    assert "Traceback" not in run["log"] and "Exception in worker" not in run["log"]
    assert run["errors"] == 0  # no case reached the intake's fence: each was refused by policy
    normal = run["normal"]
    assert normal.errors == [] and normal.statuses and set(normal.statuses) == {200}
