"""Property: whatever bytes arrive, decoding yields an RGB picture or a 4xx ApiError."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchkit.fuzz import SEEDS, decodes_or_refuses

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(data):
    decodes_or_refuses(data)


@FUZZ
@given(st.sampled_from(SEEDS), st.sampled_from([None, 8]), st.data())
def test_mutated_valid_images(seed, min_short, data):
    mutated = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(mutated) - 1))
        mutated[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(mutated)))
    decodes_or_refuses(bytes(mutated[:cut]), min_short)  # 8: the fast path scales by 1/4
