"""Where a request ends, decided by Gunicorn's own HTTP/1.1 parser: bytes in, a verdict out.

The intake buffers each request before a thread sees it, so it must know where a request
ends; Gunicorn then parses the same bytes again to serve it. Two parsers that must agree on
framing are the shape of request smuggling, so there is one: `frame()` runs Gunicorn's
`Request` over the buffered bytes (from an iterator: no I/O here) with the worker's config
and the client's address, and Gunicorn later sees exactly the bytes it accepted. Verdicts:

- `None`: not enough bytes yet to decide;
- `Framed`: the request ends at byte `end` of the buffer (its body may still be arriving);
- `Refused`: never a request the service serves; answered with its status, then closed.

Policy on top of Gunicorn's verdict: only `Content-Length` framing is served (411 for a
chunked body or another transfer coding: every browser and HTTP library sends a length for a
file), a head past Gunicorn's limits gets 414 or 431, an unsupported `Expect` 417. Any other
parse error, an HTTP version other than 1.x included, is a 400 naming it: the front door
answers no 5xx but 503.

The parser runs only when its verdict can change (`worth_parsing`): at the end of the head,
the end of the request line, a bare LF (Gunicorn refuses one at once), or past a size limit.
A client trickling a head a byte at a time therefore costs a byte search per read, not a
parse.
"""

from __future__ import annotations

from dataclasses import dataclass

from gunicorn.http import errors as http_errors
from gunicorn.http.message import MAX_HEADERS, MAX_REQUEST_LINE, Request
from gunicorn.http.unreader import IterUnreader

from app import errors


class Refusal(errors.ApiError):
    """A request refused while framing it, with the status a careful server gives."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


@dataclass(frozen=True)
class Framed:
    """A request whose head is in: it ends at `end`; `head` replaces the buffer's first
    `head_end` bytes when handed on (without `Expect`, answered by the intake)."""

    end: int
    head_end: int
    head: bytes
    body_length: int
    expect_continue: bool
    forwarded_for: str | None


@dataclass(frozen=True)
class Refused:
    error: errors.ApiError


@dataclass(frozen=True)
class Limits:
    """Gunicorn's limits on a head: its request line, and the whole head."""

    line: int
    head: int

    @classmethod
    def of(cls, cfg) -> Limits:  # noqa: ANN001  (gunicorn's Config)
        fields = cfg.limit_request_fields
        fields = MAX_HEADERS if fields <= 0 or fields > MAX_HEADERS else fields
        line = cfg.limit_request_line
        line = MAX_REQUEST_LINE if line <= 0 or line > MAX_REQUEST_LINE else line
        return cls(line, 4 + line + fields * ((cfg.limit_request_field_size or 8190) + 2))


def worth_parsing(buf: bytes | bytearray, scanned: int, limits: Limits) -> bool:
    """Whether the bytes that arrived after `scanned` can change the parser's verdict."""
    if b"\r\n\r\n" in buf[max(0, scanned - 3) :]:  # a terminator may straddle two reads
        return True  # the end of the head
    new = buf[max(0, scanned - 1) :]  # with the byte before, which may be a CR
    lf_before = scanned > 0 and buf[scanned - 1] == ord("\n")
    if new.count(b"\n") - lf_before != new.count(b"\r\n"):
        return True  # a bare LF: Gunicorn refuses it at once
    if b"\r\n" in new and buf.find(b"\r\n") >= scanned - 1:
        return True  # the end of the request line
    no_line_yet = len(buf) > limits.line + 2 and b"\r\n" not in buf
    return no_line_yet or len(buf) > limits.head


def frame(buf: bytes | bytearray, cfg, peer: object, limits: Limits) -> Framed | Refused | None:  # noqa: ANN001
    """Gunicorn's verdict on `buf`, the bytes of a connection's next request so far."""
    end = buf.find(b"\r\n\r\n")  # no head goes past it: the parser needs no body bytes
    data = bytes(buf[: end + 4] if end >= 0 else buf)
    unreader = IterUnreader([data])
    try:
        request = Request(cfg, unreader, peer)
    except (http_errors.NoMoreData, StopIteration):
        if len(data) > limits.head:
            return Refused(errors.HeadersTooLarge("The request headers are too large."))
        return None
    except http_errors.ParseException as exc:
        return Refused(refusal(exc))
    head_end = len(data) - len(unreader.take_buffered())
    reader = request.body.reader
    if not hasattr(reader, "length"):  # chunked
        message = "Send the body with a Content-Length; chunked bodies are not accepted."
        return Refused(errors.LengthRequired(message))
    expect = request._expected_100_continue  # noqa: SLF001  (what gunicorn would answer)
    head = _without_expect(buf[:head_end]) if expect else bytes(buf[:head_end])
    # Every line, in order (RFC 9110 5.3): a proxy may add its own line after the client's.
    forwarded = ", ".join(v for n, v in request.headers if n == "X-FORWARDED-FOR") or None
    return Framed(head_end + reader.length, head_end, head, reader.length, expect, forwarded)


def request_path(buf: bytes | bytearray) -> str:
    """The path of the request line in `buf` ("/" before a whole one has arrived)."""
    line = bytes(buf[: buf.find(b"\r\n")]).split(b" ")
    return line[1].partition(b"?")[0].decode("latin-1") if len(line) == 3 else "/"


def _without_expect(head: bytes) -> bytes:
    """The head without its `Expect` field: the intake answers 100-continue itself, and
    Gunicorn would send a second one. The parser accepted the head, so its lines are
    CRLF-separated `name:value` fields with no folding."""
    lines = head.split(b"\r\n")
    return b"\r\n".join(x for x in lines if x.partition(b":")[0].lower() != b"expect")


def refusal(exc: http_errors.ParseException) -> errors.ApiError:
    """The answer to a request Gunicorn's parser refuses."""
    detail = str(exc)[:200]
    if isinstance(exc, http_errors.LimitRequestLine):
        return Refusal(414, "uri_too_long", "The request line is too long.")
    if isinstance(exc, http_errors.LimitRequestHeaders):
        return errors.HeadersTooLarge(f"The request headers are too large: {detail}.")
    if isinstance(exc, http_errors.InvalidHTTPVersion):
        return errors.BadRequest(f"{detail}: speak HTTP/1.1 (or 1.0).")
    if isinstance(exc, http_errors.UnsupportedTransferCoding):
        message = f"Send the body with a Content-Length; not {detail}."
        return errors.LengthRequired(message)
    if isinstance(exc, http_errors.ExpectationFailed):
        return Refusal(417, "expectation_failed", f"Unsupported Expect: {detail}.")
    return errors.BadRequest(f"Malformed request: {detail}")
