"""The raw-body /predict path outside Flask (app/adapters/raw_predict.py) answers as the
Flask route does: the same status, body, headers, access log and metrics, for answers and
for every error; everything else still reaches Flask."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid

import pytest
from flask import request_started
from werkzeug.test import Client

from app.listeners import LISTENER
from benchkit.images import image_bytes

JPEG = image_bytes(seed=3)
# What differs between any two answers: the timings, and so the length.
VARYING = {"Date", "Content-Length"}
TIMING = re.compile(rb'"timing_ms":\{[^}]*\}')


def both(app):
    """The app as served (raw bodies outside Flask) and the Flask app alone."""
    return Client(app.wsgi_app), Client(app.wsgi_app.flask)


def comparable(response) -> tuple[int, bytes, dict[str, str]]:
    """Status, body bytes without the timings, headers without the varying ones."""
    headers = {k: v for k, v in response.headers.items() if k not in VARYING}
    return response.status_code, TIMING.sub(b"", response.data), headers


def post(client: Client, data: bytes = JPEG, query: str = "", **headers: str):
    headers = {"Content-Type": "image/jpeg", "X-Request-ID": "same-id", **headers}
    return client.post(f"/predict{query}", data=data, headers=headers)


@pytest.mark.parametrize(
    ("query", "data", "content_type", "status"),
    [
        ("", JPEG, "image/jpeg", 200),
        ("?topk=5&lang=zh", JPEG, "image/jpeg; charset=binary", 200),
        ("?topk=5&topk=7", JPEG, "application/octet-stream", 200),
        ("?topk=0", JPEG, "image/jpeg", 422),
        ("?topk=%FF", JPEG, "image/jpeg", 422),
        ("?lang=fr", JPEG, "image/jpeg", 422),
        ("?model=nope", JPEG, "image/jpeg", 404),
        ("?model=tiny&version=9", JPEG, "image/jpeg", 404),
        ("", b"", "image/jpeg", 400),
        ("", b"not an image", "image/png", 415),
        ("", JPEG[: len(JPEG) // 2], "IMAGE/JPEG", 400),
    ],
)
def test_answers_as_the_flask_route(start_app, query, data, content_type, status):
    lean, flask = both(start_app())
    answers = [
        comparable(post(c, data, query, **{"Content-Type": content_type})) for c in (lean, flask)
    ]
    assert answers[0][0] == status
    assert answers[0] == answers[1]


def test_the_raw_path_skips_flask_and_the_rest_reaches_it(start_app):
    app = start_app()
    lean, _ = both(app)
    seen = []

    def started(sender, **extra):
        seen.append(extra)

    with request_started.connected_to(started, app):
        assert post(lean).status_code == 200
        assert seen == []
        multipart = {"file": (io.BytesIO(JPEG), "a.jpg")}
        assert lean.post("/predict", data=multipart).status_code == 200
        chunked = lean.post(
            "/predict",
            input_stream=io.BytesIO(JPEG),
            headers={"Content-Type": "image/jpeg", "Transfer-Encoding": "chunked"},
            environ_overrides={"wsgi.input_terminated": True},  # as Gunicorn says of chunks
        )
        assert chunked.status_code == 200
        assert lean.get("/healthz").status_code == 200
    assert len(seen) == 3


def test_on_the_management_listener_it_is_not_served(start_app):
    lean, _ = both(start_app())
    response = lean.post(
        "/predict",
        data=JPEG,
        headers={"Content-Type": "image/jpeg"},
        environ_overrides={LISTENER: "management"},
    )
    assert response.status_code == 404
    assert "inference is served on WANWU_BIND" in response.get_json()["error"]["message"]


def test_keys_and_rate_limits_as_the_flask_route(start_app):
    # Keys of this test's own: the rate-limit table is the process's, and other tests' calls
    # as "k1" count in it.
    keys = (f"lean-{uuid.uuid4().hex}", f"flask-{uuid.uuid4().hex}")
    lean, flask = both(start_app(rate_limit="2/hour", api_keys=keys))
    refused = [comparable(post(c)) for c in (lean, flask)]
    assert refused[0][0] == 401
    assert refused[0] == refused[1]
    # Each path calls as its own key, so each has its own allowance of two.
    for n in range(3):
        pair = [
            post(c, Authorization=f"Bearer {key}")
            for c, key in zip((lean, flask), keys, strict=True)
        ]
        assert [r.status_code for r in pair] == ([200, 200] if n < 2 else [429, 429])
        assert sorted(pair[0].headers.keys()) == sorted(pair[1].headers.keys())
        assert pair[0].headers["RateLimit-Policy"] == pair[1].headers["RateLimit-Policy"]
        remaining = [r.headers["RateLimit"].split(";")[1] for r in pair]
        assert remaining[0] == remaining[1] == f"r={max(0, 1 - n)}"
    assert int(pair[0].headers["Retry-After"]) > 0


def test_a_body_over_the_upload_limit_is_refused_as_flask_does(start_app):
    lean, flask = both(start_app(max_upload_mb=0.001))
    answers = [comparable(post(c, JPEG + bytes(2000))) for c in (lean, flask)]
    assert answers[0][0] == 413
    assert answers[0] == answers[1]


def test_the_access_log_and_metrics_match(start_app, caplog):
    app = start_app()
    lean, flask = both(app)

    def requests_counted() -> float:
        text = flask.get("/metrics").get_data(as_text=True)
        lines = [line for line in text.splitlines() if line.startswith("wanwu_requests_total{")]
        return sum(float(line.split()[-1]) for line in lines if 'route="/predict"' in line)

    before = requests_counted()
    with caplog.at_level(logging.INFO, logger="wanwu.access"):
        for client in (lean, flask):
            post(client, query="?topk=0")
            post(client, X_Forwarded_For="1.2.3.4")
    assert requests_counted() == before + 4
    entries = [json.loads(r.getMessage()) for r in caplog.records if r.name == "wanwu.access"]
    for entry in entries:
        assert entry.pop("timing_ms")
    assert [e["status"] for e in entries] == [422, 200, 422, 200]
    assert entries[:2] == entries[2:]
    assert entries[1]["batch_size"] == 1 and entries[1]["bytes_in"] == len(JPEG)
