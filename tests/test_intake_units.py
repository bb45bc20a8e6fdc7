"""The intake's pure parts: client addresses behind proxies, early answers, its settings."""

from __future__ import annotations

import ipaddress
import json

import pytest
from gunicorn.config import Config

from app import errors
from app.intake.policy import answer, forwarded_client, unsupported_settings
from app.settings import Settings, SettingsError

PROXIES = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32")]


@pytest.mark.parametrize(
    ("header", "client"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("203.0.113.9, 10.1.2.3", "203.0.113.9"),  # the proxy chain is skipped
        ("198.51.100.1, 203.0.113.9, 10.1.2.3", "203.0.113.9"),  # a client cannot spoof past it
        ("10.1.2.3, 127.0.0.1", "10.1.2.3"),  # every hop trusted: the first one
        ("", None),
    ],
)
def test_the_client_is_the_nearest_untrusted_hop(header, client):
    assert forwarded_client(header, PROXIES) == client


def test_an_early_answer_has_the_json_shape_and_the_security_headers():
    raw = answer(errors.Overloaded("busy", retry_after=1))
    head, body = raw.split(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"Retry-After: 1" in head and b"X-Content-Type-Options: nosniff" in head
    assert b"Connection: close" in head and f"Content-Length: {len(body)}".encode() in head
    assert json.loads(body) == {"error": {"code": "overloaded", "message": "busy"}}


@pytest.mark.parametrize(
    "env",
    [
        {"WANWU_HEADER_TIMEOUT_S": "0"},
        {"WANWU_BODY_MIN_KBPS": "0"},
        {"WANWU_BUFFER_MB": "10", "WANWU_MAX_UPLOAD_MB": "20"},
        {"WANWU_MAX_CONNECTIONS": "0"},
        {"WANWU_MAX_CONNECTIONS_PER_ADDRESS": "-1"},
        {"WANWU_TRUST_PROXY": "proxy.example"},
    ],
)
def test_bad_intake_settings_stop_start_up(env):
    with pytest.raises(SettingsError, match=next(iter(env))):
        Settings.from_env(env)


def test_trust_proxy_defaults_to_loopback_and_can_be_none():
    assert Settings.from_env({}).trust_proxy == ("127.0.0.1", "::1")
    assert Settings.from_env({"WANWU_TRUST_PROXY": "none"}).trust_proxy == ("none",)


@pytest.mark.parametrize(
    ("setting", "value", "named"),
    [
        ("certfile", "/etc/ssl/cert.pem", "TLS"),
        ("http_protocols", "h2,h1", "HTTP/2"),
        ("http2_cleartext", "upgrade", "HTTP/2"),
        ("proxy_protocol", "v2", "proxy_protocol"),
        ("protocol", "uwsgi", "protocol=uwsgi"),
    ],
)
def test_settings_the_intake_cannot_serve_are_named(setting, value, named):
    cfg = Config()
    assert unsupported_settings(cfg) is None
    cfg.set(setting, value)
    assert named in unsupported_settings(cfg)
