"""The app's JSON writer (app/json_provider.py): Flask's rules, orjson's speed."""

from __future__ import annotations

import dataclasses
import decimal
import json
import math

import torch
from flask import Flask

from app.json_provider import OrjsonProvider


def provider() -> OrjsonProvider:
    return OrjsonProvider(Flask(__name__))


def test_keys_sorted_text_as_utf8_and_compact():
    assert provider().dumps({"b": 1, "a": "猫", "c": [1, 2]}) == '{"a":"猫","b":1,"c":[1,2]}'
    assert provider().dumps({"b": 1, "a": 2}, sort_keys=False) == '{"b":1,"a":2}'


def test_floats_read_back_exactly():
    """Probabilities computed in float32, as every answer's are: the same numbers after the
    trip through JSON."""
    values = torch.softmax(torch.randn(1000, generator=torch.Generator().manual_seed(0)), 0)
    listed = values.tolist()
    written = provider().dumps({"data": listed})
    assert json.loads(written)["data"] == listed


def test_what_json_cannot_say_is_null_and_keys_become_text():
    assert provider().dumps({1: math.nan, 2: math.inf}) == '{"1":null,"2":null}'


def test_flasks_fallbacks_for_other_types():
    @dataclasses.dataclass
    class Point:
        x: int

    assert provider().dumps([Point(1), decimal.Decimal("1.5")]) == '[{"x":1},"1.5"]'


def test_debug_answers_are_indented():
    app = Flask(__name__)
    app.json = OrjsonProvider(app)
    app.debug = True
    with app.app_context():
        assert app.json.response({"a": 1}).get_data() == b'{\n  "a": 1\n}\n'
    app.debug = False
    with app.app_context():
        assert app.json.response({"a": 1}).get_data() == b'{"a":1}\n'
