"""Image bytes -> RGB picture -> 8-bit pixels -> normalised tensor. Pure functions: no Flask,
no model. The service stops at the pixels; the classifier normalises whole batches.

Two decode policies (WANWU_DECODE):
- `exact` decodes every pixel and resizes like torchvision's reference transforms, bit for bit.
- `fast` lets a large picture come back smaller, never below FAST_MARGIN x the resize target
  on its short side: a JPEG is decoded DCT-scaled by 1/2, 1/4 or 1/8 (`Image.draft`, so the
  full-size picture never exists), any other format is decoded in full and box-reduced by 2,
  4 or 8 (`Image.reduce`). Then a bilinear or bicubic resize runs on the 8-bit pixels
  with torch's vectorised uint8 kernels (Pillow's own antialiased algorithm, several times
  faster than Pillow's): a pixel may come out up to two levels off torchvision's reference
  (docs/BENCHMARKS.md, issue 38); top-1 is unchanged. Other filters resize as in `exact`.
  An upright YCbCr or gray JPEG goes to those kernels straight from libjpeg-turbo
  (`decode_jpeg_pixels`): the pixels Pillow would decode, without its copies.

It is long because it is one pipeline under two policies whose steps must agree where they
meet (the same opening checks, the same DCT scales, the same crop geometry), and the tests
hold each fast step to its exact twin.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pillow_heif
import simplejpeg
import torch
import torchvision.transforms.functional as F
import torchvision.transforms.v2.functional as F2
from PIL import AvifImagePlugin, ExifTags, Image, ImageOps, UnidentifiedImageError
from torchvision.transforms import InterpolationMode

from app.errors import ImageTooLarge, UndecodableImage, UnsupportedMediaType

# Only raster formats a camera or browser produces; Pillow's other plug-ins (FITS, PSD, ...)
# widen the attack surface for no user benefit.
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "HEIF", "AVIF")
FORMAT_NAMES = "JPEG, PNG, GIF, WebP, BMP, TIFF, HEIC/HEIF, AVIF"

# The fast path keeps at least this multiple of the resize target on the short side, so that
# the antialiased resize still averages over 2x2 source pixels or more: the DCT-scaled and
# box-reduced pictures alias less at 2 than at 1 (docs/BENCHMARKS.md, decode fidelity).
FAST_MARGIN = 2.0

# One decoder thread per image: request threads already decode images in parallel on the
# worker's pinned CPUs, and a decoder team per image would only oversubscribe them.
# Thumbnails, depth and auxiliary images are never used, so never decoded.
pillow_heif.register_heif_opener(decode_threads=1, thumbnails=False, depth_images=False)
AvifImagePlugin.DEFAULT_MAX_THREADS = 1

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

# ISO-BMFF major brands of HEIC/HEIF and AVIF stills ('ftyp' box at offset 4); a video's
# brands (isom, mp42, ...) are not images.
_BMFF_BRANDS = (
    b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs",
    b"mif1", b"msf1", b"avif", b"avis",
)  # fmt: skip

# Modes Image.reduce takes; other modes (palette, 16-bit) are decoded in full.
_REDUCIBLE = ("RGB", "RGBA", "L", "LA")

_WHITE = (255, 255, 255)

# What Pillow's decoders (and libavif, libheif, libjpeg through simplejpeg) raise on corrupt
# data; libavif and libheif report some of it as RuntimeError, at open and at load.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, RuntimeError)

# The filters torch resizes on uint8 pixels in its own vectorised kernels. A lone image is
# one unit of their parallel loop, so a request thread runs them inline: no OpenMP team of
# its own competing with the model's thread.
_TENSOR_FILTERS = ("bilinear", "bicubic")


def _looks_like_image(data: bytes) -> bool:
    return (
        data.startswith(_SIGNATURES)
        or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")
        or (data[4:8] == b"ftyp" and data[8:12] in _BMFF_BRANDS)
    )


def decode(data: bytes, max_pixels: int, min_short: int | None = None) -> Image.Image:
    """Decode an upload into an upright 8-bit RGB picture, or raise an ApiError.

    With `min_short`, the picture may come back scaled down, its short side no shorter than
    `min_short` (the fast policy above); without it, at full size.
    """
    return _decoded(_opened(data, max_pixels), max_pixels, min_short)


def _decoded(img: Image.Image, max_pixels: int, min_short: int | None) -> Image.Image:
    """`decode` of a picture `_opened` has checked. A JPEG `_libjpeg_pixels` declined may
    be drafted already; Pillow keeps the first draft and ignores the second, the same one."""
    try:
        if min_short:
            # Before load(), in stored orientation: a square request bounds both sides.
            img.draft(img.mode, (min_short, min_short))
        img.load()
        if min_short:
            img = _reduce(img, min_short)
        return to_rgb(ImageOps.exif_transpose(img))
    except Image.DecompressionBombError:
        raise _too_large(max_pixels) from None
    except _DECODE_ERRORS:
        raise UndecodableImage("The image data is corrupt or truncated.") from None


def _opened(data: bytes, max_pixels: int) -> Image.Image:
    """The upload opened by Pillow (its header read, no pixel decoded), within `max_pixels`;
    or the ApiError its data earns."""
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError:
        raise _too_large(max_pixels) from None
    except (UnidentifiedImageError, *_DECODE_ERRORS):
        if _looks_like_image(data):
            raise UndecodableImage("The image data is corrupt or truncated.") from None
        raise UnsupportedMediaType(
            f"The data is not an image in a supported format ({FORMAT_NAMES})."
        ) from None
    width, height = img.size
    if width * height > max_pixels:  # checked from the header, before any pixel is decoded
        raise ImageTooLarge(
            f"The image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} "
            "(WANWU_MAX_PIXELS)."
        )
    return img


def _too_large(max_pixels: int) -> ImageTooLarge:
    return ImageTooLarge(f"The image is larger than {max_pixels} pixels (WANWU_MAX_PIXELS).")


def decode_jpeg_pixels(data: bytes, max_pixels: int, min_short: int) -> torch.Tensor | None:
    """A JPEG that needs no more than libjpeg-turbo gives, as `decode` would make it under
    the fast policy, in uint8 (3, H, W) channels-last pixels; None for anything else.

    simplejpeg runs the same libjpeg-turbo decode as Pillow (the same DCT scaling, chosen by
    Pillow's `draft` here, the same IDCT and upsampling) straight into one array, without
    Pillow's two copies of the picture. It is given only what needs nothing after libjpeg:
    YCbCr, RGB or gray data, upright (no EXIF orientation to apply), no box reduction left
    to do, and nothing libjpeg warns about; the rest, and every refusal, is `decode`'s.
    """
    if not data.startswith(b"\xff\xd8\xff"):
        return None
    return _libjpeg_pixels(_opened(data, max_pixels), data, min_short)


def _libjpeg_pixels(img: Image.Image, data: bytes, min_short: int) -> torch.Tensor | None:
    """`decode_jpeg_pixels` of a picture `_opened` has checked."""
    try:
        if img.format != "JPEG" or img.mode not in ("RGB", "L"):
            return None
        if img.getexif().get(ExifTags.Base.Orientation, 1) != 1:
            return None
        # libjpeg reads the frame header itself: it must be the one `_opened` held to
        # WANWU_MAX_PIXELS, or libjpeg could size its output from another.
        if simplejpeg.decode_jpeg_header(data)[:2] != (img.height, img.width):
            return None
        img.draft(img.mode, (min_short, min_short))
        width, height = img.size
        if min(width, height) // min_short >= 2:  # _reduce would reduce further
            return None
        array = simplejpeg.decode_jpeg(data, "RGB", min_height=height, min_width=width)
    except _DECODE_ERRORS:
        return None  # decode says what is wrong, as it would have
    if array.shape != (height, width, 3):
        return None
    return torch.from_numpy(array).permute(2, 0, 1)


def _reduce(img: Image.Image, min_short: int) -> Image.Image:
    """Box-average by the largest of 2, 4 and 8 that keeps the short side >= min_short.

    The factors of JPEG's DCT scaling: they divide a camera's sizes (multiples of 8 or 16),
    so the reduced picture spans exactly the original; a factor of 5 on 4032 pixels would
    leave a partial last column and shift the resize by a fraction of a pixel.
    """
    factor = next((f for f in (8, 4, 2) if min(img.size) // min_short >= f), 1)
    if factor == 1 or img.mode not in _REDUCIBLE:
        return img
    return img.reduce(factor)


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


def size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """(height, width) of a resize or crop: one number is a square, two are height, width."""
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def pixels(
    img: Image.Image,
    resize: int | Sequence[int],
    crop: int | Sequence[int],
    max_pixels: int = 40_000_000,
    interpolation: str = "bilinear",
    fast: bool = False,
) -> torch.Tensor:
    """Resize and centre-crop like torchvision's Resize + CenterCrop (`resize_crop`): 8-bit
    pixels.

    As in torchvision, one `resize` number is the short side (the aspect ratio is kept) and
    [height, width] the exact size (Hugging Face's ViT-style processors, timm's squash); one
    `crop` number is a square, [height, width] a rectangle. Any PIL filter by name.

    The short side is resized to `resize`, so a 10000x1 strip would become 2560000x256:
    refuse images whose resized size exceeds `max_pixels` instead of allocating it.

    The result is a uint8 (3, height, width) view of Pillow's (height, width, 3) pixels, that
    is channels-last: the model's own layout, so no copy is made to reorder it.
    """
    check_resizable(img.width, img.height, resize, max_pixels)
    if fast and interpolation in _TENSOR_FILTERS:
        return resize_crop_tensor(channels_last(img), resize, crop, interpolation)
    return channels_last(resize_crop(img, resize, crop, interpolation))


def check_resizable(width: int, height: int, resize: int | Sequence[int], max_pixels: int) -> None:
    """Refuse a picture whose short side resized to `resize` would exceed `max_pixels`."""
    short, long = sorted((width, height))
    if isinstance(resize, int) and resize * resize * long / short > max_pixels:
        raise ImageTooLarge(
            f"The image is {width}x{height}: its aspect ratio is too extreme to resize "
            f"within {max_pixels} pixels."
        )


def channels_last(img: Image.Image) -> torch.Tensor:
    """An RGB picture's bytes as a uint8 (3, height, width) tensor whose memory is Pillow's
    (height, width, 3) order: what the model and torch's uint8 resize take without a reorder.
    """
    # Pillow stores a pixel in 4 bytes, so packing them (tobytes) is the least there is; the
    # bytearray's plain copy makes them writable, as torch wants, cheaper than np.array.
    flat = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return flat.view(img.height, img.width, 3).permute(2, 0, 1)


def resize_crop(
    img: Image.Image, resize: int | Sequence[int], crop: int | Sequence[int], interpolation: str
) -> Image.Image:
    """torchvision's Resize + CenterCrop on a picture, bit for bit (the `exact` way)."""
    size = [resize] if isinstance(resize, int) else list(size_hw(resize))
    img = F.resize(img, size, interpolation=InterpolationMode(interpolation), antialias=True)
    return F.center_crop(img, list(size_hw(crop)))


def resize_crop_tensor(
    pixels: torch.Tensor,
    resize: int | Sequence[int],
    crop: int | Sequence[int],
    interpolation: str,
) -> torch.Tensor:
    """The same Resize + CenterCrop on uint8 (3, H, W) pixels (the `fast` way): the same sizes,
    offsets and padding; the resampling is Pillow's algorithm, rounded its own way."""
    size = [resize] if isinstance(resize, int) else list(size_hw(resize))
    pixels = F2.resize(pixels, size, interpolation=InterpolationMode(interpolation), antialias=True)
    return F2.center_crop(pixels, list(size_hw(crop)))


def crop_window(
    width: int, height: int, resize: int | Sequence[int], crop: int | Sequence[int]
) -> tuple[float, float, float, float]:
    """Where Resize + CenterCrop take their crop from a `width` x `height` picture, in its own
    pixels: (left, top, right, bottom). Negative where the crop is larger than the resized
    picture (CenterCrop pads)."""
    if isinstance(resize, int):  # the short side, as torchvision's Resize computes it
        short, long = sorted((width, height))
        new_short, new_long = resize, int(resize * long / short)
        new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    else:
        new_h, new_w = size_hw(resize)
    crop_h, crop_w = size_hw(crop)
    top, left = round((new_h - crop_h) / 2), round((new_w - crop_w) / 2)  # CenterCrop's
    sx, sy = width / new_w, height / new_h
    return left * sx, top * sy, (left + crop_w) * sx, (top + crop_h) * sy


def normalise(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 pixels, (3, H, W) or (N, 3, H, W) -> contiguous float32 `(x / 255 - mean) / std`.

    The arithmetic of torchvision's ConvertImageDtype + Normalize, operation for operation in
    float32, so the result is theirs bit for bit. The model's thread runs it on a whole batch
    (app/model.py): a request thread running torch ops would start an OpenMP team of its own
    whose spinning threads take CPU from the model (docs/BENCHMARKS.md).
    """
    shape = (-1, 1, 1)  # per channel, or one value for all three
    mean_t = torch.tensor(mean, dtype=torch.float32, device=images.device).view(shape)
    std_t = torch.tensor(std, dtype=torch.float32, device=images.device).view(shape)
    # Planes first (a cheap reorder of bytes), then in place: each operation runs over
    # whole planes with one constant, 3-4x faster than over interleaved channels.
    planes = images.contiguous().to(torch.float32)
    return planes.div_(255).sub_(mean_t).div_(std_t)


def preprocess(
    img: Image.Image,
    resize: int | Sequence[int],
    crop: int | Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    max_pixels: int = 40_000_000,
    interpolation: str = "bilinear",
) -> torch.Tensor:
    """`pixels`, then `normalise`: the model's float input, (3, H, W)."""
    return normalise(pixels(img, resize, crop, max_pixels, interpolation), mean, std)


def short_side(spec: Mapping[str, Any]) -> int:
    """The short side a picture needs for `spec`'s resize: what the fast path keeps, x margin."""
    return max(size_hw(spec["resize"]))


def crop_box(data: bytes, spec: Mapping[str, Any]) -> list[float]:
    """Where `spec`'s centre crop lies in the upright picture `data` holds, in its own pixels:
    [left, top, right, bottom]. Reads the header only (call it once the picture decoded).

    The geometry is `preprocess`'s (`crop_window`): the fast policy's reductions divide the
    picture's sides, so the crop covers the same part of the original either way.
    """
    with Image.open(io.BytesIO(data), formats=FORMATS) as img:
        width, height = img.size
        if img.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8):  # quarter turns
            width, height = height, width
    window = crop_window(width, height, spec["resize"], spec["crop"])
    return [round(v, 1) for v in window]


def decoded_short(spec: Mapping[str, Any], policy: str) -> int | None:
    """The `min_short` that `decode` takes under `policy` (exact or fast) for `spec`."""
    return math.ceil(short_side(spec) * FAST_MARGIN) if policy == "fast" else None


def decode_for(
    data: bytes, spec: Mapping[str, Any], max_pixels: int, policy: str = "exact"
) -> torch.Tensor | Image.Image:
    """What `load_pixels` decodes one upload into for `spec` under `policy`: libjpeg's
    uint8 (3, H, W) pixels where the direct path takes the JPEG (fast, with a filter torch
    resizes on uint8), else Pillow's upright RGB picture."""
    min_short = decoded_short(spec, policy)
    img = _opened(data, max_pixels)  # once, whichever decoder takes it
    if policy == "fast" and spec.get("interpolation", "bilinear") in _TENSOR_FILTERS:
        direct = _libjpeg_pixels(img, data, min_short)
        if direct is not None:
            return direct
    return _decoded(img, max_pixels, min_short)


def load_pixels(
    data: bytes, spec: Mapping[str, Any], max_pixels: int, policy: str = "exact"
) -> torch.Tensor:
    """Decode (`policy` exact or fast), resize and crop one upload for the model's input
    `spec`: uint8 pixels, which the classifier normalises a batch at a time."""
    interpolation = spec.get("interpolation", "bilinear")
    picture = decode_for(data, spec, max_pixels, policy)
    if isinstance(picture, torch.Tensor):
        check_resizable(picture.shape[2], picture.shape[1], spec["resize"], max_pixels)
        return resize_crop_tensor(picture, spec["resize"], spec["crop"], interpolation)
    return pixels(
        picture, spec["resize"], spec["crop"], max_pixels, interpolation, policy == "fast"
    )


def load(
    data: bytes, spec: Mapping[str, Any], max_pixels: int, policy: str = "exact"
) -> torch.Tensor:
    """`load_pixels`, normalised: the model's float input for one upload."""
    return normalise(load_pixels(data, spec, max_pixels, policy), spec["mean"], spec["std"])
