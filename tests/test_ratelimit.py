"""Per-caller rate limits (app/ratelimit.py): GCRA, shared across forked processes and
Gunicorn workers, 429 with Retry-After, the RateLimit fields on every answer."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.sharedctypes import Synchronized

import http_sfv
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from app.ratelimit import Limiter, Rate
from benchkit.images import image_bytes


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_parses_the_setting_and_refuses_other_text():
    assert Rate.parse("200/minute") == Rate(200, 60)
    assert Rate.parse("1/day").interval_s == 86400
    for bad in ("0/minute", "200/fortnight", "200", "/minute"):
        with pytest.raises(ValueError, match="N/second"):
            Rate.parse(bad)


def test_a_caller_gets_its_allowance_at_once_then_one_call_per_interval():
    clock = Clock()
    limiter = Limiter(Rate.parse("3/minute"), clock)
    first = [limiter.hit("alice") for _ in range(4)]
    assert [d.allowed for d in first] == [True, True, True, False]
    assert [d.remaining for d in first] == [2, 1, 0, 0]
    refused = first[-1]
    assert refused.retry_after_s == 20 and refused.reset_s == 60
    # With calls left, t is until the allowance is whole; with none, until the next call (the
    # last allowed call and the 429 both say 20 s, the 429's Retry-After).
    assert [standing(d.headers()) for d in first] == [
        (3, 60, 2, 20),
        (3, 60, 1, 40),
        (3, 60, 0, 20),
        (3, 60, 0, 20),
    ]
    assert limiter.hit("bob").allowed  # another caller has its own allowance
    clock.now += 19.9
    assert not limiter.hit("alice").allowed
    clock.now += 0.1  # one interval (60 s / 3) after the third call: one more call
    assert limiter.hit("alice").allowed and not limiter.hit("alice").allowed
    clock.now += 60  # idle a whole period: the allowance is whole again
    assert [limiter.hit("alice").allowed for _ in range(4)] == [True, True, True, False]


def test_a_full_table_reuses_slots_whose_allowance_is_whole(monkeypatch):
    from app import ratelimit

    monkeypatch.setattr(ratelimit, "SLOTS", 4)
    monkeypatch.setattr(ratelimit, "PROBE", 4)
    clock = Clock()
    limiter = Limiter(Rate.parse("1/minute"), clock)
    assert all(limiter.hit(f"c{n}").allowed for n in range(4))  # every slot taken
    assert not limiter.hit("c0").allowed  # c0 is still remembered
    clock.now += 60  # every allowance whole: their slots are free again
    assert all(limiter.hit(f"d{n}").allowed for n in range(4))
    assert all(not limiter.hit(f"d{n}").allowed for n in range(4))


def standing(headers) -> tuple[int, int, int, int]:  # noqa: ANN001
    """(q, w, r, t) of the RateLimit-Policy and RateLimit fields, read as structured fields."""
    policy, limit = http_sfv.List(), http_sfv.List()
    policy.parse(headers["RateLimit-Policy"].encode())
    limit.parse(headers["RateLimit"].encode())
    assert [item.value for item in policy] == [item.value for item in limit] == ["default"]
    (p,), (r,) = policy, limit
    return p.params["q"], p.params["w"], r.params["r"], r.params["t"]


def _hammer(limiter: Limiter, calls: int, allowed: Synchronized) -> None:
    allowed.value = sum(limiter.hit("shared").allowed for _ in range(calls))


def test_forked_processes_share_one_exact_count():
    """Four processes race 100 calls each for one caller allowed 150: exactly 150 pass."""
    limiter = Limiter(Rate.parse("150/hour"))
    fork = multiprocessing.get_context("fork")
    counts = [fork.Value("i", -1) for _ in range(4)]
    procs = [fork.Process(target=_hammer, args=(limiter, 100, c)) for c in counts]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    assert [p.exitcode for p in procs] == [0] * 4
    assert sum(c.value for c in counts) == 150
    assert not limiter.hit("shared").allowed


def test_every_protocol_draws_on_one_allowance_and_answers_429(start_app):
    app = start_app(rate_limit="3/hour")
    client = app.test_client()
    image = image_bytes(size=(32, 32))
    calls = {
        "/predict": lambda: client.post("/predict", data=image, content_type="image/jpeg"),
        "/predictions": lambda: client.post("/predictions/tiny", data=image),
        "/v2 infer": lambda: client.post(
            "/v2/models/tiny/infer",
            json={"inputs": [{"name": "IMAGE", "shape": [1], "datatype": "BYTES", "data": [""]}]},
        ),
    }
    refused_before = _rate_limited(client)  # other in-process tests share the counter
    assert [call().status_code for call in calls.values()] == [200, 200, 400]  # 3 calls
    for protocol, call in calls.items():
        response = call()
        assert response.status_code == 429, protocol
        assert "3/hour" in response.get_data(as_text=True), protocol
        assert response.headers["Retry-After"] == "1200"
        assert standing(response.headers) == (3, 3600, 0, 1200)
    health = client.get("/healthz")  # health and metadata are not counted: the policy alone
    assert health.status_code == 200 and "RateLimit" not in health.headers
    assert health.headers["RateLimit-Policy"] == '"default";q=3;w=3600'
    assert _rate_limited(client) == refused_before + 3


def _rate_limited(client) -> float:
    """wanwu_rate_limited_total as /metrics reports it."""
    scraped = client.get("/metrics").get_data(as_text=True)
    families = text_string_to_metric_families(scraped)
    return next(f.samples[0].value for f in families if f.name == "wanwu_rate_limited")


def test_each_api_key_has_its_own_allowance(start_app):
    client = start_app(rate_limit="2/hour", api_keys=("k1", "k2")).test_client()

    def status(key: str) -> int:
        return client.post("/predict", headers={"Authorization": f"Bearer {key}"}).status_code

    assert [status("k1") for _ in range(3)] == [400, 400, 429]  # no image, but counted
    assert [status("k2") for _ in range(3)] == [400, 400, 429]
    assert status("nope") == 401  # refused before it could draw on anyone's allowance


@pytest.mark.integration
def test_two_gunicorn_workers_count_together(tiny_model_path, gunicorn):
    """2x the limit through two real workers gets exactly `limit` 429s: key a's calls through
    one worker use its allowance up for the other; key b's race through both at once."""
    limit = 12
    image = image_bytes(size=(64, 64))
    with gunicorn(
        workers=2, model=tiny_model_path, rate_limit=f"{limit}/day", api_keys="a,b"
    ) as server:
        by_worker: dict[int, requests.Session] = {}
        sessions = []
        while len(by_worker) < 2 and len(sessions) < 40:
            # A kept-alive connection stays on the worker that accepted it; app.balance gives
            # new connections to the worker holding fewer.
            session = requests.Session()
            sessions.append(session)
            pid = session.get(f"{server.url}/v1/model", timeout=30).json()["worker"]["pid"]
            by_worker.setdefault(pid, session)
        assert len(by_worker) == 2, "no connection landed on the second worker"
        (pid_a, first), (pid_b, second) = by_worker.items()

        def predict(session: requests.Session, key: str) -> requests.Response:
            return session.post(
                f"{server.url}/predict",
                data=image,
                headers={"Content-Type": "image/jpeg", "Authorization": f"Bearer {key}"},
                timeout=30,
            )

        through_a = [predict(first, "a") for _ in range(limit)]
        through_b = [predict(second, "a") for _ in range(limit)]
        with ThreadPoolExecutor(2) as pool:
            racing = pool.map(
                lambda s: [predict(s, "b").status_code for _ in range(limit)], by_worker.values()
            )
            raced = [code for codes in racing for code in codes]
        # Every connection stayed where it was: each worker saw its half.
        assert first.get(f"{server.url}/v1/model", timeout=30).json()["worker"]["pid"] == pid_a
        assert second.get(f"{server.url}/v1/model", timeout=30).json()["worker"]["pid"] == pid_b
        text = requests.get(f"{server.url}/metrics", timeout=30).text
        for session in sessions:
            session.close()
    assert [r.status_code for r in through_a] == [200] * limit
    assert [r.status_code for r in through_b] == [429] * limit
    # Each 200 counts down the one allowance, whichever worker answered; each 429's t is its
    # Retry-After.
    assert [standing(r.headers)[2] for r in through_a] == list(range(limit - 1, -1, -1))
    assert {standing(r.headers)[:3] for r in through_b} == {(limit, 86400, 0)}
    assert all(standing(r.headers)[3] == int(r.headers["Retry-After"]) for r in through_b)
    assert sorted(raced) == [200] * limit + [429] * limit
    assert f"wanwu_rate_limited_total {float(2 * limit)}" in text
