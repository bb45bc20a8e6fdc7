"""What an explanation needs, found at export time: the last feature map and a pooled-linear head.

Policy: a model is explainable when its logits are one Linear layer over the global average of
a 4-D feature map (ResNet, EfficientNet, MobileNetV2, DenseNet). Then
Grad-CAM needs no backward pass: the gradient of class c's logit with respect to the feature
map is the head's row w_c spread evenly over the h x w cells, so Grad-CAM's map is
ReLU(sum_k w_ck F_k) / (h w), which is CAM. The exported module gets a second method,
`explain(x) -> (logits, cams)`, `cams` holding every class's sum_k w_ck F_k at the feature
map's resolution, so the served artifact explains without this code or the training code.

Both parts are found by running the model once with hooks, not from names: the head is the
last Linear called, and only if the model's output is that layer's output; the feature map is
the last 4-D module output whose spatial mean is the head's input (the outermost module that
returns it, e.g. ResNet's `layer4`). A model where either check fails (a ViT, ConvNeXt's
normalised head) records why in its manifest, and the service answers 501 with that reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from app import imaging


@dataclass(frozen=True)
class Plan:
    """How to explain a model: its feature layer and head, or why it cannot be explained."""

    feature_layer: str | None
    head: str | None
    feature_shape: tuple[int, ...] | None
    reason: str | None = None

    def manifest(self) -> dict[str, Any]:
        """The manifest's `explain` field."""
        if self.reason is not None:
            return {"method": None, "reason": self.reason}
        return {
            "method": "explain",
            "cam": "pooled-linear",
            "feature_layer": self.feature_layer,
            "feature_shape": list(self.feature_shape or ()),
            "head": self.head,
        }


def plan(module: torch.nn.Module, crop: int | list[int]) -> Plan:
    """Find `module`'s feature layer and pooled-linear head by running it on two images."""
    height, width = imaging.size_hw(crop)
    x = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))
    maps: list[tuple[str, torch.Tensor]] = []
    linears: list[tuple[str, torch.nn.Linear, torch.Tensor]] = []

    def record(name: str, layer: torch.nn.Module, args: tuple, output: Any) -> None:
        if isinstance(layer, torch.nn.Linear) and args and isinstance(args[0], torch.Tensor):
            linears.append((name, layer, args[0]))
        if isinstance(output, torch.Tensor) and output.ndim == 4:
            maps.append((name, output))

    handles = [
        layer.register_forward_hook(lambda m, a, o, name=name: record(name, m, a, o))
        for name, layer in module.named_modules()
        if name
    ]
    try:
        with torch.inference_mode():
            logits = module(x)
    finally:
        for handle in handles:
            handle.remove()
    if not linears:
        return _refused("the model has no Linear head")
    head_name, head, pooled = linears[-1]
    with torch.inference_mode():
        if pooled.ndim != 2 or not _close(head(pooled), logits):
            return _refused(f"the model's output is not its last Linear layer's ({head_name})")
    for name, features in reversed(maps):
        spatial = features.shape[2] * features.shape[3]
        if features.shape[1] == pooled.shape[1] and spatial > 1:
            if _close(features.mean(dim=(2, 3)), pooled):
                return Plan(name, head_name, tuple(features.shape[1:]))
    return _refused(
        f"the input of its head ({head_name}) is not the spatial average of a feature map "
        "(the head is not global-average-pooled)"
    )


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def _refused(reason: str) -> Plan:
    return Plan(None, None, None, f"not explainable: {reason}")


class Explainable(torch.nn.Module):
    """The model as it was, plus `explain(x) -> (logits, cams)` for the plan's layers."""

    def __init__(self, model: torch.nn.Module, how: Plan) -> None:
        super().__init__()
        self.model = model
        self.feature_layer = model.get_submodule(how.feature_layer or "")
        self.head = model.get_submodule(how.head or "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def explain(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits, and every class's map sum_k w_ck F_k over the feature map's cells."""
        outputs: list[torch.Tensor] = []
        # The last call counts: a module used several times (EfficientNet's one activation
        # module) returns the feature map on its last call.
        handle = self.feature_layer.register_forward_hook(lambda m, a, o: outputs.append(o))
        try:
            logits = self.model(x)
        finally:
            handle.remove()
        cams = torch.einsum("ck,bkhw->bchw", self.head.weight, outputs[-1])
        return logits, cams
