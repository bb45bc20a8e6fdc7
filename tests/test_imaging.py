"""Decoding and preprocessing: fidelity to torchvision's reference, every mode, clear errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.models import ResNet18_Weights

from app import errors, imaging
from app.model import Classifier
from benchkit.images import image_bytes, sample_photos
from tests.conftest import INPUT_SPEC

MAX_PIXELS = 40_000_000


def prep(img: Image.Image) -> torch.Tensor:
    return imaging.preprocess(
        img, INPUT_SPEC["resize"], INPUT_SPEC["crop"], INPUT_SPEC["mean"], INPUT_SPEC["std"]
    )


@pytest.mark.skipif(not sample_photos(), reason="../shared/imagenet-samples is not present")
@pytest.mark.parametrize("photo", sample_photos()[::10], ids=lambda p: p.stem)
def test_preprocessing_equals_the_torchvision_reference_on_real_photos(photo):
    reference = ResNet18_Weights.IMAGENET1K_V1.transforms()(Image.open(photo).convert("RGB"))
    ours = prep(imaging.decode(photo.read_bytes(), MAX_PIXELS))
    assert ours.shape == (3, 224, 224)
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "CMYK", "RGBA", "LA", "1"])
def test_every_common_mode_becomes_rgb(mode):
    fmt = "JPEG" if mode in ("L", "CMYK") else "PNG"
    img = imaging.decode(image_bytes(fmt, mode=mode), MAX_PIXELS)
    assert img.mode == "RGB" and prep(img).shape == (3, 224, 224)


def test_transparency_is_composited_over_white():
    rgba = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 32, 64))
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    img = imaging.decode(buf.getvalue(), MAX_PIXELS)
    assert img.getpixel((48, 10)) == (255, 255, 255)  # fully transparent red -> white
    assert img.getpixel((10, 10)) == (0, 0, 255)


def test_sixteen_bit_grey_is_scaled_not_clamped():
    ramp = np.linspace(0, 65535, 256 * 64, dtype=np.uint16).reshape(64, 256)
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, "PNG")
    img = imaging.decode(buf.getvalue(), MAX_PIXELS)
    values = np.asarray(img)[:, :, 0]
    assert values.min() == 0 and values.max() == 255
    assert 100 < values.mean() < 155  # a clamped image would be almost all 255


def test_exif_orientation_is_applied():
    upright = Image.new("RGB", (80, 40), (255, 0, 0))
    upright.paste((0, 255, 0), (0, 0, 40, 40))  # left half green
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: viewers turn it 90 degrees clockwise
    buf = io.BytesIO()
    upright.save(buf, "JPEG", exif=exif, quality=95)
    img = imaging.decode(buf.getvalue(), MAX_PIXELS)
    assert img.size == (40, 80)
    r, g, _ = img.getpixel((20, 10))
    assert g > 200 and r < 60  # the green half is on top after rotation


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    assert imaging.decode(buf.getvalue(), MAX_PIXELS).getpixel((5, 5))[0] > 200


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "WEBP", "GIF", "PNG"])
def test_other_raster_formats_decode(fmt):
    assert imaging.decode(image_bytes(fmt), MAX_PIXELS).size == (320, 240)


def test_truncated_jpeg_is_a_400():
    data = image_bytes("JPEG", size=(640, 480))
    with pytest.raises(errors.UndecodableImage):
        imaging.decode(data[: len(data) // 2], MAX_PIXELS)


@pytest.mark.parametrize(
    "data",
    [
        b"hello, world",
        b"<svg xmlns='http://www.w3.org/2000/svg'></svg>",
        b"%PDF-1.7\n",
        b"SIMPLE  =                    T",
    ],
    ids=["text", "svg", "pdf", "fits"],
)
def test_non_images_are_a_415(data):
    with pytest.raises(errors.UnsupportedMediaType):
        imaging.decode(data, MAX_PIXELS)


def rotated_jpeg(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.open(io.BytesIO(image_bytes(size=(600, 400)))).save(buf, "JPEG", exif=exif)
    return buf.getvalue()


def two_frame_headers() -> bytes:
    """A 64x48 JPEG with a 6000x4000 frame header before its own: Pillow reads the last."""
    data = image_bytes("JPEG", size=(64, 48))
    start = data.index(b"\xff\xc0")
    sof = data[start : start + 2 + int.from_bytes(data[start + 2 : start + 4], "big")]
    large = sof[:5] + (4000).to_bytes(2, "big") + (6000).to_bytes(2, "big") + sof[9:]
    return data[:start] + large + data[start:]


@pytest.mark.parametrize(
    ("size", "mode", "save"),
    [
        ((640, 480), "RGB", {}),  # no DCT scaling: short side under 2 x min_short
        ((2000, 1500), "RGB", {}),  # 1/2
        ((4032, 3024), "RGB", {}),  # 1/4, a phone's size
        ((3024, 4032), "RGB", {"progressive": True}),
        ((1001, 777), "RGB", {"subsampling": 0}),  # 4:4:4, odd sides
        ((1235, 998), "RGB", {"subsampling": 1}),  # 4:2:2
        ((900, 700), "L", {}),  # gray: RGB by repetition, as Pillow's convert
    ],
)
@pytest.mark.parametrize("min_short", [512, 60])  # 60: scaled by 1/8 where the size allows
def test_jpegs_from_libjpeg_directly_are_pillows_pixels_bit_for_bit(size, mode, save, min_short):
    data = image_bytes("JPEG", size=size, mode=mode, seed=size[0], **save)
    direct = imaging.decode_jpeg_pixels(data, MAX_PIXELS, min_short)
    through_pillow = imaging.decode(data, MAX_PIXELS, min_short)
    header = Image.open(io.BytesIO(data))
    header.draft(header.mode, (min_short, min_short))
    if min(header.size) // min_short >= 2:  # 1/8 was not enough: Pillow reduces on
        assert direct is None
        return
    assert direct is not None and direct.dtype == torch.uint8
    assert torch.equal(direct, imaging.channels_last(through_pillow))
    assert direct.permute(1, 2, 0).is_contiguous()  # channels-last, as the model takes it


@pytest.mark.parametrize(
    "data",
    [
        rotated_jpeg(6),  # EXIF orientation: Pillow turns it
        image_bytes("JPEG", mode="CMYK"),  # Adobe CMYK: Pillow converts it
        image_bytes("PNG"),
        image_bytes("JPEG", size=(640, 480))[:9000],  # truncated: Pillow refuses it
        two_frame_headers(),  # libjpeg must not size its output from a header Pillow skipped
    ],
    ids=["rotated", "cmyk", "png", "truncated", "two-frame-headers"],
)
def test_what_libjpeg_alone_would_get_wrong_is_left_to_pillow(data):
    assert imaging.decode_jpeg_pixels(data, MAX_PIXELS, 512) is None


def test_the_fast_policy_serves_direct_jpegs_as_it_served_pillows():
    data = image_bytes("JPEG", size=(2000, 1500), seed=7)
    spec = {**INPUT_SPEC, "interpolation": "bicubic"}
    served = imaging.load_pixels(data, spec, MAX_PIXELS, "fast")
    picture = imaging.decode(data, MAX_PIXELS, imaging.decoded_short(spec, "fast"))
    expected = imaging.pixels(picture, 256, 224, MAX_PIXELS, "bicubic", fast=True)
    assert torch.equal(served, expected)
    with pytest.raises(errors.UndecodableImage):
        imaging.load_pixels(data[:9000], spec, MAX_PIXELS, "fast")
    with pytest.raises(errors.ImageTooLarge, match="aspect ratio"):
        strip = image_bytes("JPEG", size=(8000, 16), seed=1)
        imaging.load_pixels(strip, spec, 10_000_000, "fast")


def test_too_many_pixels_is_refused_from_the_header():
    data = image_bytes("PNG", size=(2000, 1000))
    with pytest.raises(errors.ImageTooLarge, match="2000x1000"):
        imaging.decode(data, max_pixels=1_000_000)


def test_a_batch_of_pixels_normalises_to_the_torchvision_reference():
    uploads = [image_bytes(seed=seed, size=(320 + 40 * seed, 240)) for seed in range(4)]
    pixels = [imaging.load_pixels(data, INPUT_SPEC, MAX_PIXELS) for data in uploads]
    assert all(p.dtype == torch.uint8 and p.shape == (3, 224, 224) for p in pixels)
    batch = Classifier.collate(pixels)
    assert batch.is_contiguous(memory_format=torch.channels_last)  # stacked, not reordered
    ours = imaging.normalise(batch, INPUT_SPEC["mean"], INPUT_SPEC["std"])
    reference = T.Compose(
        [
            T.Resize(INPUT_SPEC["resize"]),
            T.CenterCrop(INPUT_SPEC["crop"]),
            T.ToTensor(),
            T.Normalize(INPUT_SPEC["mean"], INPUT_SPEC["std"]),
        ]
    )
    expected = torch.stack([reference(Image.open(io.BytesIO(data))) for data in uploads])
    assert torch.equal(ours, expected)  # the same float32 operations, bit for bit
