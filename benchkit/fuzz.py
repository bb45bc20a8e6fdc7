"""The decode property the fuzz test and scripts/fuzz_decode.py check, and their seed images."""

from __future__ import annotations

from app import errors, imaging
from benchkit.images import image_bytes

SEEDS = [image_bytes(fmt, size=(48, 32)) for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")]
MAX_PIXELS = 4_000_000


def decodes_or_refuses(data: bytes) -> None:
    try:
        picture = imaging.decode(data, MAX_PIXELS)
    except errors.ApiError as exc:
        assert 400 <= exc.status < 500, exc
        return
    assert picture.mode == "RGB" and picture.width * picture.height <= MAX_PIXELS
    try:
        tensor = imaging.preprocess(picture, 256, 224, [0.5] * 3, [0.5] * 3, MAX_PIXELS)
    except errors.ImageTooLarge:
        return
    assert tuple(tensor.shape) == (3, 224, 224)
