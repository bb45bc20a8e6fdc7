"""Read whole requests on the worker's event loop: request threads only see complete ones.

Gunicorn's gthread worker hands a connection to a request thread as soon as a byte arrives,
and the thread then blocks on the socket until the headers and the body are in, so idle,
slowloris and slow-upload clients can hold every thread (docs/RELIABILITY.md). Here the
worker's main loop reads every connection without blocking into a buffer, and a request
thread is given a connection only once it holds the whole request, as Gunicorn's own parser
frames it (framing.py), under the caps of policy.py. Deadlines, per worker:

- A new connection has `WANWU_HEADER_TIMEOUT_S` to send its headers, and so does a kept-alive
  connection from its next request's first byte; an idle kept-alive one is closed after
  Gunicorn's `keepalive` seconds. A body must arrive within `WANWU_BODY_TIMEOUT_S` plus its
  length at `WANWU_BODY_MIN_KBPS` (a total deadline, so a byte-a-second trickle loses); late
  ones get 408. `Expect: 100-continue` is answered here.

Every callback the event loop runs for a connection is fenced (`fenced`): an exception closes
that connection (with a 400 while no answer has begun), is counted as
`wanwu_connections_closed_total{reason="error"}` and logged once with a request id; it never
reaches Gunicorn's worker loop, which would exit the worker. Settings the intake cannot serve
(TLS, HTTP/2, the PROXY protocol) stop start-up (`check_config`).

Gunicorn documents none of the methods overridden here as extension points, so
pyproject.toml pins gunicorn 27 (gthread.py of 27.0.1) and tests/test_intake.py runs this
worker under the real server. It is long because it is one class: the methods gthread's loop
calls share one connection's state; framing and policy live in their own modules.
"""

from __future__ import annotations

import errno
import functools
import selectors
import socket
import threading
import time
import uuid
from functools import partial

from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, ThreadWorker

from app import errors, metrics
from app.intake import framing
from app.intake.policy import Conn, Policy, answer, quiet, raise_fd_limit, unsupported_settings
from app.listeners import LISTENER, management_listeners
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


def fenced(callback):  # noqa: ANN001, ANN201  (a method taking the connection first)
    """Run a connection's event-loop callback so that its exception ends the connection,
    not the worker."""

    @functools.wraps(callback)
    def run(self: IntakeWorker, conn: Conn, *args: object) -> None:
        try:
            callback(self, conn, *args)
        except Exception as exc:  # noqa: BLE001  (the fence: any bug ends one connection)
            self.fail(conn, exc)

    return run


class IntakeWorker(ThreadWorker):
    """Gunicorn's gthread worker, with every request read whole on its main loop.

    app.server sets `wanwu_settings` on each worker before fork.
    """

    wanwu_settings: Settings

    @classmethod
    def check_config(cls, cfg, log) -> None:  # noqa: ANN001  (gunicorn's Config and logger)
        """Called by Gunicorn's master before any worker starts: refuse what the intake
        cannot serve, in one line, instead of breaking it silently."""
        super().check_config(cfg, log)
        problem = unsupported_settings(cfg)
        if problem:
            log.error("wanwu's intake worker cannot serve %s", problem)
            raise SystemExit(1)

    def init_process(self) -> None:
        self.setup_intake()
        super().init_process()

    def setup_intake(self) -> None:
        """The intake's state, before gthread's loop starts."""
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
        self.limits = framing.Limits.of(self.cfg)
        self.policy = Policy(s, self.log)
        self.waiting: dict[Conn, None] = {}  # on the poller, oldest first
        self.recv_buf = memoryview(bytearray(RECV_SIZE))
        self.next_sweep = 0.0
        self.management = management_listeners(self.sockets, self.wanwu_settings)
        self.serving = threading.local()  # the listener of the request a thread serves
        self.error_body = errors.plain_body  # until the app hands in its own (load_wsgi)

    def load_wsgi(self) -> None:
        """Tell the app which listener each request came in on (app.listeners); take the
        error shape it hands in (errors.ERROR_BODY) for the answers written here."""
        super().load_wsgi()
        app = self.wsgi
        self.error_body = getattr(app, "extensions", {}).get(errors.ERROR_BODY, errors.plain_body)

        def tagged(environ, start_response):  # noqa: ANN001, ANN202  (WSGI)
            environ[LISTENER] = self.serving.listener
            return app(environ, start_response)

        self.wsgi = tagged

    def handle_request(self, req, conn: Conn):  # noqa: ANN001, ANN201  (as gthread)
        self.serving.listener = conn.listener
        return super().handle_request(req, conn)

    def _keepalive_after(self, conn: Conn, keepalive: bool) -> bool:
        """Discard the body of a request refused before it was read, whatever its size.

        gthread drains at most 64 KiB of it and otherwise closes a connection its answer
        called keep-alive, so the client's next request on it fails. Here the whole request
        is already in memory (framed on the main loop), so discarding it reads no socket.
        """
        if keepalive:
            conn.parser.mesg.body.read()
        return super()._keepalive_after(conn, keepalive)

    # -- connections in and out ------------------------------------------------------------

    def accept(self, listener: socket.socket) -> None:
        """Take the connections waiting on `listener`, while take_more() says so."""
        for _ in range(ACCEPTS_PER_EVENT):
            try:
                sock, client = listener.accept()
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                    # Out of descriptors or memory, say: the connection waits in the backlog
                    # for the next event; the worker goes on serving the ones it holds.
                    self.policy.count("accept_error", f"errno {e.errno}")
                return
            self.nr_conns += 1
            conn = Conn(self.cfg, sock, client, listener.getsockname())
            conn.listener = "management" if listener in self.management else "inference"
            self.admit(conn)
            if not self.take_more():
                return

    def take_more(self) -> bool:
        """Whether to accept another waiting connection in the same event."""
        return True

    @fenced
    def admit(self, conn: Conn) -> None:
        """Apply the connection caps to a new connection, then wait for its request."""
        if self.policy.capped(conn):
            self.close(conn, "address_cap")
            return
        if self.nr_conns > self.max_connections:
            idle = next((c for c in self.waiting if c.idle and not c.closing and quiet(c)), None)
            self.close(idle or conn, "evicted" if idle else "worker_cap")
            if idle is None:
                return
        self.wait(conn, time.monotonic() + self.wanwu_settings.header_timeout_s)

    def wait(self, conn: Conn, deadline: float) -> None:
        """Put a connection on the poller until its next bytes or its deadline."""
        conn.deadline = deadline
        if conn not in self.waiting:
            self.waiting[conn] = None
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_readable, conn))

    def close(self, conn: Conn, reason: str | None = None) -> None:
        """Forget a connection and close it; count it when closed early, for `reason`."""
        if conn in self.waiting:
            del self.waiting[conn]
            self.poller.unregister(conn.sock)
        if conn.closed:
            return
        conn.closed = True
        self.nr_conns -= 1
        self.policy.forget_address(conn.peer)
        self.policy.release(conn)
        conn.close()
        if reason:
            self.policy.count(reason, conn.peer)

    def refuse(self, conn: Conn, error: errors.ApiError, reason: str, rid: str = "") -> None:
        """Answer with an error and close; the client's input is discarded meanwhile."""
        self.policy.count(reason, conn.peer)
        try:
            conn.sock.send(answer(error, rid, framing.request_path(conn.buf), self.error_body))
        except OSError:
            pass
        self.linger(conn)

    def linger(self, conn: Conn) -> None:
        """Half-close and discard input until the client closes too, for LINGER_S at most."""
        self.policy.release(conn)
        conn.closing, conn.buf = True, bytearray()
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close(conn)
            return
        self.wait(conn, time.monotonic() + LINGER_S)

    def fail(self, conn: Conn, exc: Exception) -> None:
        """End a connection whose handling raised: a 400 if no answer has begun, counted as
        an error and logged once, with the request id the client is told."""
        rid = uuid.uuid4().hex
        self.log.error(
            "intake error on a connection from %s, closed (request id %s): %s: %s",
            conn.peer,
            rid,
            type(exc).__name__,
            str(exc)[:200],
        )
        if conn.closed:
            self.policy.count("error", conn.peer)
        elif conn.closing:  # answered already: nothing more to say
            self.close(conn, "error")
        else:
            message = f"The request could not be read (request id {rid})."
            self.refuse(conn, errors.BadRequest(message), "error", rid)

    # -- reading ---------------------------------------------------------------------------

    @fenced
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
        """Frame what arrived; refuse, keep reading, or hand a complete request to a thread."""
        if conn.need is None:
            self.read_head(conn)
            if conn.closing:
                return
        if not self.policy.hold(conn, max(len(conn.buf), conn.need or 0)):
            busy = errors.Overloaded("The server is receiving too much; retry.", retry_after=1)
            self.refuse(conn, busy, "buffer_full")
        elif conn.need is not None and len(conn.buf) >= conn.need:
            del self.waiting[conn]
            self.poller.unregister(conn.sock)
            conn.data_ready = True
            self.enqueue_req(conn)

    def read_head(self, conn: Conn) -> None:
        """Once Gunicorn's parser can tell, set the request's length and deadline, or refuse."""
        worth = framing.worth_parsing(conn.buf, conn.scanned, self.limits)
        conn.scanned = len(conn.buf)
        if not worth:
            return
        verdict = framing.frame(conn.buf, self.cfg, conn.address, self.limits)
        if isinstance(verdict, framing.Refused):
            self.refuse(conn, verdict.error, verdict.error.code)
            return
        if verdict is None:
            return
        refused = self.policy.admit_request(conn, verdict.body_length, verdict.forwarded_for)
        if refused:
            self.refuse(conn, *refused)
            return
        conn.buf[: verdict.head_end] = verdict.head
        conn.need = verdict.end - verdict.head_end + len(verdict.head)
        if verdict.body_length:
            s = self.wanwu_settings
            budget = s.body_timeout_s + verdict.body_length / (s.body_min_kbps * 1024)
            conn.deadline = time.monotonic() + budget
            if verdict.expect_continue and len(conn.buf) < conn.need:
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
        self.next_request(conn, fs)

    @fenced
    def next_request(self, conn: Conn, fs) -> None:  # noqa: ANN001  (a Future)
        keep = not fs.cancelled() and fs.exception() is None and fs.result() is True
        self.policy.release(conn)
        conn.need, conn.scanned = None, 0
        try:
            conn.sock.setblocking(False)
        except OSError:  # closed by the thread (a TLS end, say)
            self.close(conn)
            return
        if not keep:
            self.linger(conn)
            return
        # A body drain can read ahead into the next request: it is framed like new input.
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
            self.expire(conn, force)
        self.policy.report_all()
        metrics.CONNECTIONS_OPEN.set(self.nr_conns)
        metrics.BUFFERED_BYTES.set(self.policy.buffered)

    @fenced
    def expire(self, conn: Conn, force: bool) -> None:
        if conn.closing or force:
            self.close(conn)
        elif conn.idle and conn.initialized:
            self.close(conn, "keepalive_timeout")
        elif conn.need is None:
            self.close(conn, "header_timeout")
        else:
            message = "The request body arrived too slowly."
            self.refuse(conn, errors.RequestTimeout(message), "body_timeout")

    def _cap_keepalive(self, deadline: float) -> None:
        """On shutdown, idle connections close within the linger; a request being sent
        keeps its own deadline (graceful_timeout still bounds the whole stop)."""
        for conn in self.waiting:
            if conn.idle:
                conn.deadline = min(conn.deadline, deadline)
