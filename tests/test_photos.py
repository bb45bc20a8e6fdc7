"""Phone photos: the fast decode path (WANWU_DECODE=fast), HEIC and AVIF, and their limits."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from app import errors, imaging
from app.settings import Settings, SettingsError
from benchkit.hostile import MP4
from benchkit.images import image_bytes, sample_photos
from benchkit.phones import PHONE_12MP, PHONE_48MP_CLASS, encode, enlarge, phone_jpeg
from tests.conftest import INPUT_SPEC

MAX_PIXELS = 40_000_000
MIN_SHORT = 512  # the fast policy's floor for a resize target of 256
PHOTOS = sample_photos()
needs_samples = pytest.mark.skipif(not PHOTOS, reason="../shared/imagenet-samples is not present")


def two_tone(size: tuple[int, int]) -> Image.Image:
    """Green left half, red right half: where the green lands tells the orientation."""
    img = Image.new("RGB", size, (255, 0, 0))
    img.paste((0, 255, 0), (0, 0, size[0] // 2, size[1]))
    return img


@needs_samples
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("photo", PHOTOS[::10], ids=lambda p: p.stem)
def test_fast_resizes_a_full_decode_to_within_two_levels_of_exact(photo, interpolation):
    data = photo.read_bytes()
    picture = imaging.decode(data, MAX_PIXELS, MIN_SHORT)
    assert picture.size == imaging.decode(data, MAX_PIXELS).size  # below the floor: in full
    spec = {**INPUT_SPEC, "interpolation": interpolation}
    exact = imaging.load_pixels(data, spec, MAX_PIXELS, "exact").int()
    fast = imaging.load_pixels(data, spec, MAX_PIXELS, "fast").int()
    # torch's uint8 kernels run Pillow's algorithm with their own fixed-point rounding
    # (docs/BENCHMARKS.md, issue 38); another geometry or filter would be off by tens of
    # levels at edges.
    assert fast.shape == exact.shape
    assert int((fast - exact).abs().max()) <= 2


def test_a_filter_torch_cannot_resize_on_uint8_takes_the_exact_way():
    picture = Image.effect_mandelbrot((300, 200), (-2, -1, 1, 1), 50).convert("RGB")
    args = (picture, 120, 100, MAX_PIXELS, "lanczos")
    assert imaging.pixels(*args, fast=True).equal(imaging.pixels(*args))


def test_a_crop_larger_than_the_resized_picture_is_padded_as_with_exact():
    picture = Image.new("RGB", (300, 200), (10, 200, 30))
    args = (picture, 200, [220, 320], MAX_PIXELS, "bilinear")
    assert imaging.pixels(*args, fast=True).equal(imaging.pixels(*args))


# A request thread resizing in `fast` mode while torch may use two threads: the tasks of the
# process, counted from inside that thread, show whether it started an OpenMP team.
_TEAM = """
import os, threading, torch
from PIL import Image
from app import imaging
torch.set_num_threads(2)
torch.ones(4096, 4096).sum()  # the main thread's own team, started before counting
picture = Image.effect_mandelbrot((900, 600), (-2, -1, 1, 1), 50).convert("RGB")
counts = []
def resize():
    before = len(os.listdir("/proc/self/task"))
    imaging.pixels(picture, 256, 224, interpolation="bilinear", fast=True)
    counts.append((before, len(os.listdir("/proc/self/task"))))
thread = threading.Thread(target=resize)
thread.start()
thread.join()
print(*counts[0])
"""


def test_a_request_thread_resizes_without_starting_threads_of_its_own():
    out = subprocess.run([sys.executable, "-c", _TEAM], capture_output=True, check=True).stdout
    before, after = map(int, out.split())
    assert after == before  # no team: the model's thread keeps the CPUs it was given


@needs_samples
def test_a_12mp_jpeg_is_decoded_dct_scaled_and_stays_close_to_exact():
    data = phone_jpeg(PHOTOS[0], PHONE_12MP)
    picture = imaging.decode(data, MAX_PIXELS, MIN_SHORT)
    assert picture.size == (1008, 756)  # 1/4: 1/8 would leave a short side of 378 < 512
    fast = imaging.load(data, INPUT_SPEC, MAX_PIXELS, "fast")
    exact = imaging.load(data, INPUT_SPEC, MAX_PIXELS, "exact")
    # Normalised units (about 1/55 of one 8-bit level per 0.001); bound from the corpus
    # figures in docs/BENCHMARKS.md with room to spare.
    assert float((fast - exact).abs().mean()) < 0.05


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_the_fast_path_applies_exif_orientation_after_scaling(orientation):
    data = encode(two_tone((2400, 1200)), "JPEG", orientation, quality=90)
    picture = imaging.decode(data, MAX_PIXELS, 256)
    assert picture.size == (600, 300)  # upright, at 1/4
    assert picture.getpixel((100, 150))[1] > 200 and picture.getpixel((500, 150))[0] > 200


def test_other_formats_are_box_reduced():
    data = image_bytes("PNG", size=(3072, 1536))
    assert imaging.decode(data, MAX_PIXELS, MIN_SHORT).size == (1536, 768)  # by 2, not 3
    data = image_bytes("PNG", size=(4096, 4096))
    assert imaging.decode(data, MAX_PIXELS, MIN_SHORT).size == (512, 512)  # by 8


def test_a_palette_picture_is_decoded_in_full():
    data = image_bytes("GIF", size=(2400, 1600))
    assert imaging.decode(data, MAX_PIXELS, MIN_SHORT).size == (2400, 1600)


def test_the_pixel_limit_still_applies_to_the_full_size():
    data = image_bytes("JPEG", size=(4000, 3000))
    with pytest.raises(errors.ImageTooLarge, match="4000x3000"):
        imaging.decode(data, 10_000_000, MIN_SHORT)


# Peak RSS growth of one decode, in KiB: writing 5 to clear_refs resets the peak (VmHWM) to
# the current RSS, so the imports' own peak does not hide the decode's.
_PEAK = """
import sys
from app import imaging
def status(key):
    return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1])
data = open(sys.argv[1], "rb").read()
open("/proc/self/clear_refs", "w").write("5")
before = status("VmRSS:")
imaging.decode(data, 40_000_000, int(sys.argv[2]) or None)
print(status("VmHWM:") - before)
"""


@needs_samples
def test_a_38mp_jpeg_never_exists_at_full_size_on_the_fast_path(tmp_path):
    path = tmp_path / "big.jpg"
    path.write_bytes(phone_jpeg(PHOTOS[1], PHONE_48MP_CLASS))
    full_mib = PHONE_48MP_CLASS[0] * PHONE_48MP_CLASS[1] * 3 / 2**20  # 110 MiB as RGB

    def peak_growth_mib(min_short: int) -> float:
        cmd = [sys.executable, "-c", _PEAK, str(path), str(min_short)]
        return int(subprocess.run(cmd, capture_output=True, check=True).stdout) / 1024

    assert peak_growth_mib(0) > full_mib  # the exact path holds the whole picture
    assert peak_growth_mib(MIN_SHORT) < full_mib / 4


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
@pytest.mark.parametrize("orientation", [1, 6])
def test_heic_and_avif_decode_upright(fmt, orientation):
    data = encode(two_tone((400, 200)), fmt, orientation, quality=90)
    picture = imaging.decode(data, MAX_PIXELS)
    assert picture.mode == "RGB" and picture.size == (400, 200)
    assert picture.getpixel((100, 100))[1] > 200 and picture.getpixel((300, 100))[0] > 200


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heic_and_avif_take_the_fast_path_by_reduction(fmt):
    data = encode(enlarge(Image.new("RGB", (64, 48), (9, 99, 199)), (2048, 1536)), fmt)
    picture = imaging.decode(data, MAX_PIXELS, MIN_SHORT)
    assert picture.size == (1024, 768)  # by 2: 3 is not a DCT scale
    assert np.abs(np.asarray(picture, np.int16).mean((0, 1)) - (9, 99, 199)).max() < 3


def test_an_mp4_video_is_not_an_image():
    with pytest.raises(errors.UnsupportedMediaType, match="HEIC"):
        imaging.decode(MP4, MAX_PIXELS)


def test_the_decode_setting_is_checked():
    assert Settings.from_env({}).decode == "fast"
    assert Settings.from_env({"WANWU_DECODE": "exact"}).decode == "exact"
    with pytest.raises(SettingsError, match="WANWU_DECODE"):
        Settings.from_env({"WANWU_DECODE": "quick"})


def test_the_api_document_names_heic_and_avif(client):
    document = client.get("/openapi.json").get_json()
    description = document["paths"]["/predict"]["post"]["description"]
    assert "HEIC" in description and "AVIF" in description
