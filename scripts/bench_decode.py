#!/usr/bin/env python3
"""Decode + resize/crop per image: the served `exact` and `fast` paths, and torchvision.io.

`exact` is Pillow's whole-picture resize, then the crop; `fast` (WANWU_DECODE's default)
resizes 8-bit channels-last pixels with torch's vectorised uint8 kernels, taking an upright
JPEG straight from libjpeg-turbo (simplejpeg, `imaging.decode_for`) and anything else
from Pillow's bytes, shown apart as the path every JPEG took before; torchvision.io decodes
to planes and resizes them with the v1 tensor functional. All use libjpeg-turbo. Each path
runs on one thread, as in a request thread, and stops at the 8-bit pixels the service
queues. Reports the median CPU ms per image for decode + resize/crop and for resize/crop alone,
each path's largest difference from torchvision's reference transforms in 8-bit levels, and
how many photos and pixels differ at all. The paths take turns on each photo, so a busy
machine slows them alike. Last, whether each JPEG decoder lets go of the GIL: while it
decodes a 6000x4000 JPEG in a thread, this thread counts its longest wait between two steps
of a Python loop (a decoder that held the GIL would stall the loop for a whole decode).
"""

from __future__ import annotations

import statistics
import sys
import threading
import time

import simplejpeg
import torch
import torchvision.transforms.functional as F
from torchvision import transforms as T
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import InterpolationMode

from app import imaging
from app.artifact import read_manifest
from benchkit import options
from benchkit.bench import header, load_images
from benchkit.images import image_bytes

MAX_PIXELS = 10**9
RESNET = {"resize": 256, "crop": 224, "interpolation": "bilinear"}  # torchvision's ResNet-18


def served(spec: dict, policy: str):
    """The service's path under `policy`: the CPU ms of resize/crop apart, and the pixels."""

    def run(data: bytes) -> tuple[float, torch.Tensor]:
        picture = imaging.decode(data, MAX_PIXELS, imaging.decoded_short(spec, policy))
        started = time.thread_time()
        out = imaging.pixels(
            picture, spec["resize"], spec["crop"], MAX_PIXELS, spec["interpolation"],
            policy == "fast",
        )  # fmt: skip
        return (time.thread_time() - started) * 1000, out

    return run


def served_fast(spec: dict):
    """`fast` as the service runs it (`imaging.load_pixels`): libjpeg's own array where
    `imaging.decode_for` returns one, Pillow's bytes otherwise."""

    def run(data: bytes) -> tuple[float, torch.Tensor]:
        picture = imaging.decode_for(data, spec, MAX_PIXELS, "fast")
        started = time.thread_time()
        if isinstance(picture, torch.Tensor):
            out = imaging.resize_crop_tensor(
                picture, spec["resize"], spec["crop"], spec["interpolation"]
            )
        else:
            out = imaging.pixels(
                picture, spec["resize"], spec["crop"], MAX_PIXELS, spec["interpolation"], True
            )
        return (time.thread_time() - started) * 1000, out

    return run


def longest_stall(decode, data: bytes, times: int = 3) -> tuple[float, float]:
    """ms of one `decode(data)` alone, and the longest gap (ms) between two steps of a Python
    loop in this thread while another thread runs it `times` times."""
    started = time.perf_counter()
    decode(data)
    alone = time.perf_counter() - started
    worker = threading.Thread(target=lambda: [decode(data) for _ in range(times)])
    worker.start()
    last, gap = time.perf_counter(), 0.0
    while worker.is_alive():
        now = time.perf_counter()
        gap, last = max(gap, now - last), now
    return alone * 1000, gap * 1000


def torchvision_io(data: bytes) -> torch.Tensor:
    """torchvision.io's decode: a (3, H, W) tensor, planes apart."""
    return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.RGB)


def tensor_path(spec: dict, decode):
    """`decode`, then resize on the uint8 tensor with torchvision's v1 functional."""
    interpolation = InterpolationMode(spec["interpolation"])

    def run(data: bytes) -> tuple[float, torch.Tensor]:
        x = decode(data)
        started = time.thread_time()
        x = F.resize(x, [spec["resize"]], interpolation=interpolation, antialias=True)
        return (time.thread_time() - started) * 1000, F.center_crop(x, [spec["crop"]])

    return run


def main() -> int:
    parser = options.parser(__doc__, images=None, model=None, reps=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = {**RESNET, **(read_manifest(args.model)["input"] if args.model else {})}
    images = load_images(args.images)
    reference = T.Compose(
        [
            T.Resize(spec["resize"], InterpolationMode(spec["interpolation"])),
            T.CenterCrop(spec["crop"]),
            T.PILToTensor(),
        ]
    )
    expected = [reference(imaging.decode(data, MAX_PIXELS)) for _, data in images]
    paths = {
        "Pillow, whole picture (`exact`)": served(spec, "exact"),
        "Pillow + torch's uint8 resize of its bytes": served(spec, "fast"),
        "libjpeg's array + torch's uint8 resize (`fast`, as served)": served_fast(spec),
        "torchvision.io + tensor resize": tensor_path(spec, torchvision_io),
    }
    totals = {name: [] for name in paths}
    resizes = {name: [] for name in paths}
    worst = dict.fromkeys(paths, 0)
    photos_off = dict.fromkeys(paths, 0)
    pixels_off = dict.fromkeys(paths, 0)
    for rep in range(args.reps):
        for (_, data), reference_pixels in zip(images, expected, strict=True):
            for name, run in paths.items():  # in turn on each photo: the same machine state
                started = time.thread_time()
                resize_ms, out = run(data)
                totals[name].append((time.thread_time() - started) * 1000)
                resizes[name].append(resize_ms)
                if rep == 0:
                    diff = (out.int() - reference_pixels.int()).abs()
                    worst[name] = max(worst[name], int(diff.max()))
                    photos_off[name] += bool(diff.any())
                    pixels_off[name] += int((diff > 0).sum())
    print(header("Decode + resize/crop (scripts/bench_decode.py)"))
    print(
        f"- {len(images)} images x {args.reps}, one thread; resize {spec['resize']}, crop "
        f"{spec['crop']}, {spec['interpolation']}\n"
    )
    print(
        "| path | CPU ms/image, decode + resize/crop | resize/crop | largest difference "
        "from torchvision, 8-bit levels | photos off it | pixel values off it |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name in paths:
        print(
            f"| {name} | {statistics.median(totals[name]):.2f} | "
            f"{statistics.median(resizes[name]):.2f} | {worst[name]} | "
            f"{photos_off[name]}/{len(images)} | {pixels_off[name]} |"
        )
    large = image_bytes("JPEG", size=(6000, 4000))
    decoders = {
        "Pillow": lambda data: imaging.decode(data, MAX_PIXELS),
        "libjpeg's array (simplejpeg)": lambda data: simplejpeg.decode_jpeg(data, "RGB"),
    }
    print("\n| 6000x4000 JPEG | one decode, ms | longest stall of a Python thread beside it, ms |")
    print("|---|---:|---:|")
    for name, decode in decoders.items():
        alone, stall = longest_stall(decode, large)
        print(f"| {name} | {alone:.0f} | {stall:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
