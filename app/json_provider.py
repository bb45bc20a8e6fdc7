"""The app's JSON answers, written by orjson.

An answer can hold whole output tensors as JSON numbers: OIP's answer to an image holds its
1,000 probabilities, which Python's json encoder writes in about 0.5 ms, a quarter of what
the rest of such a request costs outside decoding and the model; orjson writes them in
0.02 ms (docs/BENCHMARKS.md). Flask's defaults stand: keys sorted, its fallbacks for other
types (dataclasses, dates, UUIDs, Decimal). What changes, both within JSON's grammar: text is
always UTF-8, never `\\u` escapes (the service asked for that already, for Chinese labels);
a float reads back as the same number, in orjson's notation where the two differ (`0.00001`
and `1.5e-7` for json's `1e-05` and `1.5e-07`); NaN and infinities, which JSON has no word
for, are written as null. Request bodies are not read here: app.bounds parses them.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider


class OrjsonProvider(DefaultJSONProvider):
    """Flask's JSON provider with orjson underneath (`separators`, `ensure_ascii` and other
    json-module arguments do not apply: the output is always compact UTF-8)."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        option = orjson.OPT_NON_STR_KEYS  # as json.dumps: {1: x} is {"1": x}
        if kwargs.get("sort_keys", self.sort_keys):
            option |= orjson.OPT_SORT_KEYS
        if kwargs.get("indent"):  # Flask's debug mode
            option |= orjson.OPT_INDENT_2
        return orjson.dumps(
            obj, default=kwargs.get("default", self.default), option=option
        ).decode()
