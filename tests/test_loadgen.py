"""The closed-loop load generator, its clients spread over forked processes."""

from __future__ import annotations

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from benchkit.loadgen import closed_loop


def test_clients_in_several_processes_each_send_their_own_sequence_and_all_records_return():
    seen: list[int] = []
    senders: set[str] = set()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            seen.append(int(self.path.strip("/")))
            senders.add(self.headers["X-Sender"])
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:

        def make(session: requests.Session, n: int) -> requests.Response:
            return session.get(f"{url}/{n}", headers={"X-Sender": str(os.getpid())}, timeout=10)

        records = closed_loop(make, clients=4, seconds=0.5, processes=2)
    finally:
        server.shutdown()
        server.server_close()
    assert records and all(r.status == 200 for r in records)
    assert len(records) == len(seen)  # every answered request came back from its process
    assert {n % 4 for n in seen} == {0, 1, 2, 3}  # all four clients ran
    assert len(senders) == 2 and str(os.getpid()) not in senders  # in two other processes
    assert len(set(seen)) == len(seen)  # no two clients sent the same sequence number
