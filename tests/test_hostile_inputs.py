"""Every hostile or malformed request gets its documented answer from real Gunicorn, and
the service neither crashes, answers 5xx, nor keeps the memory."""

from __future__ import annotations

import pytest
import requests

from app.memory import smaps_rollup
from benchkit.hostile import Case, cases
from benchkit.server import GunicornServer

pytestmark = pytest.mark.integration
CASES = cases()


@pytest.fixture(scope="module")
def server(real_model_path, gunicorn):
    with gunicorn(workers=2, model=real_model_path, max_batch=4) as srv:
        srv.pids_before = sorted(srv.worker_pids())
        srv.rss_before = sum(smaps_rollup(p)["rss"] for p in srv.pids_before)
        yield srv


def send(server: GunicornServer, case: Case) -> requests.Response:
    path = "/nowhere" if case.name == "unknown-route" else "/predict"
    headers = dict(case.headers)
    if case.content_type:
        headers["Content-Type"] = case.content_type
    return requests.request(
        case.method,
        f"{server.url}{path}{case.query}",
        data=case.body if not case.files else None,
        files=case.files or None,
        headers=headers,
        timeout=60,
    )


@pytest.fixture(scope="module")
def answers(server) -> dict[str, requests.Response]:
    """The whole corpus, sent once: each case's test reads its answer, and the aftermath test
    knows the corpus ran before it, whatever order the tests run in."""
    return {case.name: send(server, case) for case in CASES}


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_each_case_gets_its_documented_answer(answers, case):
    response = answers[case.name]
    assert response.status_code == case.status, response.text[:300]
    body = response.json()
    if case.code is None:
        assert len(body["predictions" if "predictions" in body else "results"]) >= 1
    else:
        assert body["error"]["code"] == case.code and body["error"]["message"]


def test_enormous_headers_are_refused_by_gunicorn_not_crashed(server):
    response = requests.post(
        f"{server.url}/predict", data=b"x", headers={"X-Big": "a" * 20_000}, timeout=30
    )
    assert response.status_code == 431  # gunicorn refuses headers over 8190 bytes, before Flask
    assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200


def test_no_worker_died_and_no_memory_was_kept(server, answers):
    assert len(answers) == len(CASES)  # the whole corpus was sent first
    assert sorted(server.worker_pids()) == server.pids_before
    rss_after = sum(smaps_rollup(p)["rss"] for p in server.pids_before)
    assert rss_after - server.rss_before < 150 * 2**20, (server.rss_before, rss_after)
