"""Signed bearer tokens (app/tokens.py): real tokens signed with generated keys, checked by
pyjwt wherever API keys are, with a reason for every refusal."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from app import tokens
from app.settings import Settings, SettingsError
from benchkit.images import image_bytes

AUDIENCE = "wanwu"
ISSUER = "https://id.example"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem(private_key) -> bytes:  # noqa: ANN001
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def token(key, algorithm: str = "RS256", headers: dict | None = None, **claims) -> str:  # noqa: ANN001
    now = int(time.time())
    body = {"sub": "user-1", "aud": AUDIENCE, "iss": ISSUER, "exp": now + 300, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm, headers)


@pytest.fixture
def pem_client(start_app, rsa_key, tmp_path):
    path = tmp_path / "issuer.pem"
    path.write_bytes(pem(rsa_key))
    app = start_app(
        jwt_public_key=str(path), jwt_audience=AUDIENCE, jwt_issuer=ISSUER, api_keys=("k1",)
    )
    return app.test_client()


def call(client, bearer: str | None):  # noqa: ANN001
    headers = {"Authorization": f"Bearer {bearer}"} if bearer is not None else {}
    return client.post(
        "/predict", data=image_bytes(size=(32, 32)), content_type="image/jpeg", headers=headers
    )


def refusal(response) -> str:  # noqa: ANN001
    assert response.status_code == 401, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == "unauthorized"
    return error["message"]


def test_a_valid_token_and_an_api_key_both_pass(pem_client, rsa_key):
    assert call(pem_client, token(rsa_key)).status_code == 200
    bearer = {"Authorization": f"Bearer {token(rsa_key)}"}
    image = image_bytes(size=(32, 32))
    assert pem_client.post("/predictions/tiny", data=image, headers=bearer).status_code == 200
    assert pem_client.post("/predictions/tiny", data=image).status_code == 401
    assert call(pem_client, "k1").status_code == 200
    assert "Bearer <key or token>" in refusal(call(pem_client, None))
    assert "Bearer <key or token>" in refusal(call(pem_client, "k2"))


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp": int(time.time()) - 3600}, "has expired"),
        ({"aud": "another-service"}, "for another audience"),
        ({"iss": "https://elsewhere.example"}, "from another issuer"),
        ({"nbf": int(time.time()) + 3600}, "not valid yet"),
        ({"sub": None}, "lacks a required claim"),
        ({"exp": None}, "lacks a required claim"),
    ],
)
def test_bad_claims_are_refused_with_their_reason(pem_client, rsa_key, claims, reason):
    assert reason in refusal(call(pem_client, token(rsa_key, **claims)))


def test_alg_none_hmac_confusion_and_forged_signatures_are_refused(pem_client, rsa_key):
    unsigned = token(None, algorithm="none")
    assert "algorithm 'none' is not accepted" in refusal(call(pem_client, unsigned))
    # The classic confusion: HMAC keyed with the public key the server verifies with.
    # pyjwt refuses to sign that, so the test signs it with the standard library.
    head, body = (
        jwt.utils.base64url_encode(json.dumps(part).encode())
        for part in ({"alg": "HS256", "typ": "JWT"}, {"sub": "x", "aud": AUDIENCE, "exp": 2**31})
    )
    mac = hmac.new(pem(rsa_key), head + b"." + body, hashlib.sha256).digest()
    hmac_token = b".".join((head, body, jwt.utils.base64url_encode(mac))).decode()
    assert "algorithm 'HS256' is not accepted" in refusal(call(pem_client, hmac_token))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert "signature does not verify" in refusal(call(pem_client, token(other)))
    ec_token = token(ec.generate_private_key(ec.SECP256R1()), "ES256")  # accepted, wrong key type
    assert "algorithm does not match its key" in refusal(call(pem_client, ec_token))
    good = token(rsa_key)
    head, payload, signature = good.split(".")
    tampered = jwt.utils.base64url_encode(
        json.dumps({"sub": "admin", "aud": AUDIENCE, "iss": ISSUER, "exp": 2**31}).encode()
    ).decode()
    forged = f"{head}.{tampered}.{signature}"
    assert "signature does not verify" in refusal(call(pem_client, forged))
    assert "malformed" in refusal(call(pem_client, "not.a.token"))


def test_a_jwks_file_picks_the_key_by_kid(start_app, rsa_key, ec_key, tmp_path):
    keys = [
        {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "r1"},
        {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key())), "kid": "e1"},
    ]
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": keys}))
    client = start_app(jwt_jwks=str(path), jwt_audience=AUDIENCE).test_client()
    assert call(client, token(rsa_key, headers={"kid": "r1"})).status_code == 200
    assert call(client, token(ec_key, "ES256", headers={"kid": "e1"})).status_code == 200
    # Signed by the EC key but naming the RSA key's id: the RSA key does not verify it.
    mismatch = token(ec_key, "ES256", headers={"kid": "r1"})
    assert "does not match the key's algorithm 'RS256'" in refusal(call(client, mismatch))
    assert "key id 'x9' is not a known key" in refusal(
        call(client, token(rsa_key, headers={"kid": "x9"}))
    )


def test_the_token_subject_is_the_rate_limited_caller(start_app, rsa_key, tmp_path):
    path = tmp_path / "issuer.pem"
    path.write_bytes(pem(rsa_key))
    client = start_app(
        jwt_public_key=str(path), jwt_audience=AUDIENCE, rate_limit="1/hour"
    ).test_client()
    assert [call(client, token(rsa_key, sub="a")).status_code for _ in range(2)] == [200, 429]
    assert call(client, token(rsa_key, sub="b")).status_code == 200


def test_token_settings_fail_fast(tmp_path):
    (tmp_path / "bad.pem").write_text("not a key")
    for name in ("missing.pem", "bad.pem"):
        settings = Settings(jwt_public_key=str(tmp_path / name), jwt_audience=AUDIENCE)
        with pytest.raises(ValueError, match=f"cannot read .*{name}"):
            tokens.verifier(settings)
    with pytest.raises(SettingsError, match="WANWU_JWT_AUDIENCE must name"):
        Settings(jwt_public_key="issuer.pem")
    with pytest.raises(SettingsError, match="not both"):
        Settings(jwt_public_key="a.pem", jwt_jwks="b.json", jwt_audience=AUDIENCE)
    with pytest.raises(SettingsError, match="WANWU_JWT_ALGORITHMS"):
        Settings.from_env({"WANWU_JWT_ALGORITHMS": "RS256,HS256"})
    with pytest.raises(SettingsError, match="WANWU_RATE_LIMIT"):
        Settings.from_env({"WANWU_RATE_LIMIT": "200 per minute"})


def test_a_header_pyjwt_refuses_is_a_401_not_a_500(pem_client):
    # pyjwt raises its base error class, not DecodeError, for these headers.
    for header in ({"alg": "RS256", "kid": ["x"]}, {"alg": "RS256", "crit": "x"}):
        head = base64.urlsafe_b64encode(json.dumps(header).encode()).decode().rstrip("=")
        assert "malformed" in refusal(call(pem_client, f"{head}.e30.c2ln"))
