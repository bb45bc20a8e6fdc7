"""Client numbers are bounded before they are converted, JSON depth before it is parsed."""

from __future__ import annotations

import json

import pytest

from app.bounds import MAX_JSON_DEPTH, json_depth, loads_json, parse_count


@pytest.mark.parametrize(("text", "value"), [("0", 0), ("17", 17), ("0100", 100), ("1000", 1000)])
def test_a_count_within_its_limit_is_read(text, value):
    assert parse_count(text, 1000) == value


@pytest.mark.parametrize(
    "text",
    ["1001", "9" * 5000, "", "-1", "+1", " 1", "1 ", "1e3", "0x10", "\u0661\u0662", "\u00b2"],
)
def test_any_other_count_is_a_value_error_naming_the_limit(text):
    with pytest.raises(ValueError, match="from 0 to 1000"):
        parse_count(text, 1000)


@pytest.mark.parametrize(
    ("document", "depth"),
    [
        (b'"just a string"', 0),
        (b'{"inputs": [{"shape": [1], "data": ["x"]}]}', 4),
        (b'{"a": "[[[[{{{{", "b": "\\"]"}', 1),  # brackets inside strings do not count
        (b"[" * 40 + b"]" * 40, 40),
    ],
)
def test_json_depth_counts_containers_not_strings(document, depth):
    assert json_depth(document) == depth


def test_deep_json_is_refused_before_parsing_and_shallow_json_parses():
    with pytest.raises(ValueError, match=f"deeper than {MAX_JSON_DEPTH}"):
        loads_json(b"[" * 100_000 + b"]" * 100_000)  # json.loads: RecursionError
    document = {"inputs": [{"name": "INPUT", "shape": [1], "data": ["aGk="]}]}
    assert loads_json(json.dumps(document).encode()) == document


@pytest.mark.parametrize("document", [b"{", b"[1,]", b"1" * 5000, b"\xff"])
def test_malformed_json_is_a_value_error(document):
    with pytest.raises(ValueError):
        loads_json(document)


def test_leading_zeros_are_not_converted_either():
    assert parse_count("0" * 5000 + "7", 10) == 7
