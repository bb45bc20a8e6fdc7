"""Folders of photos as people have them, for `python -m app.train`'s tests and benchmark.

- `digits(root)`: scikit-learn's handwritten digits (benchkit.digits renders them) as PNGs, a
  folder per digit.
- `textures(root)`: crops of a few seeded textures (stripes, checks, dots, noise), a folder each.
- `strays(root)`: what real folders also hold: a Jupyter `.ipynb_checkpoints` folder, a
  `.DS_Store`, a text file, an empty file and a truncated JPEG, each placed in a class folder.
- `backbone()`: a small seeded CNN with a linear head (an `--arch module:callable` factory),
  which makes features in milliseconds where EfficientNet-Lite0 takes seconds.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchkit import digits as rendered

TEXTURES = ("checks", "dots", "noise", "stripes")
# The preprocessing `backbone()` is trained with: `--resize 32 --crop 32 --mean 0.5 --std 0.5`.
BACKBONE_INPUT = ["--resize", "32", "--crop", "32", "--mean", "0.5", "--std", "0.5"]


def digits(root: Path, per_class: int | None = None) -> dict[str, int]:
    """Write the digits as root/<name>/NNNN.png (at most `per_class` each); count per class."""
    from sklearn.datasets import load_digits

    scans = load_digits()
    counts: dict[str, int] = {}
    for pixels, digit in zip(scans.images, scans.target, strict=True):
        name = rendered.LABELS_EN[digit]
        if per_class is not None and counts.get(name, 0) >= per_class:
            continue
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        counts[name] = counts.get(name, 0) + 1
        rendered.render(pixels).save(folder / f"{counts[name]:04d}.png")
    return counts


def textures(root: Path, per_class: int = 16, size: int = 64, seed: int = 0) -> None:
    """Write `per_class` crops of each texture as JPEGs, shifted, rescaled and recoloured."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    for name in TEXTURES:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            period = rng.uniform(6, 12)
            u, v = (x + rng.integers(0, 12)) / period, (y + rng.integers(0, 12)) / period
            ink = {
                "stripes": np.sin(2 * np.pi * u) > 0,
                "checks": (np.floor(u) + np.floor(v)) % 2 == 0,
                "dots": (u % 1 - 0.5) ** 2 + (v % 1 - 0.5) ** 2 < 0.08,
                "noise": rng.random((size, size)) < 0.5,
            }[name]
            colour = rng.integers(0, 120, 3)
            pixels = np.where(ink[..., None], colour, 255 - colour // 4).astype(np.uint8)
            Image.fromarray(pixels, "RGB").save(root / name / f"{i:03d}.jpg", quality=92)


def strays(folder: Path) -> list[str]:
    """Write the strays into `folder` (a class folder); their paths relative to it."""
    good = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(good, "JPEG")
    contents = {
        ".ipynb_checkpoints/notes-checkpoint.png": good.getvalue(),
        ".DS_Store": b"\x00\x00\x00\x01Bud1",
        "notes.txt": b"labels to check later\n",
        "empty.jpg": b"",
        "broken.jpg": good.getvalue()[:100],
    }
    for name, data in contents.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return list(contents)


def backbone() -> torch.nn.Module:
    """A seeded small CNN for 32x32 inputs with a 1000-class linear head."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(128, 1000),
    )
