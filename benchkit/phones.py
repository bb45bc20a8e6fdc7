"""A phone-photo corpus made from the shared ImageNet samples: what people actually upload.

    python -m benchkit.phones --out DIR [--count 40]

writes, deterministically (same samples and library versions, same bytes):
- DIR/12mp/: 12 MP JPEGs (4032x3024, quality 92); every third is a portrait stored sideways
  with an EXIF Orientation of 6 or 8, as a phone held upright stores it, and one in nine is
  upside down (3);
- DIR/mixed/: 8 MP and 48 MP-class JPEGs (the 48 MP sensor's 4:3 at 38.5 MP, within the
  default WANWU_MAX_PIXELS) and PNG screenshots (phone and laptop);
- DIR/heif/: a few 12 MP HEIC and AVIF photos.

The samples are about 500x375, so each is upscaled and given a fixed film grain (--grain, the
largest change of a level): without it an enlarged picture is too smooth, compresses to about
half a real photo's bytes and decodes faster than one. `--grain 0` makes the smooth corpus of
issue #14's first measurements (12 MP at quality 92, about 1.2 MB).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image

from benchkit.images import sample_photos

PHONE_12MP = (4032, 3024)
PHONE_8MP = (3264, 2448)
PHONE_48MP_CLASS = (7168, 5376)
SCREENSHOTS = ((1290, 2796), (2880, 1800))
ORIENTATIONS = (1, 6, 1, 1, 8, 1, 1, 3, 1)  # EXIF: 6 and 8 stored sideways, 3 upside down
GRAIN = 6


def _grain_tile(amplitude: int) -> np.ndarray:
    rng = np.random.default_rng(14)
    return rng.integers(-amplitude, amplitude + 1, size=(509, 509, 3), dtype=np.int16)


def enlarge(img: Image.Image, size: tuple[int, int], grain: int = GRAIN) -> Image.Image:
    """Crop `img` to the aspect of `size`, upscale it and add the fixed grain."""
    img = img.convert("RGB")
    scale = max(size[0] / img.width, size[1] / img.height)
    crop_w, crop_h = round(size[0] / scale), round(size[1] / scale)
    left, top = (img.width - crop_w) // 2, (img.height - crop_h) // 2
    img = img.resize(size, Image.BICUBIC, box=(left, top, left + crop_w, top + crop_h))
    reps = (-(-size[1] // 509), -(-size[0] // 509), 1)
    noise = np.tile(_grain_tile(grain), reps)[: size[1], : size[0]]
    pixels = np.asarray(img, dtype=np.int16) + noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _stored(upright: Image.Image, orientation: int) -> Image.Image:
    """The pixels a camera stores for an upright scene it tags with this EXIF orientation."""
    undo = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90}
    undo[8] = Image.Transpose.ROTATE_270
    return upright.transpose(undo[orientation]) if orientation in undo else upright


def encode(img: Image.Image, fmt: str, orientation: int = 1, **options: object) -> bytes:
    """Save an upright picture in `fmt`, stored as a camera with this orientation stores it."""
    buf = io.BytesIO()
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    _stored(img, orientation).save(buf, fmt, exif=exif.tobytes(), **options)
    return buf.getvalue()


def phone_jpeg(
    photo: Path, size: tuple[int, int], orientation: int = 1, grain: int = GRAIN
) -> bytes:
    """A phone JPEG of the sample `photo`: portrait when the orientation turns it sideways."""
    upright = size[::-1] if orientation in (6, 8) else size
    return encode(enlarge(Image.open(photo), upright, grain), "JPEG", orientation, quality=92)


def screenshot(photo: Path, size: tuple[int, int], grain: int = GRAIN) -> bytes:
    """A PNG screenshot: the photo shown full width on a dark app background."""
    canvas = Image.new("RGB", size, (28, 28, 30))
    shown = enlarge(Image.open(photo), (size[0], size[0] * 3 // 4), grain)
    canvas.paste(shown, (0, (size[1] - shown.height) // 2))
    return encode(canvas, "PNG", compress_level=6)


def corpus(count: int = 40, grain: int = GRAIN) -> dict[str, list[tuple[str, bytes]]]:
    """The corpus by folder: {"12mp": [(name, bytes), ...], "mixed": [...], "heif": [...]}."""
    photos = sample_photos()
    if not photos:
        raise SystemExit("no samples: ../shared/imagenet-samples is missing")
    twelve = []
    for i, photo in enumerate(photos[:count]):
        orientation = ORIENTATIONS[i % len(ORIENTATIONS)]
        twelve.append(
            (
                f"{photo.stem}-12mp-o{orientation}.jpg",
                phone_jpeg(photo, PHONE_12MP, orientation, grain),
            )
        )
    rest = photos[count:] or photos
    mixed = [(f"{p.stem}-8mp.jpg", phone_jpeg(p, PHONE_8MP, 1, grain)) for p in rest[0:4]]
    mixed += [(f"{p.stem}-38mp.jpg", phone_jpeg(p, PHONE_48MP_CLASS, 6, grain)) for p in rest[4:7]]
    mixed += [
        (f"{p.stem}-screen-{w}x{h}.png", screenshot(p, (w, h), grain))
        for p, (w, h) in zip(rest[7:10], SCREENSHOTS * 2, strict=False)
    ]
    heif = []
    for i, photo in enumerate(rest[10:14]):
        fmt, options = (
            ("HEIF", {"quality": 80}) if i % 2 == 0 else ("AVIF", {"quality": 70, "speed": 8})
        )
        picture = enlarge(Image.open(photo), PHONE_12MP, grain)
        heif.append((f"{photo.stem}-12mp.{fmt.lower()}", encode(picture, fmt, 1, **options)))
    return {"12mp": twelve, "mixed": mixed, "heif": heif}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="folder to write the corpus into")
    parser.add_argument("--count", type=int, default=40, help="12 MP JPEGs to make")
    parser.add_argument("--grain", type=int, default=GRAIN, help="grain amplitude, 0 for none")
    args = parser.parse_args()
    for folder, files in corpus(args.count, args.grain).items():
        (args.out / folder).mkdir(parents=True, exist_ok=True)
        for name, data in files:
            (args.out / folder / name).write_bytes(data)
        total = sum(len(d) for _, d in files)
        print(f"{args.out / folder}: {len(files)} files, {total / len(files) / 2**20:.2f} MiB each")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
