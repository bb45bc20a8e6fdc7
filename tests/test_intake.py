"""Real Gunicorn with the intake worker (app/intake/) against slow, idle and hostile clients.

Each test waits on what the server exposes (its metrics, its answers, closed sockets), never
on a sleep; timeouts are short settings here so that the attacks end quickly.
"""

from __future__ import annotations

import contextlib
import json
import socket

import pytest
import requests

from benchkit.attacks import Attack, intake_metrics, spread, wait_until
from benchkit.images import image_bytes
from benchkit.nginx import NginxProxy

pytestmark = pytest.mark.integration
IMAGE = image_bytes()
THREADS = 4  # request threads: every attack below holds many more connections than this


@pytest.fixture(scope="module")
def server(tiny_model_path, gunicorn):
    with gunicorn(
        workers=1,
        model=tiny_model_path,
        http_threads=THREADS,
        header_timeout_s=2,
        body_timeout_s=2,
        max_upload_mb=1,
        buffer_mb=1.5,
        max_connections=120,
        max_connections_per_address=30,
    ) as srv:
        yield srv


def post(url: str) -> int:
    """A normal client: one JPEG on a new connection, generous timeout."""
    response = requests.post(
        f"{url}/predict", data=IMAGE, headers={"Content-Type": "image/jpeg"}, timeout=30
    )
    return response.status_code


def exchange(port: int, request: bytes) -> bytes:
    """Send raw bytes and read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def head(method: str = "POST", *fields: str) -> bytes:
    lines = [f"{method} /predict HTTP/1.1", "Host: wanwu", "Content-Type: image/jpeg", *fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def grown(url: str, before: dict[str, float], reason: str) -> float:
    """How many connections the server closed early for `reason` since `before`."""
    return intake_metrics(url).get(reason, 0) - before.get(reason, 0)


def error_code(answer: bytes) -> tuple[int, str]:
    status = int(answer.split(b" ", 2)[1])
    return status, json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"]


def test_requests_refused_from_their_headers_alone(server):
    # 413 with Expect: 100-continue: the answer comes without a 100 and without the body.
    big = exchange(server.port, head("POST", "Content-Length: 5000000", "Expect: 100-continue"))
    assert error_code(big) == (413, "payload_too_large") and b"100 Continue" not in big
    assert b"X-Content-Type-Options: nosniff" in big
    chunked = exchange(server.port, head("POST", "Transfer-Encoding: chunked"))
    assert error_code(chunked) == (411, "length_required")
    assert error_code(exchange(server.port, head("POST", "Content-Length: 1x"))) == (
        400,
        "bad_request",
    )
    huge = head("GET", *(f"X-{i}: {'a' * 8000}" for i in range(120)))
    assert error_code(exchange(server.port, huge)) == (431, "request_header_fields_too_large")


def test_continue_once_and_pipelined_requests(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head("POST", f"Content-Length: {len(IMAGE)}", "Expect: 100-continue"))
        assert sock.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(IMAGE + b"GET /healthz HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n")
        answers = b""
        while chunk := sock.recv(65536):
            answers += chunk
    assert answers.count(b"HTTP/1.1 200 OK") == 2 and b"100 Continue" not in answers


def test_a_body_that_would_overflow_the_buffer_gets_503_before_it_is_read(server):
    reserved = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:
        reserved.sendall(head("POST", "Content-Length: 1000000"))  # holds 1 MB of the 1.5
        wait_until(lambda: intake_metrics(server.url)["buffered"] >= 1e6, 30, "1 MB reserved")
        refused = exchange(server.port, head("POST", "Content-Length: 1000000"))
        assert error_code(refused) == (503, "overloaded") and b"Retry-After: 1" in refused
    finally:
        reserved.close()
    wait_until(lambda: intake_metrics(server.url)["buffered"] == 0, 30, "the buffer released")
    assert post(server.url) == 200


def test_slowloris_and_slow_posts_hold_no_thread_and_are_closed_by_their_deadlines(server):
    before = intake_metrics(server.url)
    slowloris = Attack("slowloris", server.port, 40, 60, spread(4), interval=0.5)
    slow_post = Attack("slow_post", server.port, 10, 60, spread(4, "127.2.0.1"), interval=0.5)
    with slowloris, slow_post:
        wait_until(lambda: slowloris.open_now() + slow_post.open_now() == 50, 30, "all open")
        assert [post(server.url) for _ in range(5)] == [200] * 5
        wait_until(
            lambda: (
                grown(server.url, before, "header_timeout") >= 40
                and grown(server.url, before, "body_timeout") >= 10
            ),
            60,
            "every attack connection closed by its deadline",
        )
    assert slow_post.stats.answers.get("HTTP/1.1 408 Request Timeout", 0) >= 10
    assert slowloris.stats.closed_by_server >= 40


def test_a_flood_from_one_address_is_capped_and_others_are_served(server):
    before = intake_metrics(server.url)
    with Attack("flood", server.port, 200, 30, ["127.3.0.1"]) as flood:
        wait_until(lambda: grown(server.url, before, "address_cap") >= 100, 30, "the cap")
        assert [post(server.url) for _ in range(5)] == [200] * 5
    assert flood.stats.closed_by_server >= 100


def test_past_the_worker_cap_the_longest_idle_connection_makes_room(server):
    before = intake_metrics(server.url)
    with Attack("idle", server.port, 150, 30, spread(10, "127.4.0.1")):  # 15 per address
        wait_until(lambda: grown(server.url, before, "evicted") >= 30, 30, "evictions")
        assert [post(server.url) for _ in range(5)] == [200] * 5


def test_a_trusted_proxy_is_not_capped_its_clients_are(tiny_model_path, gunicorn):
    with gunicorn(
        workers=1,
        model=tiny_model_path,
        max_connections_per_address=5,
        header_timeout_s=120,  # the idle connections below outlive any slow machine's test
        trust_proxy="127.0.0.1,10.0.0.0/8",
    ) as server:
        with Attack("idle", server.port, 20, 30) as idle:  # from the proxy's address
            wait_until(lambda: intake_metrics(server.url)["open"] >= 20, 30, "20 open")
            forwarded = {"X-Forwarded-For": "203.0.113.9, 10.1.2.3"}
            assert requests.get(f"{server.url}/healthz", headers=forwarded).ok
        assert idle.stats.closed_by_server == 0
        assert intake_metrics(server.url)["address_cap"] == 0  # counted from start-up
        lines = [json.loads(x) for x in server.log().splitlines() if '"route": "/healthz"' in x]
        assert lines[-1]["client"] == "203.0.113.9"
        # The cap applies to the forwarded client's requests in progress instead.
        slow = head("POST", "Content-Length: 1000", "X-Forwarded-For: 198.51.100.7")
        pending = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(5)]
        try:
            for sock in pending:
                sock.sendall(slow)  # bodies never sent: five requests in progress
            wait_until(lambda: intake_metrics(server.url)["buffered"] >= 5000, 30, "5 pending")
            assert error_code(exchange(server.port, slow)) == (503, "overloaded")
        finally:
            for sock in pending:
                sock.close()
        assert intake_metrics(server.url)["address_cap"] == 1


@pytest.mark.parametrize("proxy", [False, pytest.param(True, marks=pytest.mark.needs("nginx"))])
def test_normal_requests_succeed_during_all_attacks_at_once(
    tiny_model_path, tmp_path, proxy, gunicorn
):
    """Default settings; the attacks spread over many addresses, as a botnet's would."""
    with gunicorn(workers=1, model=tiny_model_path, http_threads=THREADS) as srv:
        front = NginxProxy(tmp_path, [f"127.0.0.1:{srv.port}"]) if proxy else None
        with front or contextlib.nullcontext():
            target = front or srv
            attacks = [
                Attack("keepalive", target.port, 300, 60, spread(10, "127.5.0.1")),
                Attack("slowloris", target.port, 100, 60, spread(5, "127.6.0.1")),
                Attack("slow_post", target.port, 30, 60, spread(3, "127.7.0.1"), interval=1),
            ]
            for attack in attacks:
                attack.start()
            try:
                wait_until(lambda: sum(a.open_now() for a in attacks) >= 400, 60, "attacks on")
                assert [post(target.url) for _ in range(20)] == [200] * 20
            finally:
                for attack in attacks:
                    attack.stop()


def test_tls_settings_stop_start_up_with_one_line(tiny_model_path, tmp_path, gunicorn):
    """The intake reads plain HTTP/1.1 off the socket: TLS would silently break it."""
    for name in ("cert.pem", "key.pem"):
        (tmp_path / name).write_text("not used: start-up stops first\n")
    server = gunicorn(workers=1, model=tiny_model_path)
    server.env["GUNICORN_CMD_ARGS"] = f"--certfile {tmp_path}/cert.pem --keyfile {tmp_path}/key.pem"
    server.launch()
    assert server.proc.wait(timeout=120) != 0
    lines = [x for x in server.log().splitlines() if "intake worker cannot serve" in x]
    assert len(lines) == 1 and "certfile/keyfile (TLS)" in lines[0], server.log()[-2000:]
    assert "Traceback" not in server.log()
