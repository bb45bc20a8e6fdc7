"""Hostile HTTP on the wire: raw requests sent over a socket, and what came back.

Each `WireCase` is bytes a client sends (then, optionally, half-closes), with the status of
the first answer it must get, or None when the server must close without answering (a head
that never ends, a client that left). tests/test_wire_corpus.py sends every case to real
Gunicorn while a normal client runs; scripts/fuzz_http.py mutates them.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import time
from dataclasses import dataclass

from benchkit.images import image_bytes

JPEG = image_bytes("JPEG", size=(64, 48))
STATUS = re.compile(rb"^HTTP/1\.[01] (\d{3}) ", re.M)


@dataclass(frozen=True)
class WireCase:
    name: str
    data: bytes
    status: int | None  # of the first answer; None: closed without one
    half_close: bool = False  # shut the client's write side after sending
    then: int | None = None  # the answer to a request pipelined behind it, on the same connection


@dataclass
class Outcome:
    statuses: list[int]  # every status line the server sent, 1xx included
    closed: bool  # the server closed the connection (EOF or reset) within the timeout
    seconds: float


def exchange(port: int, data: bytes, half_close: bool = False, timeout: float = 15) -> Outcome:
    """Send `data`, then read until the server closes or `timeout` passes."""
    start = time.monotonic()
    got, closed = b"", False
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                got += chunk
            closed = True
        except (ConnectionResetError, BrokenPipeError):
            closed = True  # refused mid-send: the answer may be lost, the close is not
        except TimeoutError:
            pass
    return Outcome([int(s) for s in STATUS.findall(got)], closed, time.monotonic() - start)


def request(
    method: str = "GET", target: str = "/healthz", *fields: str, body: bytes = b"", eol="\r\n"
) -> bytes:
    """A request with `fields` as given (no Content-Length is added) and Connection: close."""
    lines = [f"{method} {target} HTTP/1.1", "Host: wanwu", *fields, "Connection: close"]
    return (eol.join(lines) + eol + eol).encode("latin-1") + body


def post(target: str, body: bytes, content_type: str, *fields: str) -> bytes:
    return request(
        "POST",
        target,
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        *fields,
        body=body,
    )


def _multipart(boundary: str, part: bytes) -> bytes:
    return f"--{boundary}\r\n".encode() + part + f"\r\n--{boundary}--\r\n".encode()


def _framing() -> list[WireCase]:
    def cl(value: str, body: bytes = b"") -> bytes:
        return request("POST", "/predict", f"Content-Length: {value}", body=body)

    def te(value: str) -> bytes:
        return request("POST", "/predict", f"Transfer-Encoding: {value}", body=b"0\r\n\r\n")

    return [
        WireCase("cl-5000-digits", cl("9" * 5000), 400),
        WireCase("cl-4300-nines", cl("9" * 4300), 413),
        WireCase("cl-negative", cl("-1"), 400),
        WireCase("cl-plus", cl("+5", b"12345"), 400),
        WireCase("cl-hex", cl("0x10"), 400),
        WireCase("cl-inner-space", cl("1 0"), 400),
        WireCase("cl-list", cl("5, 5", b"12345"), 400),
        WireCase("cl-empty", cl(""), 400),
        WireCase("cl-arabic-digits", cl("\u0661\u0662".encode().decode("latin-1")), 400),
        WireCase("cl-superscript", cl("\u00b2"), 400),
        WireCase("cl-over-upload-limit", cl(str(21 * 2**20)), 413),
        WireCase("cl-twice-same", request("POST", "/predict", *["Content-Length: 1"] * 2), 400),
        WireCase(
            "cl-twice-differ", request("POST", "/", "Content-Length: 1", "Content-Length: 2"), 400
        ),
        WireCase("cl-body-short-half-closed", cl("100", b"0123456789"), None, half_close=True),
        WireCase(
            "cl-and-te",
            request("POST", "/predict", "Content-Length: 5", "Transfer-Encoding: chunked"),
            400,
        ),
        WireCase("te-chunked", te("chunked"), 411),
        WireCase("te-chunked-http10", te("chunked").replace(b"HTTP/1.1", b"HTTP/1.0", 1), 400),
        WireCase("te-gzip", te("gzip"), 400),
        WireCase("te-unknown", te("foo"), 411),
        WireCase("te-chunked-twice", te("chunked, chunked"), 400),
        WireCase("te-identity", te("identity"), 400),
        WireCase("te-vertical-tab", te("\x0bchunked"), 400),
        WireCase("te-name-space", request("POST", "/", "Transfer-Encoding : chunked"), 400),
        WireCase("te-obs-fold", request("POST", "/", "Transfer-Encoding:", " chunked"), 400),
        WireCase("chunk-size-huge", te("chunked").replace(b"0\r\n\r\n", b"f" * 40 + b"\r\n"), 411),
    ]


def _heads() -> list[WireCase]:
    def get(*fields: str) -> bytes:
        return request("GET", "/healthz", *fields)

    return [
        WireCase("obs-fold", get("X-A: 1", " continued"), 400),
        WireCase("space-before-colon", get("X-A : 1"), 400),
        WireCase("no-colon", get("X-A"), 400),
        WireCase("empty-name", get(": 1"), 400),
        WireCase("underscore-name-dropped", get("X_Forwarded_For: 1.2.3.4"), 200),
        WireCase("host-twice", get("Host: other"), 400),
        WireCase("nul-in-value", get("X-A: a\x00b"), 400),
        WireCase("nul-in-target", request("GET", "/healthz\x00"), 400),
        WireCase("ctl-in-name", get("X-\x01A: 1"), 400),
        WireCase("del-in-value", get("X-A: a\x7fb"), 400),
        WireCase("cr-in-value", get("X-A: a\rb"), 400),
        WireCase("obs-text-in-value", get("X-A: caf\xe9"), 200),
        WireCase("utf8-in-target", request("GET", "/caf\xc3\xa9"), 400),
        WireCase("bare-lf", request(eol="\n"), 400),
        WireCase("bare-lf-in-headers", get("X-A: 1\nX-B: 2"), 400),
        WireCase("bare-cr", request(eol="\r"), None),  # never ends: the header timeout closes
        WireCase("leading-empty-line", b"\r\n" + get(), 200),
        WireCase("two-leading-empty-lines", b"\r\n\r\n" + get(), 400),
        WireCase("lowercase-method", request("get"), 400),
        WireCase("method-30-chars", request("A" * 30), 400),
        WireCase("unknown-method", request("BREW"), 405),
        WireCase("target-10kb", request("GET", "/" + "a" * 10_000), 414),
        WireCase("header-20kb", get("X-A: " + "a" * 20_000), 431),
        WireCase("headers-200", get(*(f"X-{i}: {i}" for i in range(200))), 431),
        WireCase(
            "head-900kb-unterminated", get().rstrip(b"\r\n") + b"\r\nX-A: " + b"a" * 900_000, 431
        ),
        WireCase("http-0.9", b"GET /healthz\r\n\r\n", 400),
        WireCase("http-2.0", request().replace(b"HTTP/1.1", b"HTTP/2.0", 1), 400),
        WireCase("http-1.1-lowercase", request().replace(b"HTTP/1.1", b"http/1.1", 1), 400),
        WireCase("h2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
        WireCase("tls-client-hello", bytes.fromhex("160301020001") + bytes(range(256)), 400),
        WireCase("binary-no-newline", bytes(range(11, 250)), None),
        WireCase(
            "expect-unknown",
            request("POST", "/predict", "Expect: teapot", "Content-Length: 0"),
            417,
        ),
        WireCase("absolute-target", request("GET", "http://wanwu/healthz"), 200),
        WireCase("connect", request("CONNECT", "wanwu:443"), 404),
        WireCase("options-star", request("OPTIONS", "*"), 404),
        WireCase("empty-then-close", b"", None, half_close=True),
        WireCase("request-line-half-closed", b"GET /healthz HT", None, half_close=True),
        WireCase(
            "head-half-closed", b"GET /healthz HTTP/1.1\r\nHost: w\r\n", None, half_close=True
        ),
    ]


def _pipelines() -> list[WireCase]:
    keep = b"GET /healthz HTTP/1.1\r\nHost: w\r\n\r\n"
    last = request()
    return [
        WireCase("pipelined-three", keep * 2 + last, 200),
        WireCase("pipelined-good-then-bare-lf", keep + b"GET /healthz HTTP/1.1\nHost: w\n\n", 200),
        WireCase(
            "pipelined-body-overrun",
            _kept(post("/predict", JPEG, "image/jpeg")) + b"XYZ\r\n\r\n",
            200,
        ),
        WireCase(
            "expect-continue-and-body",
            post("/predict", JPEG, "image/jpeg", "Expect: 100-continue"),
            200,
        ),
    ]


def _bodies() -> list[WireCase]:
    deep = b"[" * 100_000 + b"]" * 100_000
    infer = "/v2/models/tiny/infer"
    boundary = "b0undary"
    part = (
        b'Content-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
        + b"Content-Type: image/jpeg\r\n\r\n"
        + JPEG
    )
    return [
        WireCase("predict-garbage", post("/predict", b"\xff\xd8garbage", "image/jpeg"), 415),
        WireCase("predict-topk-huge", post("/predict?topk=" + "9" * 40, JPEG, "image/jpeg"), 422),
        WireCase("predict-empty", post("/predict", b"", "image/jpeg"), 400),
        WireCase("oip-deep-json", post(infer, deep, "application/json"), 400),
        WireCase("oip-not-json", post(infer, b"{not json", "application/json"), 400),
        WireCase(
            "oip-json-number-5000-digits",
            post(infer, b'{"inputs": ' + b"9" * 5000 + b"}", "application/json"),
            400,
        ),
        WireCase(
            "oip-header-length-5000-digits",
            post(
                infer, b"{}", "application/json", "Inference-Header-Content-Length: " + "9" * 5000
            ),
            400,
        ),
        WireCase(
            "oip-header-length-negative",
            post(infer, b"{}", "application/json", "Inference-Header-Content-Length: -1"),
            400,
        ),
        WireCase(
            "oip-shape-huge",
            post(
                infer,
                json.dumps(
                    {
                        "inputs": [
                            {
                                "name": "INPUT",
                                "datatype": "BYTES",
                                "shape": [10**300],
                                "data": ["x"],
                            }
                        ]
                    }
                ).encode(),
                "application/json",
            ),
            400,
        ),
        WireCase("torchserve-deep-json", post("/predictions/tiny", deep, "application/json"), 400),
        WireCase(
            "torchserve-json-number",
            post("/predictions/tiny", b"1" * 5000, "application/json"),
            400,
        ),
        WireCase(
            "multipart-no-boundary",
            post("/predict", _multipart(boundary, part), "multipart/form-data"),
            400,
        ),
        WireCase(
            "multipart-truncated",
            post(
                "/predict",
                _multipart(boundary, part)[:-20],
                f"multipart/form-data; boundary={boundary}",
            ),
            400,
        ),
        WireCase(
            "multipart-boundary-5kb",
            post(
                "/predict",
                _multipart("b" * 5000, part),
                "multipart/form-data; boundary=" + "b" * 5000,
            ),
            200,
        ),
    ]


def _amplifiers() -> list[WireCase]:
    """Requests that ask for far more work than they send, and early refusals of bodies too
    large for Gunicorn's own drain, each followed by a request on the same connection."""
    infer = "/v2/models/tiny/infer"
    image = {"name": "IMAGE", "datatype": "BYTES", "shape": [1]}
    image["data"] = [base64.b64encode(JPEG).decode()]
    outputs = {"inputs": [image], "outputs": [{"name": "PROBS"}] * 10_000}
    parameters = {"inputs": [image], "parameters": {f"p{n}": n for n in range(100_000)}}
    big = image_bytes("BMP", size=(400, 300))  # 360 KB: gunicorn drains 64 KiB at most
    return [
        WireCase(
            "oip-outputs-10000", post(infer, json.dumps(outputs).encode(), "application/json"), 400
        ),
        WireCase(
            "oip-parameters-100000",
            post(infer, json.dumps(parameters).encode(), "application/json"),
            400,
        ),
        *(
            WireCase(name, _kept(post(target, big, "image/bmp")) + request(), status, then=200)
            for name, target, status in (
                ("refused-unread-body-404-then-next", "/v2/models/nope/infer", 404),
                ("refused-unread-body-422-then-next", "/predict?topk=99", 422),
            )
        ),
    ]


def _kept(data: bytes) -> bytes:
    """A request that keeps its connection open (no Connection: close)."""
    return data.replace(b"Connection: close\r\n", b"")


def wire_cases() -> list[WireCase]:
    """Every case, built fresh."""
    return _framing() + _heads() + _pipelines() + _bodies() + _amplifiers()
