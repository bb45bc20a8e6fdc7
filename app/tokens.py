"""Signed bearer tokens (JWT) from an identity provider, accepted wherever API keys are.

Policy: a token is accepted when it is signed by the issuer's key (WANWU_JWT_PUBLIC_KEY, a PEM
file, or WANWU_JWT_JWKS, a JWKS file: keys are read from disk at start-up, never fetched), with
an algorithm from WANWU_JWT_ALGORITHMS (public-key algorithms only, so `none` and HMAC are never
accepted), and carries `exp`, `sub` and an `aud` naming WANWU_JWT_AUDIENCE (and `iss` equal
to WANWU_JWT_ISSUER when set). Anything else gets 401 saying why: expired, wrong audience,
algorithm not accepted, bad signature, missing claim, malformed. The subject names the
caller for the rate limit. pyjwt does the verifying; this module only chooses the key and
words the refusal.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

from app import errors
from app.settings import Settings

# Clocks of the issuer and this server may disagree by this much on exp/nbf/iat.
LEEWAY_S = 30

_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.ImmatureSignatureError, "the token is not valid yet"),
    (jwt.InvalidAudienceError, "the token is for another audience"),
    (jwt.InvalidIssuerError, "the token is from another issuer"),
    (jwt.InvalidSignatureError, "the token's signature does not verify"),
    (jwt.MissingRequiredClaimError, "the token lacks a required claim"),
    (jwt.InvalidAlgorithmError, "the token's algorithm is not accepted"),
    # pyjwt's TypeError for a key of another type than the algorithm's (an ES256 token
    # against an RSA key): nothing else in decoding a str token raises it.
    (TypeError, "the token's algorithm does not match its key"),
)


def looks_like_jwt(token: str) -> bool:
    """A compact JWS has three dot-separated parts (an API key has none)."""
    return token.count(".") == 2


@dataclass(frozen=True)
class Verifier:
    """Checks tokens against one issuer's keys, audience and algorithms."""

    keys: dict[str | None, Any]  # key id (None: the only key) -> key
    audience: str
    issuer: str
    algorithms: tuple[str, ...]

    def subject(self, token: str) -> str:
        """Return the token's issuer and subject; raise Unauthorized naming what is wrong."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:  # any header pyjwt refuses (a list `kid`, a bad `crit`)
            raise _refuse(f"the token is malformed ({exc})") from None
        algorithm = header.get("alg")
        if algorithm not in self.algorithms:
            raise _refuse(
                f"the token's algorithm {algorithm!r} is not accepted "
                f"(accepted: {', '.join(self.algorithms)})"
            )
        key = self.keys.get(header.get("kid"), self.keys.get(None))
        if key is None:
            raise _refuse(f"the token's key id {header.get('kid')!r} is not a known key")
        required = ["exp", "sub", "aud"] + (["iss"] if self.issuer else [])
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=list(self.algorithms),
                audience=self.audience,
                issuer=self.issuer or None,
                leeway=LEEWAY_S,
                options={"require": required},
            )
        except (jwt.PyJWTError, TypeError) as exc:
            reason = next((why for kind, why in _REASONS if isinstance(exc, kind)), "invalid")
            # pyjwt's own words, except where they mislead (a key-type mismatch).
            detail = "" if isinstance(exc, TypeError) else f" ({exc})"
            raise _refuse(reason + detail) from None
        return f"{claims.get('iss', '')} {claims['sub']}"


def _refuse(reason: str) -> errors.ApiError:
    return errors.Unauthorized(f"Bearer token refused: {reason}.")


def _load_keys(public_key: str, jwks: str) -> dict[str | None, Any]:
    if public_key:
        # Parsed once here: pyjwt would parse PEM bytes again for every token.
        return {None: serialization.load_pem_public_key(Path(public_key).read_bytes())}
    keys: dict[str | None, Any] = {}
    for key in jwt.PyJWKSet.from_json(Path(jwks).read_text()).keys:
        keys[key.key_id] = key
    if len(keys) == 1:
        keys[None] = next(iter(keys.values()))  # a token without `kid` may use the only key
    return keys


@functools.cache
def _verifier(
    public_key: str, jwks: str, audience: str, issuer: str, algorithms: tuple[str, ...]
) -> Verifier | None:
    if not (public_key or jwks):
        return None
    try:
        keys = _load_keys(public_key, jwks)
    except (OSError, ValueError, jwt.PyJWKError) as exc:
        raise ValueError(f"cannot read {public_key or jwks}: {exc}") from None
    return Verifier(keys, audience, issuer, algorithms)


def verifier(settings: Settings) -> Verifier | None:
    """The service's token verifier, or None when WANWU_JWT_* names no key.

    Built once per process; app.server calls this in the master at start-up so that an
    unreadable key file stops the server with its name instead of failing requests.
    """
    return _verifier(
        settings.jwt_public_key,
        settings.jwt_jwks,
        settings.jwt_audience,
        settings.jwt_issuer,
        settings.jwt_algorithms,
    )
