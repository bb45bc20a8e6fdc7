"""Slow and idle clients as real attack tools drive them, against a loopback server only.

Each attack holds `count` connections from one thread with a selector, re-opens a
connection the server closes (as slowloris.py and slowhttptest do), and stops by itself
after `seconds`. Kinds:

- `idle`: connects and sends nothing;
- `keepalive`: one GET, then idles on the kept-alive connection (re-opened ones send none:
  the attack holds connections, it does not send a stream of requests);
- `slowloris`: a request line, then one header byte every `interval` seconds;
- `slow_post`: complete headers for a `body_bytes` body, then one byte every `interval`;
- `flood`: like `idle`, opening every connection at once from one address.

Connections come from `sources` in turn (loopback addresses, 127.0.0.0/8), so a test can
spread an attack over many client addresses or hold it to one.
"""

from __future__ import annotations

import ipaddress
import os
import re
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import requests

from app.intake.policy import raise_fd_limit

KINDS = ("idle", "keepalive", "slowloris", "slow_post", "flood")


def spread(count: int, first: str = "127.1.0.1") -> list[str]:
    """`count` distinct loopback client addresses, from `first` on."""
    start = ipaddress.ip_address(first)
    return [str(start + i) for i in range(count)]


@dataclass
class Stats:
    """What an attack saw: connections opened, and how they ended."""

    opened: int = 0
    refused: int = 0  # connect() failed
    closed_by_server: int = 0  # EOF or reset while the attack still wanted the connection
    answers: dict[str, int] = field(default_factory=dict)  # status lines the server sent
    peak_open: int = 0


@dataclass
class _Conn:
    sock: socket.socket
    script: bytes  # what is left to send slowly
    next_send: float


class Attack:
    """One attack in a background thread; use as a context manager or start()/stop()."""

    def __init__(
        self,
        kind: str,
        port: int,
        count: int,
        seconds: float,
        sources: list[str] | None = None,
        interval: float = 2.0,
        body_bytes: int = 100_000,
        host: str = "127.0.0.1",
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
        for address in [host, *(sources or [])]:
            if not ipaddress.ip_address(address).is_loopback:
                raise ValueError(f"attacks run against loopback only; got {address}")
        self.kind, self.target, self.count = kind, (host, port), count
        self.seconds, self.interval, self.body_bytes = seconds, interval, body_bytes
        self.sources = sources or [host]
        self.stats = Stats()
        self.conns: dict[socket.socket, _Conn] = {}
        self.selector = selectors.DefaultSelector()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"attack-{kind}", daemon=True)
        self.opens = 0

    def __enter__(self) -> Attack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Attack:
        raise_fd_limit(len(os.listdir("/proc/self/fd")) + self.count + 64)
        self.thread.start()
        return self

    def stop(self) -> Stats:
        """Stop early (or wait for the end) and close every connection."""
        self.stopping.set()
        self.thread.join()
        return self.stats

    def open_now(self) -> int:
        return len(self.conns)

    # -- the attack's own loop ----------------------------------------------------------------

    def _head(self) -> tuple[bytes, bytes]:
        """(bytes sent at once, bytes then trickled) for one connection of this kind."""
        if self.kind == "keepalive" and self.opens <= self.count:  # re-opened ones stay idle
            return b"GET /healthz HTTP/1.1\r\nHost: wanwu\r\n\r\n", b""
        if self.kind == "slowloris":
            trickle = b"".join(b"X-a-%d: b\r\n" % i for i in range(10_000))
            return b"GET /?slowloris HTTP/1.1\r\nHost: wanwu\r\n", trickle
        if self.kind == "slow_post":
            head = (
                "POST /predict HTTP/1.1\r\nHost: wanwu\r\nContent-Type: image/jpeg\r\n"
                f"Content-Length: {self.body_bytes}\r\n\r\n"
            )
            return head.encode(), b"\xff" * self.body_bytes
        return b"", b""

    def _open(self, now: float) -> None:
        source = self.sources[self.opens % len(self.sources)]
        self.opens += 1
        sock = socket.socket()
        try:
            sock.bind((source, 0))
            sock.settimeout(5)
            sock.connect(self.target)
            first, trickle = self._head()
            sock.sendall(first)
            sock.setblocking(False)
        except OSError:
            sock.close()
            self.stats.refused += 1
            return
        self.stats.opened += 1
        self.conns[sock] = _Conn(sock, trickle, now + self.interval)
        self.selector.register(sock, selectors.EVENT_READ)
        self.stats.peak_open = max(self.stats.peak_open, len(self.conns))

    def _drop(self, sock: socket.socket) -> None:
        self.selector.unregister(sock)
        del self.conns[sock]
        sock.close()

    def _on_readable(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data.startswith(b"HTTP/1."):
            status = data.split(b"\r\n", 1)[0].decode(errors="replace")
            self.stats.answers[status] = self.stats.answers.get(status, 0) + 1
        if not data:
            self.stats.closed_by_server += 1
            self._drop(sock)

    def _trickle(self, now: float) -> None:
        for conn in list(self.conns.values()):
            if conn.script and now >= conn.next_send:
                try:
                    conn.sock.send(conn.script[:1])
                except OSError:
                    continue  # the reader sees the close
                conn.script, conn.next_send = conn.script[1:], now + self.interval

    def _run(self) -> None:
        end = time.monotonic() + self.seconds
        # Re-opening is paced, a flood's at 1,000 a second: a server that closes every
        # connection at once must not turn the attack into a busy loop.
        reopen_every = 0.001 if self.kind == "flood" else 1.0 / max(self.count, 1)
        next_open = 0.0
        try:
            while (now := time.monotonic()) < end and not self.stopping.is_set():
                while len(self.conns) < self.count and now >= next_open:
                    self._open(now)
                    if self.opens > self.count:  # the first `count` go out at once
                        next_open = now + reopen_every
                for key, _ in self.selector.select(timeout=0.05):
                    self._on_readable(key.fileobj)
                self._trickle(time.monotonic())
        finally:
            for sock in list(self.conns):
                self._drop(sock)
            self.selector.close()


def intake_metrics(url: str) -> dict[str, float]:
    """The server's early closes by reason (`wanwu_connections_closed_total`), with its open
    connections and buffered request bytes as "open" and "buffered"."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    closed = re.finditer(r'^wanwu_connections_closed_total\{reason="(\w+)"\} (\S+)$', text, re.M)
    values = {m.group(1): float(m.group(2)) for m in closed}
    for key, name in (
        ("open", "wanwu_connections_open"),
        ("buffered", "wanwu_buffered_request_bytes"),
    ):
        found = re.search(rf"^{name} (\S+)$", text, re.M)
        values[key] = float(found.group(1)) if found else 0.0  # 0 before any worker reports
    return values


def reset_peak_memory(pid: int) -> None:
    """Start a process's peak resident memory (VmHWM) again from its current size."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")  # proc(5): "reset the peak resident set size"


def peak_memory(pid: int) -> int:
    """A process's peak resident memory (VmHWM) since it started or was last reset, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        kib = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
    return int(kib) * 1024


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a state the server exposes until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)
