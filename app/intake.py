"""Read whole requests on the worker's event loop: request threads only see complete ones.

Gunicorn's gthread worker hands a connection to a request thread as soon as a byte arrives,
and the thread then blocks on the socket until the headers and the body are in, so idle,
slowloris and slow-upload clients can hold every thread (docs/RELIABILITY.md). Here the
worker's main loop reads every connection without blocking into a buffer, and a request
thread is given a connection only once it holds the whole request: the headers and the
`Content-Length` bytes of body. Policy, per worker (settings in app/settings.py):

- A new connection has `WANWU_HEADER_TIMEOUT_S` to send its headers, and so does a kept-alive
  connection from its next request's first byte; an idle kept-alive one is closed after
  Gunicorn's `keepalive` seconds. A body must arrive within `WANWU_BODY_TIMEOUT_S` plus its
  length at `WANWU_BODY_MIN_KBPS` (a total deadline, so a byte-a-second trickle loses); late
  ones get 408.
- Refused from the headers alone, before any body is read: a `Content-Length` over
  `WANWU_MAX_UPLOAD_MB` (413), a chunked body (411: every browser and HTTP library sends a
  length for a file), a malformed length (400), headers beyond Gunicorn's
  `limit_request_*` sizes (431), a body that would take the worker's buffered bytes past
  `WANWU_BUFFER_MB` (503 + Retry-After). `Expect: 100-continue` is answered here, and the
  header dropped so that Gunicorn does not send a second 100.
- At `WANWU_MAX_CONNECTIONS` open connections the worker closes the one that has waited
  longest without sending a byte, or else the new one; a peer address with
  `WANWU_MAX_CONNECTIONS_PER_ADDRESS` open connections has its next one closed. Proxies in
  `WANWU_TRUST_PROXY` are not capped themselves: their `X-Forwarded-For` names the client,
  whose requests in progress are capped instead (503 + Retry-After past it), and who is
  REMOTE_ADDR and the access log's `client`.
- Every early close is counted in `wanwu_connections_closed_total{reason}` and logged, one
  line per reason per second at most (a flood must not flood the log too).

Gunicorn documents none of the methods overridden here as extension points, so
pyproject.toml pins gunicorn 27 (gthread.py of 27.0.1) and tests/test_intake.py runs this
worker under the real server.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import resource
import selectors
import socket
import time
from collections import Counter
from functools import partial
from http import HTTPStatus

from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, TConn, ThreadWorker

from app import adapters, errors, metrics
from app.adapters.common import body_too_large
from app.security import HEADERS
from app.settings import Settings

RECV_SIZE = 256 * 1024  # large reads: each recv() also re-takes the GIL
# Work done per poller event. With request threads busy on the CPU, the main loop waits up
# to the interpreter's switch interval (5 ms) for the GIL after each select(): a burst of
# connections or a 1 MB body must not take one wake-up per accept or per read.
ACCEPTS_PER_EVENT = 64
READS_PER_EVENT = 8
SWEEP_S = 0.1  # deadlines are checked this often at most (and at least once a second)
LINGER_S = 2.0  # how long a closing connection's unread input is discarded, so no RST eats
# the answer (RFC 9112 section 9.6); the same bound as gunicorn's close_graceful
SPARE_FDS = 64  # descriptors a worker needs beside its connections (model, logs, pipes)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Conn(TConn):
    """A client connection and the request bytes received on it so far."""

    def __init__(self, cfg, sock, client, server) -> None:  # noqa: ANN001  (as TConn)
        super().__init__(cfg, sock, client, server)
        self.address = client
        self.peer = client[0] if isinstance(client, tuple) else str(client)
        self.forwarded: str | None = None  # the client a trusted proxy names
        self.buf = bytearray()
        self.scanned = 0  # bytes of buf already searched for the end of the headers
        self.need: int | None = None  # headers + body, once the headers are in
        self.held = 0  # bytes counted against the worker's buffer cap
        self.deadline = 0.0
        self.idle = True  # no byte of the next request yet
        self.closing = False  # answered and half-closed: input is discarded until EOF


def _quiet(conn: Conn) -> bool:
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
    """The first address, from the right, of X-Forwarded-For that is not a trusted proxy."""
    hops = [h.strip() for h in header.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            return hop
    return hops[0] if hops else None


def _is_trusted(address: str, trusted: list) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def _target(buf: bytearray) -> str:
    """The path of the request line in `buf` ("/" before one has arrived)."""
    line = bytes(buf[: buf.find(b"\r\n")]).split(b" ")
    return line[1].partition(b"?")[0].decode("latin-1") if len(line) == 3 else "/"


def answer(error: errors.ApiError, path: str = "/") -> bytes:
    """A complete HTTP response in the JSON error shape of `path`'s protocol, closing."""
    body = json.dumps(adapters.error_body(path, error), separators=(",", ":")).encode()
    head = [
        f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in HEADERS.items()),
    ]
    if error.retry_after is not None:
        head.append(f"Retry-After: {error.retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class IntakeWorker(ThreadWorker):
    """Gunicorn's gthread worker, with every request read whole on its main loop.

    gunicorn.conf.py sets `wanwu_settings` on each worker before fork.
    """

    wanwu_settings: Settings

    def init_process(self) -> None:
        s = self.wanwu_settings
        fds = raise_fd_limit(s.max_connections + SPARE_FDS)
        self.max_connections = min(s.max_connections, fds - SPARE_FDS)
        if self.max_connections < s.max_connections:
            self.log.warning(
                "WANWU_MAX_CONNECTIONS=%d needs %d file descriptors, the hard limit is %d: "
                "capping at %d (raise it: docker run --ulimit nofile=%d)",
                s.max_connections,
                s.max_connections + SPARE_FDS,
                fds,
                self.max_connections,
                s.max_connections + SPARE_FDS,
            )
        # gthread stops accepting at worker_connections, leaving clients in the backlog;
        # this worker accepts and closes what is over its cap instead (early, counted).
        self.worker_connections = float("inf")
        proxies = () if s.trust_proxy == ("none",) else s.trust_proxy
        self.trusted = [ipaddress.ip_network(p, strict=False) for p in proxies]
        self.head_limit = (
            4
            + self.cfg.limit_request_line
            + self.cfg.limit_request_fields * ((self.cfg.limit_request_field_size or 8190) + 2)
        )
        self.max_body = s.max_upload_bytes
        self.buffer_cap = int(s.buffer_mb * 1024 * 1024)
        self.buffered = 0
        self.per_address: Counter[str] = Counter()
        self.waiting: dict[Conn, None] = {}  # on the poller, oldest first
        self.recv_buf = memoryview(bytearray(RECV_SIZE))
        self.next_sweep = 0.0
        self.unlogged: Counter[str] = Counter()
        self.logged_at: dict[str, float] = {}
        super().init_process()

    # -- connections in and out ------------------------------------------------------------

    def accept(self, listener: socket.socket) -> None:
        """Take the connections waiting on `listener`, while take_more() says so."""
        for _ in range(ACCEPTS_PER_EVENT):
            try:
                sock, client = listener.accept()
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                    return
                raise
            self.admit(sock, client, listener.getsockname())
            if not self.take_more():
                return

    def take_more(self) -> bool:
        """Whether to accept another waiting connection in the same event."""
        return True

    def admit(self, sock: socket.socket, client: object, server: object) -> None:
        """Apply the connection caps to a new connection, then wait for its request."""
        self.nr_conns += 1
        conn = Conn(self.cfg, sock, client, server)
        if self.over_address_cap(conn.peer) and not _is_trusted(conn.peer, self.trusted):
            self.close(conn, "address_cap")
            return
        if self.nr_conns > self.max_connections:
            idle = next((c for c in self.waiting if c.idle and not c.closing and _quiet(c)), None)
            self.close(idle or conn, "evicted" if idle else "worker_cap")
            if idle is None:
                return
        self.wait(conn, time.monotonic() + self.wanwu_settings.header_timeout_s)

    def wait(self, conn: Conn, deadline: float) -> None:
        """Put a connection on the poller until its next bytes or its deadline."""
        conn.deadline = deadline
        self.waiting[conn] = None
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_readable, conn))

    def close(self, conn: Conn, reason: str | None = None) -> None:
        """Forget a connection and close it; count it when closed early, for `reason`."""
        if conn in self.waiting:
            del self.waiting[conn]
            self.poller.unregister(conn.sock)
        self.nr_conns -= 1
        self.forget_address(conn.peer)
        self.release(conn)
        conn.close()
        if reason:
            self.count(reason, conn.peer)

    def refuse(self, conn: Conn, error: errors.ApiError, reason: str) -> None:
        """Answer with an error and close; the client's input is discarded meanwhile."""
        self.count(reason, conn.peer)
        try:
            conn.sock.send(answer(error, _target(conn.buf)))
        except OSError:
            pass
        self.linger(conn)

    def linger(self, conn: Conn) -> None:
        """Half-close and discard input until the client closes too, for LINGER_S at most."""
        self.release(conn)
        conn.closing, conn.buf = True, bytearray()
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close(conn)
            return
        if conn in self.waiting:
            conn.deadline = time.monotonic() + LINGER_S
        else:
            self.wait(conn, time.monotonic() + LINGER_S)

    def release(self, conn: Conn) -> None:
        """Give back what a connection's current request held: its bytes, its client's slot."""
        self.buffered -= conn.held
        conn.held = 0
        if conn.forwarded:
            self.forget_address(conn.forwarded)
            conn.forwarded = None

    def over_address_cap(self, address: str) -> bool:
        """Count one more connection (or proxied request) from `address`; True past the cap."""
        self.per_address[address] += 1
        limit = self.wanwu_settings.max_connections_per_address
        return bool(limit) and self.per_address[address] > limit

    def forget_address(self, address: str) -> None:
        self.per_address[address] -= 1
        if not self.per_address[address]:
            del self.per_address[address]

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

    # -- reading ---------------------------------------------------------------------------

    def on_readable(self, conn: Conn, _sock: socket.socket) -> None:
        for _ in range(READS_PER_EVENT):
            if conn not in self.waiting:
                return  # handed to a thread, or closed (even earlier in this poll's events)
            try:
                n = conn.sock.recv_into(self.recv_buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                n = 0
            if not n:
                self.close(conn)  # the client left
                return
            if conn.closing:
                continue
            if conn.idle:
                conn.idle = False
                conn.deadline = time.monotonic() + self.wanwu_settings.header_timeout_s
            conn.buf += self.recv_buf[:n]
            self.advance(conn)

    def advance(self, conn: Conn) -> None:
        """Parse what arrived; refuse, keep reading, or hand a complete request to a thread."""
        if conn.need is None:
            self.read_head(conn)
            if conn.closing:
                return
        held = max(len(conn.buf), conn.need or 0)
        self.buffered += held - conn.held
        grew, conn.held = held > conn.held, held
        if grew and self.buffered > self.buffer_cap:
            busy = errors.Overloaded("The server is receiving too much; retry.", retry_after=1)
            self.refuse(conn, busy, "buffer_full")
        elif conn.need is not None and len(conn.buf) >= conn.need:
            del self.waiting[conn]
            self.poller.unregister(conn.sock)
            conn.data_ready = True
            self.enqueue_req(conn)

    def read_head(self, conn: Conn) -> None:
        """Once the headers are in, set the request's length and body deadline, or refuse."""
        end = conn.buf.find(b"\r\n\r\n", max(0, conn.scanned - 3))
        conn.scanned = len(conn.buf)
        if (end if end >= 0 else len(conn.buf)) + 4 > self.head_limit:
            message = "The request line or headers are too large."
            self.refuse(conn, errors.HeadersTooLarge(message), "headers_too_large")
            return
        if end < 0:
            return
        lines = bytes(conn.buf[:end]).split(b"\r\n")
        kept, lengths, chunked, expect, forwarded = [lines[0]], set(), False, False, None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip()
            if name == b"expect":
                expect = value.lower() == b"100-continue"
                continue  # answered here; gunicorn would send its own 100 too
            if name == b"content-length":
                lengths.add(value)
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"x-forwarded-for":
                forwarded = value.decode("latin-1")
            kept.append(line)
        if chunked:
            message = "Send the body with a Content-Length; chunked bodies are not accepted."
            self.refuse(conn, errors.LengthRequired(message), "length_required")
            return
        if len(lengths) > 1 or (lengths and not next(iter(lengths)).isdigit()):
            self.refuse(conn, errors.BadRequest("Invalid Content-Length."), "bad_request")
            return
        length = int(next(iter(lengths), b"0"))
        if length > self.max_body:
            message = body_too_large(self.wanwu_settings.max_upload_mb)
            self.refuse(conn, errors.PayloadTooLarge(message), "too_large")
            return
        head = b"\r\n".join(kept) + b"\r\n\r\n"
        conn.buf[: end + 4] = head
        conn.need = len(head) + length
        if forwarded and _is_trusted(conn.peer, self.trusted):
            # Behind a proxy the cap counts each client's requests in progress: the proxy's
            # connections are shared by its clients.
            conn.forwarded = forwarded_client(forwarded, self.trusted)
            if conn.forwarded and self.over_address_cap(conn.forwarded):
                message = "Too many requests in progress from this client; retry."
                self.refuse(conn, errors.Overloaded(message, retry_after=1), "address_cap")
                return
        if length:
            s = self.wanwu_settings
            conn.deadline = time.monotonic() + s.body_timeout_s + length / (s.body_min_kbps * 1024)
            if expect and len(conn.buf) < conn.need:
                try:
                    conn.sock.send(CONTINUE)
                except OSError:
                    pass

    # -- request threads -------------------------------------------------------------------

    def handle(self, conn: Conn) -> object:
        """Serve one complete request from the buffer (in a request thread)."""
        conn.init()  # the parser, made once per connection, keeps the real peer
        conn.client = (conn.forwarded, 0) if conn.forwarded else conn.address
        request, conn.buf = bytes(conn.buf), bytearray()
        conn.parser.unreader.unread(request)
        return super().handle(conn)

    def finish_request(self, conn: Conn, fs) -> None:  # noqa: ANN001  (a Future)
        """Back on the main loop: wait for the next request, or close without blocking."""
        keep = not fs.cancelled() and fs.exception() is None and fs.result() is True
        self.release(conn)
        conn.need, conn.scanned = None, 0
        try:
            conn.sock.setblocking(False)
        except OSError:  # closed by the thread (a TLS end, say)
            self.close(conn)
            return
        if not keep:
            self.linger(conn)
            return
        # A body drain can read ahead into the next request: it is parsed like new input.
        conn.buf = bytearray(conn.parser.unreader.take_buffered())
        conn.idle = not conn.buf
        now = time.monotonic()
        timeout = self.cfg.keepalive if conn.idle else self.wanwu_settings.header_timeout_s
        if not self.alive:
            timeout = min(timeout, STOP_KEEPALIVE_LINGER)
        self.wait(conn, now + timeout)
        if conn.buf:
            self.advance(conn)

    # -- deadlines (gthread's run loop calls these on every pass) ---------------------------

    def murder_keepalived(self, force: bool = False) -> None:
        """Close connections past their deadline (all of them when forced), and report."""
        now = time.monotonic()
        if now < self.next_sweep and not force:
            return
        self.next_sweep = now + SWEEP_S
        for conn in [c for c in self.waiting if force or c.deadline <= now]:
            if conn.closing or force:
                self.close(conn)
            elif conn.idle and conn.initialized:
                self.close(conn, "keepalive_timeout")
            elif conn.need is None:
                self.close(conn, "header_timeout")
            else:
                message = "The request body arrived too slowly."
                self.refuse(conn, errors.RequestTimeout(message), "body_timeout")
        for reason in list(self.unlogged):
            self.report(reason, now)
        metrics.CONNECTIONS_OPEN.set(self.nr_conns)
        metrics.BUFFERED_BYTES.set(self.buffered)

    def _cap_keepalive(self, deadline: float) -> None:
        """On shutdown, idle connections close within the linger; a request being sent
        keeps its own deadline (graceful_timeout still bounds the whole stop)."""
        for conn in self.waiting:
            if conn.idle:
                conn.deadline = min(conn.deadline, deadline)
