"""Images for tests and benchmarks: seeded pictures made in memory, and the shared photos."""

from __future__ import annotations

import io
from pathlib import Path

import pillow_heif
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT.parent / "shared" / "imagenet-samples"

# Registers the HEIF encoder too, so that image_bytes can make HEIC (the service only decodes).
pillow_heif.register_heif_opener()


def image_bytes(
    fmt: str = "JPEG",
    size: tuple[int, int] = (320, 240),
    mode: str = "RGB",
    seed: int = 0,
    **save: object,
) -> bytes:
    """Encode a seeded noise picture (smooth enough to compress realistically)."""
    gen = torch.Generator().manual_seed(seed)
    small = (torch.rand(3, 8, 8, generator=gen) * 255).to(torch.uint8)
    img = Image.fromarray(small.permute(1, 2, 0).numpy(), "RGB").resize(size, Image.BILINEAR)
    if mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def sample_photos(n: int | None = None) -> list[Path]:
    """Real ImageNet photos from ../shared, if present (CI has them)."""
    photos = sorted(SAMPLES.glob("*.JPEG"))
    return photos[:n] if n else photos
