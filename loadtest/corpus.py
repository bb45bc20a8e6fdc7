"""Images for load tests: a small seeded set made in memory, plus real photos if given."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

from PIL import Image, ImageDraw

SIZES = [(320, 240), (640, 480), (1024, 768), (500, 375)]


def generated(count: int = 12, seed: int = 0) -> list[tuple[str, bytes, str]]:
    """Seeded pictures of shapes, as (filename, bytes, content type), JPEG and PNG."""
    rng = random.Random(seed)
    images = []
    for n in range(count):
        size = SIZES[n % len(SIZES)]
        img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(img)
        for _ in range(12):
            x, y = rng.randrange(size[0]), rng.randrange(size[1])
            draw.ellipse(
                (x, y, x + rng.randrange(20, 200), y + rng.randrange(20, 200)),
                fill=tuple(rng.randrange(256) for _ in range(3)),
            )
        fmt, ctype = ("PNG", "image/png") if n % 4 == 3 else ("JPEG", "image/jpeg")
        buf = io.BytesIO()
        img.save(buf, fmt, quality=90)
        images.append((f"gen{n}.{fmt.lower()}", buf.getvalue(), ctype))
    return images


def from_directory(directory: Path) -> list[tuple[str, bytes, str]]:
    """Every JPEG and PNG in `directory`."""
    types = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
    return [
        (p.name, p.read_bytes(), types[p.suffix.lower()])
        for p in sorted(directory.iterdir())
        if p.suffix.lower() in types
    ]


def corpus() -> list[tuple[str, bytes, str]]:
    """Generated images, plus WANWU_LOADTEST_IMAGES's photos when that variable is set."""
    images = generated()
    if os.environ.get("WANWU_LOADTEST_IMAGES"):
        images += from_directory(Path(os.environ["WANWU_LOADTEST_IMAGES"]))
    return images
