"""Class heatmaps: which classes to explain, one class's map as a heatmap, and its overlay.

Policy:
- The classes explained are the one `target` names (an index, or a label in any of the
  model's languages) when given, else the `topk` most probable (default 1: the prediction).
- A heatmap is Grad-CAM's map on the model's last feature map: the ReLU of the class's
  activation map (app/export/explainable.py: for a pooled-linear head, Grad-CAM's weights are
  the head's row), scaled to [0, 1] by its maximum; a map with no positive cell stays all 0.
  It keeps the feature map's resolution (7 x 7 for a 224 crop): row i, column j covers the
  crop's cell i, j of that grid, so no interpolation is passed off as the model's.
- The overlay is the crop as the model saw it (its pixels) with the heatmap upsampled
  bilinearly, coloured blue (0) to red (1) and laid over it at ALPHA, as a PNG data URL of
  256 colours (a quarter of the bytes of a true-colour one, encoded several times faster);
  `box` says where that crop lies in the uploaded picture.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from app import bounds, errors

TOPK_DEFAULT = 1
ALPHA = 0.5  # the heatmap's weight over the picture
DECIMALS = 4  # of each heatmap cell: well below what a colour step shows


def target(raw: str, labels: Mapping[str, Sequence[str]]) -> int:
    """The class `raw` names: an index, or a label in any language of `labels`; else a 422."""
    count = len(labels["en"])
    try:
        return bounds.parse_count(raw, count - 1)
    except ValueError:
        pass
    for names in labels.values():
        if raw in names:
            return list(names).index(raw)
    raise errors.InvalidParameter(
        f"target must be a class index from 0 to {count - 1} or one of the model's labels; "
        f"got {raw[:80]!r}."
    )


def classes(probs: torch.Tensor, k: int, index: int | None) -> list[int]:
    """The class `index` when a target was given, else the `k` most probable, best first."""
    if index is not None:
        return [index]
    return [int(i) for i in probs.topk(k).indices]


def heatmap(cams: torch.Tensor, index: int) -> np.ndarray:
    """Class `index`'s Grad-CAM heatmap, in [0, 1], from a model's every-class maps."""
    cam = np.maximum(cams[index].numpy(), 0.0)
    peak = cam.max()
    return cam / peak if peak > 0 else cam


def _ramp() -> list[int]:
    """Blue (0) through cyan, yellow to red (255): the usual heatmap colours, as a palette."""
    x = np.linspace(0, 4, 256, dtype=np.float32)[:, None]
    rgb = np.clip(1.5 - np.abs(x - np.array([3.0, 2.0, 1.0], np.float32)), 0, 1)
    return (rgb * 255).round().astype(np.uint8).ravel().tolist()


RAMP = _ramp()


def overlay(picture: torch.Tensor, heat: np.ndarray) -> str:
    """A PNG data URL: `picture`, the uint8 (3, H, W) crop the model saw, `heat` over it."""
    crop = Image.fromarray(np.ascontiguousarray(picture.numpy().transpose(1, 2, 0)), "RGB")
    levels = Image.fromarray(np.round(heat * 255).astype(np.uint8), "L")
    colours = levels.resize(crop.size, Image.Resampling.BILINEAR)
    colours.putpalette(RAMP)
    blended = Image.blend(crop, colours.convert("RGB"), ALPHA)
    buffer = io.BytesIO()
    # 256 colours and the fastest zlib level: an overlay is encoded per answer, not stored.
    paletted = blended.quantize(256, method=Image.Quantize.FASTOCTREE)
    paletted.save(buffer, "PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def explanation(
    index: int,
    probs: torch.Tensor,
    cams: torch.Tensor,
    picture: torch.Tensor,
    box: list[float],
    names: Sequence[str],
) -> dict[str, Any]:
    """One explained class of one image, as every HTTP answer shows it."""
    heat = heatmap(cams, index)
    return {
        "index": index,
        "label": names[index],
        "score": round(float(probs[index]), 6),
        "heatmap": np.round(heat.astype(np.float64), DECIMALS).tolist(),
        "overlay": overlay(picture, heat),
        "box": box,
    }
