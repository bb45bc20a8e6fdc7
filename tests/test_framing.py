"""The intake's framer against Gunicorn's parser: for generated requests, valid and mutated,
the framer's verdict is what Gunicorn does with the same bytes, whole or arriving in pieces.

The oracle is Gunicorn's RequestParser reading the first request and its body, the way a
request thread serves it. The framer runs the same parser over the head, so what is tested
here is everything around it: where the body ends, pipelined bytes, the points at which the
framer decides to parse (a missed one would leave a request waiting for its timeout), the
head handed on without `Expect`, and the refusals of bodies framed other than by length.
"""

from __future__ import annotations

import pytest
from gunicorn.config import Config
from gunicorn.http import errors as http_errors
from gunicorn.http.body import ChunkedReader
from gunicorn.http.parser import RequestParser
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.intake.framing import Framed, Limits, Refused, frame, worth_parsing

CFG = Config()
LIMITS = Limits.of(CFG)
PEER = ("127.0.0.1", 40000)


def gunicorn(raw: bytes) -> tuple:
    """What Gunicorn makes of `raw` as a connection's next bytes."""
    parser = RequestParser(CFG, [raw], PEER)
    try:
        request = next(parser)
    except (StopIteration, http_errors.NoMoreData):
        return ("incomplete",)
    except http_errors.ParseException as exc:
        return ("refused", type(exc).__name__)
    if isinstance(request.body.reader, ChunkedReader):
        return ("chunked",)
    declared = request.body.reader.length
    body = request.body.read()
    if len(body) < declared:
        return ("incomplete",)
    expect = request._expected_100_continue  # noqa: SLF001
    headers = [h for h in request.headers if not (expect and h[0] == "EXPECT")]
    return ("framed", len(raw) - len(parser.unreader.take_buffered()), headers, body)


def framer(raw: bytes) -> tuple:
    """The framer's verdict, in the oracle's terms."""
    verdict = frame(raw, CFG, PEER, LIMITS)
    if verdict is None:
        return ("incomplete",)
    if isinstance(verdict, Refused):
        if "chunked" in verdict.error.message:
            return ("chunked",)
        return ("refused",)
    if verdict.end > len(raw):
        return ("incomplete",)
    return ("framed", verdict.end)


def agree(raw: bytes) -> None:
    ours, theirs = framer(raw), gunicorn(raw)
    assert ours == theirs[: len(ours)], (raw[:300], ours, theirs)
    if ours[0] == "framed":
        verdict = frame(raw, CFG, PEER, LIMITS)
        # The head handed on (without Expect) is served as the same request.
        handed = verdict.head + raw[verdict.head_end : verdict.end]
        served = gunicorn(handed)
        assert served[0] == "framed" and served[1] == len(handed)
        assert served[2:] == theirs[2:]


def in_pieces(raw: bytes, cuts: list[int]) -> Framed | Refused | None:
    """The first verdict the framer gives when `raw` arrives in pieces, as the worker asks."""
    scanned = 0
    for end in [*sorted({c % (len(raw) + 1) for c in cuts}), len(raw)]:
        buf = raw[:end]
        if end > scanned and worth_parsing(buf, scanned, LIMITS):
            verdict = frame(buf, CFG, PEER, LIMITS)
            if verdict is not None:
                return verdict
        scanned = max(scanned, end)
    return None


# -- generated requests ----------------------------------------------------------------------

BAD_VERSIONS = ["HTTP/2.0", "HTTP/1.1x", "", "http/1.1", "HTTP/0.9", "HTTP/1.10"]
TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=1)
PRINTABLE = st.text("".join(map(chr, range(0x20, 0x7F))), max_size=30).map(str.encode)
ODD_BYTES = st.binary(max_size=30).map(lambda b: b.replace(b"\r\n", b""))  # NUL, CTL, obs-text
LENGTH_FORMS = ["0{n}", "+{n}", "-{n}", " {n} ", "{n}, {n}", "0x{n}", "{n}.0", "9" * 5000, ""]
ENDINGS = [b"\n", b"\r", b"\r\r\n", b"\n\r", b" \r\n"]
TE = st.sampled_from(["chunked", "gzip", "identity", "gzip, chunked", "chunked, chunked", "x"])


def sometimes(draw, usual, odd: list, one_in: int = 6):  # noqa: ANN001, ANN201
    """`usual`, or one of `odd` once in `one_in` draws."""
    return draw(st.sampled_from(odd)) if draw(st.integers(1, one_in)) == 1 else usual


@st.composite
def requests_(draw) -> bytes:  # noqa: ANN001
    method = sometimes(draw, draw(st.sampled_from(["GET", "POST", "PUT"])), ["get", "PRI", "G@T"])
    target = sometimes(draw, "/predict", ["*", "", "http://x/y", "/a b", "/\x7f"])
    version = sometimes(draw, draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0"])), BAD_VERSIONS)
    body = draw(st.binary(max_size=40))
    fields = [b"Host: wanwu"]
    if method != "GET" or draw(st.booleans()):
        form = sometimes(draw, "{n}", LENGTH_FORMS).format(n=len(body))
        fields.append(b"Content-Length: " + form.encode())
    if draw(st.integers(0, 5)) == 0:
        fields.append(b"Transfer-Encoding: " + draw(TE).encode())
    if draw(st.integers(0, 3)) == 0:
        fields.append(b"Expect: " + sometimes(draw, b"100-continue", [b"x", b"100-Continue"]))
    for _ in range(draw(st.integers(0, 3))):
        name = sometimes(draw, draw(TOKEN), ["X_Forwarded_For", "X Y", "", "Host"], 10)
        value = draw(ODD_BYTES) if draw(st.integers(0, 8)) == 0 else draw(PRINTABLE)
        fields.append(name.encode() + b": " + value)
    if draw(st.integers(0, 8)) == 0:
        fields.insert(draw(st.integers(1, len(fields))), b" folded")  # obs-fold
    eol = [sometimes(draw, b"\r\n", ENDINGS, 12) for _ in range(len(fields) + 2)]
    head = f"{method} {target} {version}".encode() + eol[0]
    head += b"".join(f + e for f, e in zip(fields, eol[1:], strict=False)) + eol[-1]
    raw = head + body
    if draw(st.integers(0, 3)) == 0:  # pipelined
        raw += b"GET /healthz HTTP/1.1\r\nHost: w\r\n\r\n"
    if draw(st.integers(0, 4)) == 0:  # truncated
        raw = raw[: draw(st.integers(0, len(raw)))]
    if draw(st.integers(0, 5)) == 0:  # a stray byte anywhere
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at:]
    return raw


SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(requests_())
@example(b"POST /predict HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n")
@example(b"GET /healthz HTTP/1.1\nHost: w\n\n")
@example(b"POST /p HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc")
def test_the_framer_agrees_with_gunicorn(raw):
    agree(raw)


@SETTINGS
@given(requests_(), st.lists(st.integers(0, 10_000), max_size=6))
@example(b"GET /healthz HTTP/1.1\nHost: w\n\n", [])
@example(b"GET /healthz HTTP/1.1\r\nHost: w\nX: y\r\n\r\n", [5, 20])
def test_a_request_in_pieces_gets_the_verdict_of_the_whole(raw, cuts):
    whole = frame(raw, CFG, PEER, LIMITS)
    pieces = in_pieces(raw, cuts)
    if whole is None:
        assert pieces is None
    elif isinstance(whole, Framed):
        assert pieces == whole
    else:  # refused whole; in pieces, refused as soon as gunicorn can tell (maybe earlier)
        assert isinstance(pieces, Refused), (raw[:200], pieces)


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /" + b"a" * (LIMITS.line + 10),  # no end of line, past the request-line limit
        b"GET / HTTP/1.1\r\n" + b"X-A: " + b"b" * (LIMITS.head + 10),  # no end of head
    ],
)
def test_a_head_past_gunicorns_limits_is_refused_without_its_end(raw):
    assert worth_parsing(raw, 0, LIMITS)
    verdict = frame(raw, CFG, PEER, LIMITS)
    assert isinstance(verdict, Refused) and verdict.error.status in (414, 431)


def test_a_trickled_head_is_parsed_only_where_the_verdict_can_change():
    raw = b"GET / HTTP/1.1\r\nHost: wanwu\r\nX-Slow: " + b"a" * 50 + b"\r\n\r\n"
    parses = [n for n in range(1, len(raw) + 1) if worth_parsing(raw[:n], n - 1, LIMITS)]
    assert parses == [16, len(raw)]  # the end of the request line, the end of the head


def test_every_x_forwarded_for_line_counts_in_order():
    """A proxy that adds its own line must not leave the client's line the one read."""
    raw = (
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\n"
        b"X-Forwarded-For: 203.0.113.9\r\n\r\n"
    )
    assert frame(raw, CFG, PEER, LIMITS).forwarded_for == "6.6.6.6, 203.0.113.9"
