"""The decode property the fuzz test and scripts/fuzz_decode.py check, and their seed images."""

from __future__ import annotations

from app import errors, imaging
from benchkit.images import image_bytes

FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "HEIF", "AVIF")
SEEDS = [image_bytes(fmt, size=(48, 32)) for fmt in FORMATS]
MAX_PIXELS = 4_000_000


def decodes_or_refuses(data: bytes, min_short: int | None = None) -> None:
    """Decoding (scaled to `min_short`, if given) yields RGB within the limit, or a 4xx."""
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
