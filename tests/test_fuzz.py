"""Property: whatever bytes arrive, decoding yields an RGB picture or a 4xx ApiError."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import errors, imaging
from benchkit.images import image_bytes

FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "HEIF", "AVIF")
SEEDS = [image_bytes(fmt, size=(48, 32)) for fmt in FORMATS]
MAX_PIXELS = 4_000_000
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


def decodes_or_refuses(data: bytes, min_short: int | None = None) -> None:
    try:
        picture = imaging.decode(data, MAX_PIXELS, min_short)
    except errors.ApiError as exc:
        assert 400 <= exc.status < 500, exc
        return
    assert picture.mode == "RGB" and picture.width * picture.height <= MAX_PIXELS
    try:
        tensor = imaging.preprocess(picture, 256, 224, [0.5] * 3, [0.5] * 3, MAX_PIXELS)
    except errors.ImageTooLarge:
        return
    assert tuple(tensor.shape) == (3, 224, 224)


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
