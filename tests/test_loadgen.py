"""The closed-loop load generators: Python clients spread over forked processes, and wrk."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from benchkit import wrk
from benchkit.loadgen import closed_loop


class Quiet(BaseHTTPRequestHandler):
    """A handler that answers over HTTP/1.1 keep-alive and logs nothing."""

    protocol_version = "HTTP/1.1"

    def answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A threaded HTTP server with `handler` on a free port: its URL while the block runs."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_clients_in_several_processes_each_send_their_own_sequence_and_all_records_return():
    seen: list[int] = []
    senders: set[str] = set()

    class Handler(Quiet):
        def do_GET(self) -> None:
            seen.append(int(self.path.strip("/")))
            senders.add(self.headers["X-Sender"])
            self.answer(200)

    with serving(Handler) as url:

        def make(session: requests.Session, n: int) -> requests.Response:
            return session.get(f"{url}/{n}", headers={"X-Sender": str(os.getpid())}, timeout=10)

        records = closed_loop(make, clients=4, seconds=0.5, processes=2)
    assert records and all(r.status == 200 for r in records)
    assert len(records) == len(seen)  # every answered request came back from its process
    assert {n % 4 for n in seen} == {0, 1, 2, 3}  # all four clients ran
    assert len(senders) == 2 and str(os.getpid()) not in senders  # in two other processes
    assert len(set(seen)) == len(seen)  # no two clients sent the same sequence number


@pytest.mark.needs("wrk")
def test_wrk_posts_every_image_as_a_raw_body_and_counts_only_answers_below_400():
    images = [("a.jpg", b"first body"), ("b.jpg", b"second, longer body")]
    bodies: list[bytes] = []
    types: set[str] = set()

    class Handler(Quiet):
        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            types.add(self.headers["Content-Type"])
            self.answer(415 if self.path == "/refuse" else 200)

    with serving(Handler) as url:
        served, _ = wrk.measure(f"{url}/predict", images, 3, 1, "image/jpeg")
        answered = len(bodies)
        refused, _ = wrk.measure(f"{url}/refuse", images, 2, 1, "image/png")
    counted = round(served.rate * served.seconds)
    # wrk counts what was answered before it stopped; the server saw those and at most one
    # more request per connection.
    assert 0 < counted <= answered <= counted + 3
    assert served.errors == "0" and served.p50 <= served.p99
    assert set(bodies) == {data for _, data in images}
    assert types == {"image/jpeg", "image/png"}
    assert refused.rate == 0 and refused.errors.startswith("status >= 400 x")
