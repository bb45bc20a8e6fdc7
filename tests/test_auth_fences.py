"""Who a caller is, against real Gunicorn: failed keys counted per address (429 past the
count), key lists that open nothing by accident, and forwarded addresses that must be
addresses, an IPv6 caller being its /64."""

from __future__ import annotations

import pytest
import requests

from app import lockout
from app.settings import Settings, SettingsError, short_keys
from benchkit.images import image_bytes

pytestmark = pytest.mark.integration

KEY = "inference-key-0123456789"
ADMIN_KEY = "admin-key-0123456789"
JPEG = image_bytes()


def predict(url: str, forwarded: str, key: str | None = None) -> requests.Response:
    headers = {"Content-Type": "image/jpeg", "X-Forwarded-For": forwarded}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return requests.post(f"{url}/predict", data=JPEG, headers=headers, timeout=60)


def until_refused(send, most: int) -> list[requests.Response]:
    """Answers to `send()` up to and including the first that is not a 401."""
    answers = []
    while len(answers) < most and (not answers or answers[-1].status_code == 401):
        answers.append(send())
    return answers


@pytest.fixture(scope="module")
def keyed(tiny_model_path, gunicorn):
    with gunicorn(
        workers=2,
        management=True,
        model=tiny_model_path,
        api_keys=KEY,
        admin_keys=ADMIN_KEY,
    ) as server:
        yield server


def test_failed_keys_are_counted_per_address_then_429(keyed):
    allowance = lockout.FAILURES.calls
    answers = until_refused(lambda: predict(keyed.url, "198.51.100.7", "wrong"), 2 * allowance)
    assert [a.status_code for a in answers[:allowance]] == [401] * allowance
    assert all(a.headers["WWW-Authenticate"].startswith("Bearer") for a in answers[:allowance])
    refused = answers[-1]  # the count refills slower than requests go: refused well before 2x
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert "failed authentications" in refused.json()["error"]["message"]
    assert predict(keyed.url, "198.51.100.7", KEY).status_code == 200  # a valid key still serves
    assert predict(keyed.url, "198.51.100.8", "wrong").status_code == 401  # another address
    # The management port counts apart: the same address starts with a whole allowance there.
    manage = lambda: requests.get(  # noqa: E731
        f"{keyed.management_url}/models",
        headers={"Authorization": "Bearer wrong", "X-Forwarded-For": "198.51.100.7"},
        timeout=60,
    )
    answers = until_refused(manage, 2 * allowance)
    assert len(answers) > allowance and answers[-1].status_code == 429
    assert "Retry-After" in answers[-1].headers


@pytest.mark.parametrize("value", ["", " ", ",", " , "])
def test_a_key_list_holding_no_key_is_a_start_up_error(tiny_model_path, value, gunicorn):
    with pytest.raises(SettingsError, match="WANWU_API_KEYS=.* holds no key"):
        Settings.from_env({"WANWU_API_KEYS": value})
    server = gunicorn(workers=1, model=tiny_model_path, admin_keys=value)
    with pytest.raises(RuntimeError, match="WANWU_ADMIN_KEYS=.* holds no key"):
        server.start(timeout=60)
    assert server.proc.returncode != 0


def test_short_keys_are_named_in_a_warning():
    settings = Settings(api_keys=("short", KEY), admin_keys=("tiny",))
    assert short_keys(settings) == [
        "WANWU_ADMIN_KEYS holds a key of 4 characters; use 16 or more (e.g. `python -c "
        "'import secrets; print(secrets.token_urlsafe())'`)",
        "WANWU_API_KEYS holds a key of 5 characters; use 16 or more (e.g. `python -c "
        "'import secrets; print(secrets.token_urlsafe())'`)",
    ]


@pytest.fixture(scope="module")
def limited(tiny_model_path, gunicorn):
    """No keys: each caller is its address; 3 calls an hour each."""
    with gunicorn(workers=2, model=tiny_model_path, rate_limit="3/hour") as server:
        yield server


def test_a_forwarded_string_that_is_no_address_is_no_new_caller(limited):
    # The test's client is the trusted proxy (127.0.0.1): garbage names nobody, so the
    # proxy's own address is the caller every time, and its allowance runs out.
    codes = [predict(limited.url, junk).status_code for junk in ("x", "<script>", "1.2.3", "a")]
    assert codes == [200, 200, 200, 429]
    metrics = requests.get(f"{limited.url}/metrics", timeout=10).text
    assert "wanwu_forwarded_for_invalid_total 4.0" in metrics


def test_ipv6_callers_are_grouped_by_64(limited):
    same = [f"2001:db8:1:2::{n}" for n in range(1, 5)]
    assert [predict(limited.url, a).status_code for a in same] == [200, 200, 200, 429]
    assert predict(limited.url, "2001:db8:1:3::1").status_code == 200  # the next /64
    assert predict(limited.url, "203.0.113.9, 2001:db8:1:2::99").status_code == 429
