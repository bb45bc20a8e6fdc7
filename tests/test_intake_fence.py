"""The fence around the intake's event-loop callbacks: a bug in one connection's handling
ends that connection with a 400 naming a request id, is counted and logged once, and never
reaches Gunicorn's worker loop (which would exit the worker and drop every connection).

The worker is the real IntakeWorker on a real socket pair; the fault is injected into the
framer, since the point is what happens when code that should not raise does.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger

from app.intake import framing
from app.intake.policy import Conn
from app.intake.worker import IntakeWorker
from app.settings import Settings


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def worker():
    cfg = Config()
    log = Logger(cfg)
    records = Records()
    log.error_log.addHandler(records)
    worker = IntakeWorker(0, os.getpid(), [], None, 30, cfg, log)
    worker.wanwu_settings = Settings.from_env({})
    worker.setup_intake()
    worker.poller = selectors.DefaultSelector()
    worker.records = records
    yield worker
    worker.poller.close()
    worker.tmp.close()


def connect(worker: IntakeWorker) -> tuple[socket.socket, Conn]:
    client, server = socket.socketpair()
    conn = Conn(worker.cfg, server, ("203.0.113.9", 5555), ("127.0.0.1", 8000))
    worker.nr_conns += 1
    worker.admit(conn)
    return client, conn


def test_an_exception_while_framing_is_a_400_with_a_request_id_not_a_dead_worker(
    worker, monkeypatch
):
    def broken(*args: object) -> None:
        raise RuntimeError("a bug in the framer")

    monkeypatch.setattr(framing, "frame", broken)
    client, conn = connect(worker)
    client.sendall(b"GET /healthz HTTP/1.1\r\nHost: wanwu\r\n\r\n")
    worker.on_readable(conn, conn.sock)  # does not raise
    answer = client.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    request_id = answer.split(b"X-Request-ID: ", 1)[1].split(b"\r\n", 1)[0].decode()
    assert request_id in answer.split(b"\r\n\r\n", 1)[1].decode()  # the JSON message names it
    assert conn.closing and client.recv(1) == b""  # half-closed by the server
    errors = [line for line in worker.records.lines if "intake error" in line]
    assert len(errors) == 1 and request_id in errors[0] and "RuntimeError" in errors[0]
    assert "Traceback" not in "\n".join(worker.records.lines)
    client.close()


def test_other_connections_are_served_after_one_failed(worker, monkeypatch):
    real = framing.frame
    monkeypatch.setattr(framing, "frame", lambda *a: 1 / 0)
    bad_client, bad = connect(worker)
    good_client, good = connect(worker)
    bad_client.sendall(b"GET / HTTP/1.1\r\nHost: w\r\n\r\n")
    worker.on_readable(bad, bad.sock)
    monkeypatch.setattr(framing, "frame", real)
    handed = []
    monkeypatch.setattr(worker, "enqueue_req", handed.append)  # the thread pool is not started
    good_client.sendall(b"GET / HTTP/1.1\r\nHost: w\r\n\r\n")
    worker.on_readable(good, good.sock)
    assert handed == [good] and bad.closing and worker.nr_conns == 2
    for sock in (bad_client, good_client):
        sock.close()
