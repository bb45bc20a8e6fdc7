"""Who may call: API keys, signed tokens, the per-caller rate limit, failed attempts counted.

Policy: when WANWU_API_KEYS or WANWU_JWT_* is set, every inference call needs a bearer key or
token; a refused one counts against its address (app/lockout.py: 401, then 429). The caller
is then the key, the token's subject, or else the address, and each call counts against its
WANWU_RATE_LIMIT (app/ratelimit.py). Keys are compared in constant time.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence

from app import errors, ratelimit, tokens
from app.lockout import Lockout
from app.settings import Settings

log = logging.getLogger(__name__)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` value, None for any other scheme."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def is_one_of(token: str, keys: Sequence[str]) -> bool:
    """Whether `token` is one of `keys`, compared with every key so that the time taken does
    not reveal which one matched."""
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(token.encode(), key.encode())
    return matched


def authorize(
    conf: Settings, lockout: Lockout, authorization: str | None, client: str | None
) -> ratelimit.Decision | None:
    """Require a bearer API key (WANWU_API_KEYS) or signed token (WANWU_JWT_*) when either
    is set, raising Unauthorized; then count the call against the caller's WANWU_RATE_LIMIT
    and return where the caller stands (None without a limit).

    `authorization` is the header's (or gRPC metadata's) value; `client` is the peer's
    address, which names the caller when no key or token does.
    """
    keys, verifier = conf.api_keys, tokens.verifier(conf)
    caller = ratelimit.address_caller(client)
    if keys or verifier:
        token = bearer_token(authorization)
        if token is not None and is_one_of(token, keys):
            caller = f"key {token}"
        elif token is not None and verifier and tokens.looks_like_jwt(token):
            try:
                caller = f"subject {verifier.subject(token)}"
            except errors.Unauthorized as exc:
                lockout.refuse("inference", client, exc.message)
        else:
            log.debug("refused a request without a valid key or token from %s", client)
            lockout.refuse(
                "inference",
                client,
                "A valid 'Authorization: Bearer <key or token>' header is required.",
            )
    return ratelimit.check(conf.rate_limit, caller)
