#!/usr/bin/env python3
"""Fuzz the decode path longer than the test suite does (same properties as tests/test_fuzz.py)."""

from __future__ import annotations

import argparse
import sys
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchkit.fuzz import SEEDS, decodes_or_refuses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=5000, help="inputs per property")
    args = parser.parse_args()
    run = settings(
        max_examples=args.examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )

    @run
    @given(st.binary(max_size=8192))
    def random_bytes(data: bytes) -> None:
        decodes_or_refuses(data)

    @run
    @given(st.sampled_from(SEEDS), st.data())
    def mutated(seed: bytes, data: st.DataObject) -> None:
        image = bytearray(seed)
        for _ in range(data.draw(st.integers(1, 16))):
            image[data.draw(st.integers(0, len(image) - 1))] = data.draw(st.integers(0, 255))
        decodes_or_refuses(bytes(image[: data.draw(st.integers(1, len(image)))]))

    for prop in (random_bytes, mutated):
        started = time.monotonic()
        prop()
        print(
            f"{prop.__name__}: {args.examples} inputs, no property violated "
            f"({time.monotonic() - started:.1f} s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
