"""Security headers on every kind of response (app/security.py)."""

from __future__ import annotations

import pytest

from app.security import HEADERS


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/static/app.js"),
        ("GET", "/healthz"),
        ("GET", "/nowhere"),  # a 404 from the JSON error handler
        ("POST", "/predict"),  # a 400: no image
    ],
)
def test_every_response_carries_the_security_headers(client, method, path):
    response = client.open(path, method=method)
    for name, value in HEADERS.items():
        assert response.headers[name] == value, (path, name)


def test_the_page_policy_allows_its_own_assets_and_blob_previews_only():
    policy = dict(d.strip().split(" ", 1) for d in HEADERS["Content-Security-Policy"].split(";"))
    assert policy["script-src"] == policy["style-src"] == "'self'"
    assert policy["img-src"] == "'self' blob: data:"
    assert policy["frame-ancestors"] == "'none'"
