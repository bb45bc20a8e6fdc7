"""Image bytes -> RGB picture -> normalised tensor. Pure functions: no Flask, no model."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torchvision.transforms.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms import InterpolationMode

from app.errors import ImageTooLarge, UndecodableImage, UnsupportedMediaType

# Only raster formats a camera or browser produces; Pillow's other plug-ins (FITS, PSD, ...)
# widen the attack surface for no user benefit.
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")

# Leading bytes of the allowed formats: data that starts like one but fails is corrupt (400),
# anything else is a type we do not take (415).
_SIGNATURES = (
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
)

_WHITE = (255, 255, 255)


def _looks_like_image(data: bytes) -> bool:
    return data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def decode(data: bytes, max_pixels: int) -> Image.Image:
    """Decode an upload into an upright 8-bit RGB picture, or raise an ApiError."""
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"The image is larger than {max_pixels} pixels.") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        if _looks_like_image(data):
            raise UndecodableImage("The image data is corrupt or truncated.") from None
        raise UnsupportedMediaType(
            "The data is not an image in a supported format (JPEG, PNG, GIF, WebP, BMP, TIFF)."
        ) from None
    width, height = img.size
    if width * height > max_pixels:  # checked from the header, before any pixel is decoded
        raise ImageTooLarge(
            f"The image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}."
        )
    try:
        img.load()
        return to_rgb(ImageOps.exif_transpose(img))
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"The image is larger than {max_pixels} pixels.") from None
    except (OSError, ValueError, SyntaxError, EOFError):
        raise UndecodableImage("The image data is corrupt or truncated.") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited over white."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        # Pillow clamps 16-bit values to 0..255 on convert; scale them instead.
        pixels = np.asarray(img, dtype=np.int64)
        shift = 8 if pixels.max(initial=0) > 255 else 0
        img = Image.fromarray((np.clip(pixels, 0, 65535) >> shift).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        img = Image.alpha_composite(background, rgba)
    return img if img.mode == "RGB" else img.convert("RGB")


def preprocess(
    img: Image.Image,
    resize: int,
    crop: int,
    mean: Sequence[float],
    std: Sequence[float],
    max_pixels: int = 40_000_000,
    interpolation: str = "bilinear",
) -> torch.Tensor:
    """Resize, centre-crop and normalise exactly like torchvision's ImageClassification.

    The short side is resized to `resize`, so a 10000x1 strip would become 2560000x256:
    refuse images whose resized size exceeds `max_pixels` instead of allocating it.
    """
    short, long = sorted(img.size)
    if resize * resize * long / short > max_pixels:
        raise ImageTooLarge(
            f"The image is {img.width}x{img.height}: its aspect ratio is too extreme to resize "
            f"within {max_pixels} pixels."
        )
    img = F.resize(img, [resize], interpolation=InterpolationMode(interpolation), antialias=True)
    img = F.center_crop(img, [crop])
    # The same float32 arithmetic as convert_image_dtype + normalize, in NumPy: torch ops
    # here would give every request thread an OpenMP team of its own, whose spinning
    # threads take CPU from the model (docs/BENCHMARKS.md).
    pixels = np.asarray(img, dtype=np.float32) / np.float32(255)
    pixels = (pixels - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


def load(data: bytes, spec: Mapping[str, Any], max_pixels: int) -> torch.Tensor:
    """Decode and preprocess one upload for a model whose input `spec` is given."""
    picture = decode(data, max_pixels)
    return preprocess(
        picture,
        spec["resize"],
        spec["crop"],
        spec["mean"],
        spec["std"],
        max_pixels,
        spec.get("interpolation", "bilinear"),
    )
