#!/usr/bin/env python3
"""int8 against fp32 on a trained model: the digits ResNet-18 of benchkit.digits.

  python -m benchkit.digits --out models        # trains and exports models/digits.pt
  python -m scripts.int8_fidelity --model models/digits.pt

Builds an int8 .pt2 package from the exported model's weights, calibrated on --calibration
training pictures written as PNG files and read back through the service's preprocessing (as
`--calibrate DIR` does), then runs every held-out picture (the same seeded split the model was
trained without) through the service's Classifier on the served fp32 TorchScript and on the
int8 package: top-1 accuracy of each, the drop, and how often int8 picks fp32's class.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from app import imaging
from app.artifact import read_manifest, write_artifact
from app.export import pt2
from app.model import Classifier
from benchkit import digits
from benchkit.bench import header

MAX_BATCH = 8


def int8_package(model: Path, out: Path, calibrate: Path) -> Path:
    """Compile the TorchScript export's weights, in the eager architecture, to int8."""
    manifest = read_manifest(model)
    net = digits.model()
    net.load_state_dict(torch.jit.load(str(model), map_location="cpu").state_dict())
    images, record = pt2.calibration_set(calibrate, manifest["input"])
    fields = {k: v for k, v in manifest.items() if k not in ("manifest_version", "artifact_sha256")}
    fields.update(pt2.manifest_fields("int8", MAX_BATCH, "cpu", record))

    def save(path: Path) -> None:
        pt2.compile_package(net, path, "int8", MAX_BATCH, manifest["input"]["crop"], images)

    write_artifact(out, save, **fields)
    return out


def top1(classifier: Classifier, pictures: list[bytes]) -> torch.Tensor:
    """Top-1 class of every picture through the served code path (preprocessing included)."""
    batch = torch.stack([imaging.load(data, classifier.input_spec, 10**9) for data in pictures])
    return torch.cat([classifier(chunk).argmax(1) for chunk in batch.split(MAX_BATCH)])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="the digits TorchScript export")
    parser.add_argument("--calibration", type=int, default=pt2.CALIBRATION_IMAGES)
    args = parser.parse_args()
    print(header("int8 fidelity on the digits model (scripts/int8_fidelity.py)"))
    data = digits.split()
    held_out, labels = data.test_png(), torch.tensor(data.test_labels)
    fp32 = Classifier.load(args.model)
    fp32.prepare(torch.device("cpu"), "fp32")
    with tempfile.TemporaryDirectory() as tmp:
        calibrate = Path(tmp, "calibration")
        calibrate.mkdir()
        for i, picture in enumerate(data.train[: args.calibration]):
            (calibrate / f"{i:04d}.png").write_bytes(digits.png_bytes(picture))
        int8 = Classifier.load(int8_package(args.model, Path(tmp, "digits-int8.pt2"), calibrate))
        int8.prepare(torch.device("cpu"), "int8")
        p32, p8 = top1(fp32, held_out), top1(int8, held_out)
    acc32, acc8 = (100 * float((p == labels).float().mean()) for p in (p32, p8))
    agree = 100 * float((p32 == p8).float().mean())
    count = min(args.calibration, len(data.train))
    print(f"- {len(held_out)} held-out pictures; int8 calibrated on {count} training pictures")
    print("\n| fp32 TorchScript top-1 % | int8 .pt2 top-1 % | drop (points) | same top-1 % |")
    print("|---:|---:|---:|---:|")
    print(f"| {acc32:.2f} | {acc8:.2f} | {acc32 - acc8:.2f} | {agree:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
