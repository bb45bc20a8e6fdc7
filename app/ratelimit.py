"""Per-caller rate limits (WANWU_RATE_LIMIT, e.g. `200/minute`), exact across Gunicorn workers.

Policy: each caller (an API key, a token's subject, else the client address; an IPv6 address's
/64, which one host or one subscriber holds whole and picks addresses from) may make `N`
calls in any `period`, as a burst or spread out; the allowance refills at N per period. This
is GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp): a caller's
state is its theoretical arrival time `tat`, each call moves it `period / N` later, and a call
that would move it more than `period` past now is refused with 429 and `Retry-After` (when the
call would be allowed).

Every answer to a counted call says where its caller stands, in the fields of the IETF draft
"RateLimit header fields for HTTP" (httpapi-ratelimit-headers, -08 on): `RateLimit-Policy:
"default";q=N;w=PERIOD` and `RateLimit: "default";r=REMAINING;t=SECONDS`. While calls remain,
`t` is the time until the allowance is whole again; with none left it is the time until the
next call is allowed, so on a 429 it equals `Retry-After`.

Exact across workers: the table lives in an anonymous shared mapping that the Gunicorn master
creates before it forks (as app/balance.py's board), and every update holds a POSIX record
lock on a file the master opened. The kernel drops a record lock when its holder dies, so a
worker killed mid-update cannot wedge its siblings (a `multiprocessing.Lock` would stay held);
record locks do not exclude threads of one process, so a thread lock is taken first. The
`limits` library (Flask-Limiter's) keeps its counts in one process's memory, or in Redis,
Memcached or MongoDB: exact across forked workers only with a server beside the service, to
run and to reach on every call. Limits here are per server (a replica), as the queue is. A
configuration reload (HUP) makes a fresh table for the new workers: callers start again with a
whole allowance.

The table holds SLOTS callers. A caller whose allowance is whole needs no state, so its slot
is free for reuse; a caller finding every slot of its probe run in use takes the one nearest
to whole, whose owner is then treated as a fresh caller (it may get up to N more calls).
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import math
import mmap
import os
import re
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from app import errors, metrics

SLOTS = 1 << 16  # 1 MiB of table: 16 bytes a caller
PROBE = 16  # slots a caller may live in, from its hash onwards
_SLOT = struct.Struct("<Qd")  # caller fingerprint (0 = empty), tat on the monotonic clock
_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class Rate:
    """At most `calls` calls per `period_s` seconds."""

    calls: int
    period_s: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        """Read `N/second|minute|hour|day` (the setting's format)."""
        match = re.fullmatch(r"([0-9]+)/(\w+)", text)
        if not match or match.group(2) not in _PERIODS or int(match.group(1)) < 1:
            raise ValueError(f"a rate is N/second, N/minute, N/hour or N/day; got {text!r}")
        return cls(int(match.group(1)), _PERIODS[match.group(2)])

    @property
    def interval_s(self) -> float:
        return self.period_s / self.calls

    def policy(self) -> str:
        """The RateLimit-Policy field: quota `q` calls in a window of `w` seconds."""
        return f'"default";q={self.calls};w={math.ceil(self.period_s)}'


@dataclass(frozen=True)
class Decision:
    """One call's verdict and what the RateLimit fields say about its caller."""

    allowed: bool
    rate: Rate
    remaining: int
    reset_s: int  # until the allowance is whole again
    retry_after_s: int  # until the next call is allowed (0 while calls remain)

    def headers(self) -> dict[str, str]:
        """RateLimit-Policy and RateLimit; `t` is Retry-After's value when no call remains."""
        wait = self.reset_s if self.remaining else self.retry_after_s
        return {
            "RateLimit-Policy": self.rate.policy(),
            "RateLimit": f'"default";r={self.remaining};t={wait}',
        }


class Limiter:
    """GCRA state for up to SLOTS callers, shared by every process forked after it is made."""

    def __init__(self, rate: Rate, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        # CLOCK_MONOTONIC is one clock for every process on the machine.
        self._clock = clock
        self._table = mmap.mmap(-1, SLOTS * _SLOT.size)  # MAP_SHARED, zeroed: all slots empty
        with tempfile.TemporaryFile(prefix="wanwu-ratelimit-") as f:
            self._lock_fd = os.dup(f.fileno())  # the file lives on while this descriptor does
        self._thread_lock = threading.Lock()

    def hit(self, caller: str) -> Decision:
        """Count one call by `caller` if its allowance has room; say what it may do next."""
        digest = hashlib.blake2b(caller.encode(), digest_size=8).digest()
        fingerprint = int.from_bytes(digest, "little") or 1
        with self._thread_lock:
            fcntl.lockf(self._lock_fd, fcntl.LOCK_EX)
            try:
                now = self._clock()
                slot, tat = self._find(fingerprint, now)
                return self._decide(slot, fingerprint, max(tat, now), now)
            finally:
                fcntl.lockf(self._lock_fd, fcntl.LOCK_UN)

    def _find(self, fingerprint: int, now: float) -> tuple[int, float]:
        """The caller's slot and tat; else a free slot (or the one nearest whole) and `now`."""
        start = fingerprint % SLOTS
        spare, spare_tat = start, math.inf
        for step in range(PROBE):
            slot = (start + step) % SLOTS
            owner, tat = _SLOT.unpack_from(self._table, slot * _SLOT.size)
            if owner == fingerprint:
                return slot, tat
            if owner == 0 or tat <= now:  # empty, or its caller's allowance is whole again
                tat = -math.inf
            if tat < spare_tat:
                spare, spare_tat = slot, tat
        return spare, now

    def _decide(self, slot: int, fingerprint: int, tat: float, now: float) -> Decision:
        rate, after = self.rate, tat + self.rate.interval_s
        if after - now > rate.period_s + 1e-9:  # the call would overdraw the allowance
            remaining, wait = 0, after - now - rate.period_s
            reset = tat - now
            allowed = False
        else:
            _SLOT.pack_into(self._table, slot * _SLOT.size, fingerprint, after)
            remaining = int((rate.period_s - (after - now)) / rate.interval_s + 1e-9)
            # The next call waits until the allowance has room for one more interval.
            wait, reset, allowed = after + rate.interval_s - now - rate.period_s, after - now, True
        return Decision(allowed, rate, remaining, math.ceil(reset), max(0, math.ceil(wait)))


def address_caller(client: str | None) -> str:
    """The caller a request naming no key or token is: its address, or an IPv6 one's /64."""
    try:
        ip = ipaddress.ip_address(client or "")
    except ValueError:
        return f"address {client}"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:192.0.2.1 is 192.0.2.1
            return f"address {ip.ipv4_mapped}"
        return f"address {ipaddress.ip_network((ip, 64), strict=False)}"
    return f"address {ip}"


limiter: Limiter | None = None
installed = ""  # the WANWU_RATE_LIMIT text `limiter` was made for


def install(rate_limit: str) -> None:
    """Create the shared table in the Gunicorn master, before any worker is forked ('' = off)."""
    global limiter, installed
    limiter = Limiter(Rate.parse(rate_limit)) if rate_limit else None
    installed = rate_limit


def policy(rate_limit: str) -> str:
    """The RateLimit-Policy field of WANWU_RATE_LIMIT's value."""
    return Rate.parse(rate_limit).policy()


def headers(rate_limit: str, decision: Decision | None) -> dict[str, str]:
    """An answer's RateLimit fields while `rate_limit` is set: the caller's standing when
    its call was counted (`decision`), else the policy alone."""
    if not rate_limit:
        return {}
    return decision.headers() if decision else {"RateLimit-Policy": policy(rate_limit)}


def check(rate_limit: str, caller: str) -> Decision | None:
    """Count a call by `caller` and return where it stands (None without a limit); raise
    RateLimited (429) when it has used its allowance.

    Outside Gunicorn (one process: tests, `flask run`) the table is made on first use.
    """
    if not rate_limit:
        return None
    if limiter is None or installed != rate_limit:
        install(rate_limit)
    decision = limiter.hit(caller)
    if not decision.allowed:
        metrics.RATE_LIMITED.inc()
        raise errors.RateLimited(
            f"Rate limit of {rate_limit} exceeded; retry in {decision.retry_after_s} s.",
            retry_after=decision.retry_after_s,
            headers=decision.headers(),
        )
    return decision
