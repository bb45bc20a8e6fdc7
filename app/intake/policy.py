"""What the intake allows each connection and client: caps, eviction, buffered bytes, the
client behind a proxy, and the Gunicorn settings it cannot serve. No socket loop here.

- At `WANWU_MAX_CONNECTIONS` open connections the worker closes the one that has waited
  longest without sending a byte, or else the new one; a peer address with
  `WANWU_MAX_CONNECTIONS_PER_ADDRESS` open connections has its next one closed. Proxies in
  `WANWU_TRUST_PROXY` are not capped themselves: their `X-Forwarded-For` names the client,
  whose requests in progress are capped instead (503 + Retry-After past it), and who is
  REMOTE_ADDR and the access log's `client`.
- A request is refused from its head alone when its `Content-Length` is over
  `WANWU_MAX_UPLOAD_MB` (413), or when it would take the worker's buffered bytes past
  `WANWU_BUFFER_MB` (503 + Retry-After).
- Every early close is counted in `wanwu_connections_closed_total{reason}` and logged, one
  line per reason per second at most (a flood must not flood the log too).
"""

from __future__ import annotations

import ipaddress
import json
import resource
import socket
import time
from collections import Counter
from http import HTTPStatus

from gunicorn.workers.gthread import TConn

from app import errors, metrics
from app.security import HEADERS
from app.settings import Settings


class Conn(TConn):
    """A client connection and the request bytes received on it so far."""

    def __init__(self, cfg, sock, client, server) -> None:  # noqa: ANN001  (as TConn)
        super().__init__(cfg, sock, client, server)
        self.address = client
        self.peer = client[0] if isinstance(client, tuple) else str(client)
        self.forwarded: str | None = None  # the client a trusted proxy names
        self.buf = bytearray()
        self.scanned = 0  # bytes of buf the framer has seen
        self.need: int | None = None  # headers + body, once the headers are in
        self.held = 0  # bytes counted against the worker's buffer cap
        self.deadline = 0.0
        self.idle = True  # no byte of the next request yet
        self.closing = False  # answered and half-closed: input is discarded until EOF
        self.closed = False
        self.listener = "inference"  # or "management" (app.listeners)


def quiet(conn: Conn) -> bool:
    """Whether no byte waits unread on an idle connection: one whose request has arrived but
    not yet been read (a busy loop) is a client about to be served, not one to evict."""
    try:
        return not conn.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    except OSError:
        return True  # a broken connection: evicting it costs nobody


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft descriptor limit towards `wanted`; return the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def forwarded_client(header: str, trusted: list) -> str | None:
    """The first address, from the right, of X-Forwarded-For that is not a trusted proxy.

    Only IP addresses count: any other entry (`not-an-ip`, `<script>`) is skipped and counted
    (wanwu_forwarded_for_invalid_total), or each new string would be a new caller.
    """
    hops = []
    for hop in filter(None, (h.strip() for h in header.split(","))):
        try:
            hops.append(ipaddress.ip_address(hop))
        except ValueError:
            metrics.FORWARDED_INVALID.inc()
    for hop in reversed(hops):
        if not any(hop in network for network in trusted):
            return str(hop)
    return str(hops[0]) if hops else None


def is_trusted(address: str, trusted: list) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def answer(
    error: errors.ApiError,
    request_id: str | None = None,
    path: str = "/",
    error_body: errors.ErrorBody = errors.plain_body,
) -> bytes:
    """A complete HTTP response in the JSON error shape of `path`'s protocol (as the app's
    `error_body` renders it), closing."""
    body = json.dumps(error_body(path, error), separators=(",", ":")).encode()
    head = [
        f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in HEADERS.items()),
    ]
    if request_id:
        head.append(f"X-Request-ID: {request_id}")
    head += [f"{name}: {value}" for name, value in error.http_headers().items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def unsupported_settings(cfg) -> str | None:  # noqa: ANN001  (gunicorn's Config)
    """Why Gunicorn settings cannot be served by the intake, which reads plain HTTP/1.1
    off the socket itself; None when they can."""
    if cfg.is_ssl:
        return "certfile/keyfile (TLS): terminate TLS in a proxy in front (docs/SCALING.md)"
    if cfg.http2_cleartext != "off" or "h2" in cfg.http_protocols:
        return "HTTP/2 (http_protocols h2, http2_cleartext): the intake serves HTTP/1.1"
    if cfg.proxy_protocol != "off":
        return "proxy_protocol: use WANWU_TRUST_PROXY and X-Forwarded-For"
    if cfg.protocol != "http":
        return f"protocol={cfg.protocol}: the intake serves HTTP/1.1"
    return None


class Policy:
    """One worker's ledger: open connections per address, buffered bytes, early closes."""

    def __init__(self, settings: Settings, log) -> None:  # noqa: ANN001  (gunicorn's logger)
        self.settings, self.log = settings, log
        proxies = () if settings.trust_proxy == ("none",) else settings.trust_proxy
        self.trusted = [ipaddress.ip_network(p, strict=False) for p in proxies]
        self.buffer_cap = int(settings.buffer_mb * 1024 * 1024)
        self.buffered = 0
        self.per_address: Counter[str] = Counter()
        self.unlogged: Counter[str] = Counter()
        self.logged_at: dict[str, float] = {}

    def over_address_cap(self, address: str) -> bool:
        """Count one more connection (or proxied request) from `address`; True past the cap."""
        self.per_address[address] += 1
        limit = self.settings.max_connections_per_address
        return bool(limit) and self.per_address[address] > limit

    def forget_address(self, address: str) -> None:
        self.per_address[address] -= 1
        if not self.per_address[address]:
            del self.per_address[address]

    def capped(self, conn: Conn) -> bool:
        """Count a new connection; True when its address is over the cap (proxies aren't)."""
        return self.over_address_cap(conn.peer) and not is_trusted(conn.peer, self.trusted)

    def hold(self, conn: Conn, held: int) -> bool:
        """Count `held` bytes for the connection's request; False when that grew the
        worker's buffered bytes past the cap."""
        self.buffered += held - conn.held
        grew, conn.held = held > conn.held, held
        return not (grew and self.buffered > self.buffer_cap)

    def release(self, conn: Conn) -> None:
        """Give back what a connection's current request held: its bytes, its client's slot."""
        self.buffered -= conn.held
        conn.held = 0
        if conn.forwarded:
            self.forget_address(conn.forwarded)
            conn.forwarded = None

    def admit_request(self, conn: Conn, length: int, forwarded_for: str | None):  # noqa: ANN201
        """Refuse a framed request from its head alone: (error, reason), or None to read it."""
        if length > self.settings.max_upload_bytes:
            message = errors.body_too_large(self.settings.max_upload_mb)
            return errors.PayloadTooLarge(message), "too_large"
        if forwarded_for and is_trusted(conn.peer, self.trusted):
            # Behind a proxy the cap counts each client's requests in progress: the proxy's
            # connections are shared by its clients.
            conn.forwarded = forwarded_client(forwarded_for, self.trusted)
            if conn.forwarded and self.over_address_cap(conn.forwarded):
                message = "Too many requests in progress from this client; retry."
                return errors.Overloaded(message, retry_after=1), "address_cap"
        return None

    def count(self, reason: str, peer: str) -> None:
        """Count an early close; log each reason once a second at most, with how many."""
        metrics.CONNECTIONS_CLOSED.labels(reason).inc()
        self.unlogged[reason] += 1
        self.report(reason, time.monotonic(), peer)

    def report(self, reason: str, now: float, peer: str = "") -> None:
        if now - self.logged_at.get(reason, 0.0) >= 1.0:
            latest = f" (latest from {peer})" if peer else ""
            self.log.warning(
                "closed %d connection(s) early: %s%s", self.unlogged.pop(reason), reason, latest
            )
            self.logged_at[reason] = now

    def report_all(self) -> None:
        now = time.monotonic()
        for reason in list(self.unlogged):
            self.report(reason, now)
