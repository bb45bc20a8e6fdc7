"""A really trained classifier, offline: handwritten digits, as scikit-learn ships them.

`sklearn.datasets.load_digits` (1,797 8x8 scans, inside the wheel: no download) rendered as
48x48 RGB PNGs, dark ink on white as a person draws. A seeded 80/20 split; torchvision's
ResNet-18 (10-class head, 16x16 input) trains on the 80 %, half of it shifted, scaled, tilted,
with crisper strokes of varying width and coloured ink, and is exported through
`python -m app.export` as a user would, with English and Chinese labels.

  python -m benchkit.digits --out models             # models/digits.pt + .json
  python -m benchkit.digits --out models --images out/digits-test   # + held-out PNGs

Deterministic: the same seed gives the same weights on the same machine (one torch thread).
Drawn digits: it names most that are drawn large, filling the picture, with a thick pen
(docs/MODELS.md); it learned from 8x8 scans of 43 people's writing.
"""

from __future__ import annotations

import argparse
import io
import logging
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as F
from PIL import Image
from torchvision import models
from torchvision.transforms import InterpolationMode

log = logging.getLogger("benchkit.digits")

ROOT = Path(__file__).resolve().parent.parent
SEED = 0
ARCH = "resnet18"
SIZE = 48  # rendered PNG side: the service resizes it to INPUT
INPUT = 16  # the model's input side (--resize, --crop): twice the scans' 8x8, and cheap to train
AUGMENTED = 0.5  # the fraction of training pictures augmented
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
LABELS_EN = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
LABELS_ZH = ("零", "一", "二", "三", "四", "五", "六", "七", "八", "九")


@dataclass
class Split:
    """Rendered pictures and their digits: the training part and the held-out part."""

    train: list[Image.Image]
    train_labels: list[int]
    test: list[Image.Image]
    test_labels: list[int]

    def test_png(self) -> list[bytes]:
        """The held-out pictures as PNG files, as a user would upload them."""
        return [png_bytes(img) for img in self.test]


def render(pixels: np.ndarray, ink: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    """An 8x8 scan (0..16, 16 = ink) as a SIZE x SIZE RGB picture, `ink` on white."""
    alpha = Image.fromarray((pixels * (255 / 16)).round().astype(np.uint8), "L")
    alpha = alpha.resize((SIZE, SIZE), Image.BILINEAR)
    picture = Image.new("RGB", alpha.size, (255, 255, 255))
    picture.paste(Image.new("RGB", alpha.size, ink), mask=alpha)
    return picture


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def split(seed: int = SEED, test_fraction: float = 0.2) -> Split:
    """Render every scan; hold out `test_fraction` of each digit, chosen with `seed`."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    train_x, test_x, train_y, test_y = train_test_split(
        digits.images,
        digits.target,
        test_size=test_fraction,
        random_state=seed,
        stratify=digits.target,
    )
    return Split(
        [render(x) for x in train_x],
        [int(y) for y in train_y],
        [render(x) for x in test_x],
        [int(y) for y in test_y],
    )


def to_tensor(img: Image.Image) -> torch.Tensor:
    """torchvision's reference preprocessing of the exported model (not the service's code)."""
    img = F.resize(img, [INPUT], interpolation=InterpolationMode.BILINEAR, antialias=True)
    img = F.center_crop(img, [INPUT])
    return F.normalize(F.to_tensor(img), MEAN, STD)


def augment(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A digit as people draw it: off centre, smaller or larger, tilted, crisp, in some ink.

    The scans are blurry (8x8, upscaled) where a drawn digit has sharp strokes: a random
    contrast curve on the ink turns the blur into strokes of varying width.
    """
    picture = F.affine(
        img,
        angle=float(rng.uniform(-12, 12)),
        translate=[int(v) for v in rng.integers(-SIZE // 6, SIZE // 6 + 1, 2)],
        scale=float(rng.uniform(0.55, 1.1)),
        shear=[float(rng.uniform(-8, 8))],
        interpolation=InterpolationMode.BILINEAR,
        fill=[255, 255, 255],
    )
    ink = 1 - np.asarray(picture, dtype=np.float32) / 255  # 1 where the pen was
    if rng.random() < 0.7:
        low = rng.uniform(0.1, 0.5)
        ink = np.clip((ink - low) / rng.uniform(0.05, 0.3), 0, 1)
    colour = rng.integers(0, 160, 3) if rng.random() < 0.5 else np.zeros(3)
    pixels = 255 - ink * (255 - colour.astype(np.float32))
    return Image.fromarray(pixels.round().astype(np.uint8), "RGB")


def model() -> torch.nn.Module:
    """The architecture: a torchvision classifier with a 10-class head."""
    return models.get_model(ARCH, weights=None, num_classes=10)


def train(data: Split, epochs: int = 5, seed: int = SEED, batch: int = 64) -> torch.nn.Module:
    """Train from a seeded init on the training part; return the model in eval mode.

    On one torch thread: the same weights whatever the machine's core count, and no OpenMP
    threads spinning against each other on a busy machine.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(data, epochs, seed, batch)
    finally:
        torch.set_num_threads(threads)


def _train(data: Split, epochs: int, seed: int, batch: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = model()
    steps = epochs * -(-len(data.train) // batch)
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=3e-3, total_steps=steps, pct_start=0.2
    )
    labels = torch.tensor(data.train_labels)
    for epoch in range(epochs):
        net.train()
        started = time.monotonic()
        order = rng.permutation(len(data.train))
        total = 0.0
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            pictures = [
                augment(data.train[i], rng) if rng.random() < AUGMENTED else data.train[i]
                for i in idx
            ]
            loss = torch.nn.functional.cross_entropy(
                net(torch.stack([to_tensor(p) for p in pictures])), labels[idx]
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
        log.info(
            "epoch %d/%d: loss %.4f (%.1f s)",
            epoch + 1,
            epochs,
            total / len(order),
            time.monotonic() - started,
        )
    return net.eval()


@torch.inference_mode()
def predict(net: torch.nn.Module, images: list[Image.Image]) -> torch.Tensor:
    """Softmax probabilities of the eager model on torchvision-preprocessed pictures."""
    return torch.softmax(net(torch.stack([to_tensor(img) for img in images])), dim=1)


def export(net: torch.nn.Module, out: Path, python: str = sys.executable) -> Path:
    """Save the weights and export them with `python -m app.export`, as a user would."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        weights, en, zh = Path(tmp, "digits.pth"), Path(tmp, "en.txt"), Path(tmp, "zh.txt")
        torch.save(net.state_dict(), weights)
        en.write_text("\n".join(LABELS_EN) + "\n", encoding="utf-8")
        zh.write_text("\n".join(LABELS_ZH) + "\n", encoding="utf-8")
        command = [
            python, "-m", "app.export", "--arch", ARCH, "--weights", str(weights),
            "--labels", str(en), "--labels-zh", str(zh), "--name", "digits", "--out", str(out),
            "--resize", str(INPUT), "--crop", str(INPUT), "--interpolation", "bilinear",
            "--mean", ",".join(map(str, MEAN)), "--std", ",".join(map(str, STD)),
        ]  # fmt: skip
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"app.export failed:\n{result.stderr}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchkit.digits",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=Path("models"), help="folder for digits.pt")
    parser.add_argument("--images", type=Path, help="also write the held-out PNGs here")
    parser.add_argument("--samples", type=int, help="write only this many of them (default all)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    data = split(args.seed)
    net = train(data, args.epochs, args.seed)
    hits = predict(net, data.test).argmax(1) == torch.tensor(data.test_labels)
    accuracy = float(hits.float().mean())
    log.info("held-out top-1 %.2f %% on %d digits", 100 * accuracy, len(data.test))
    path = export(net, args.out / "digits.pt")
    if args.images:
        args.images.mkdir(parents=True, exist_ok=True)
        pairs = list(zip(data.test_png(), data.test_labels, strict=True))[: args.samples]
        for i, (png, label) in enumerate(pairs):
            (args.images / f"{i:04d}-{LABELS_EN[label]}.png").write_bytes(png)
    log.info("wrote %s in %.0f s", path, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
