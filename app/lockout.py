"""Failed authentication, counted per client address: past a threshold, 429 + Retry-After.

Policy: every refused key or token counts against the address it came from (the client a
trusted proxy names; an IPv6 address's /64, as for the rate limit), on the inference and the
management listener apart, in a table every worker shares (app.ratelimit's GCRA: 20 failures
a minute, refilling as time passes). Within the allowance a failure is 401 with
`WWW-Authenticate: Bearer`; past it, 429 with `Retry-After` (when the next failure would be a
401 again), counted in wanwu_auth_refused_total. A request with a valid key is never refused
for failures: an attacker sharing an address (a NAT, a proxy) cannot lock its users out, and
a key of 16 characters or more (start-up warns of a shorter one) is not found at 20 guesses a
minute.
"""

from __future__ import annotations

from typing import NoReturn

from app import errors, metrics
from app.ratelimit import Limiter, Rate, address_caller

FAILURES = Rate(20, 60.0)
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="wanwu"'}


class Lockout:
    """The failure counts of one server: made before the fork (in `Core`), shared by its
    workers."""

    def __init__(self) -> None:
        self.table = Limiter(FAILURES)

    def refuse(self, listener: str, client: str | None, message: str) -> NoReturn:
        """Count a failed attempt from `client` on `listener`; raise 401, or 429 past the count."""
        decision = self.table.hit(f"{listener} {address_caller(client)}")
        if decision.allowed:
            raise errors.Unauthorized(message, headers=CHALLENGE)
        metrics.AUTH_REFUSED.labels(listener).inc()
        raise errors.RateLimited(
            f"Too many failed authentications from {client}; retry in {decision.retry_after_s} s.",
            retry_after=decision.retry_after_s,
        )
