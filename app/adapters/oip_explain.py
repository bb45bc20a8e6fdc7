"""OIP v2 explanations, over REST and gRPC alike: the `explain` parameter and HEATMAP output.

Policy (docs/MIGRATING.md): the Open Inference Protocol has no explain verb, so a request asks
with its parameter `explain: true` (optionally `target`: a class index or label; else each
image's most probable class). The answer then holds, beside the outputs asked for (PROBS when
none are named), the output `HEATMAP`: FP32 `[N, h, w]`, each image's Grad-CAM heatmap in
[0, 1] on the model's feature-map grid (app/explain.py). Naming HEATMAP among the outputs
chooses its `binary_data` like any output's; naming it without `explain: true`, or an
`explain` that is not a boolean, is a 400. A model that cannot explain answers 501.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from app import errors, explain
from app.adapters import oip_tensors
from app.core.types import Explained, InferOutput, InferRequest
from app.model import Classifier

HEATMAP = "HEATMAP"


@dataclass(frozen=True)
class Heatmaps:
    """What a request asks of HEATMAP: the class to explain (None: the top one), binary."""

    target: Any
    binary: bool

    def classes(self, result: Explained, classifier: Classifier) -> list[int]:
        """The class explained in each image."""
        if self.target is None:
            index = None
        else:
            labels = {lang: classifier.labels(lang) for lang in classifier.languages}
            index = explain.target(str(self.target), labels)
        return [explain.classes(probs, 1, index)[0] for probs in result.probs]

    def tensor(self, result: Explained, classifier: Classifier) -> InferOutput:
        """HEATMAP, JSON or binary as asked."""
        maps = np.stack(
            [
                explain.heatmap(cams, c)
                for cams, c in zip(result.cams, self.classes(result, classifier), strict=True)
            ]
        ).astype("<f4")
        if self.binary:
            return InferOutput(HEATMAP, "FP32", list(maps.shape), raw=maps.tobytes())
        return InferOutput(HEATMAP, "FP32", list(maps.shape), data=maps.flatten().tolist())


def split(request: InferRequest) -> tuple[InferRequest, Heatmaps | None]:
    """The request without HEATMAP among its outputs, and what it asks of HEATMAP (None when
    the request does not explain)."""
    parameters = oip_tensors.bounded_parameters(request.parameters, "Request")
    wanted = parameters.get("explain", False)
    if type(wanted) is not bool:
        raise errors.BadRequest(f"The parameter explain must be true or false; got {wanted!r}.")
    requested = oip_tensors.named_outputs(request) or []
    named = [o for o in requested if o.name == HEATMAP]
    if not wanted:
        if named:
            raise errors.BadRequest(f"The {HEATMAP} output needs the parameter explain: true.")
        return request, None
    binary = oip_tensors.binary_output(request)
    if named:
        binary = oip_tensors.choice(named[0], binary).binary
        request = replace(request, outputs=[o for o in requested if o is not named[0]])
    return request, Heatmaps(parameters.get("target"), binary)
