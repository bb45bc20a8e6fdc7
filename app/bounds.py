"""Numbers and JSON from a client, bounded before they are converted.

`int()` of a client's digits raises ValueError past Python's 4,300-digit limit, and
`json.loads` of a body nested 100,000 deep raises RecursionError: neither is a clean 4xx
unless caught where it is converted. Here a count is checked as text against its limit
first, and a JSON document's nesting depth is measured (strings skipped) before it is
parsed. Both raise `ValueError` with a sentence a caller can put in its 400.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

MAX_JSON_DEPTH = 32  # an OIP or TorchServe request nests 4 deep; no API here needs more
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"')  # possessive: linear on any input
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def parse_count(text: str, limit: int) -> int:
    """A whole number from 0 to `limit` written in ASCII digits; ValueError otherwise."""
    if not (text.isascii() and text.isdigit()) or len(text.lstrip("0")) > len(str(limit)):
        raise ValueError(f"must be a whole number from 0 to {limit}; got {text[:40]!r}")
    value = int(text.lstrip("0") or "0")  # leading zeros are not converted either
    if value > limit:
        raise ValueError(f"must be a whole number from 0 to {limit}; got {value}")
    return value


def json_depth(data: bytes) -> int:
    """How deep a JSON document's arrays and objects nest (0 for a scalar)."""
    skeleton = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    return max(accumulate(_STEP[b] for b in skeleton), default=0)


def loads_json(data: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads`, refusing documents nested deeper than `max_depth` before parsing."""
    if json_depth(data) > max_depth:
        raise ValueError(f"JSON nested deeper than {max_depth} levels")
    return json.loads(data)
