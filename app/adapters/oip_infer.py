"""OIP v2, the same over REST and gRPC: the server's metadata, the versions a statistics
request covers, and a request's outputs computed through the core, once, for either wire to
render.

Policy: an image model classifies (or, with `explain: true`, explains) the encoded images and
answers the requested PROBS (app/adapters/oip_tensors.py) and HEATMAP
(app/adapters/oip_explain.py); a Triton model runs its rows and answers the outputs of its
config (app/adapters/tensor_io.py). Each wire reads its request into the core's
`InferRequest` and renders the `InferOutput`s: REST as JSON with binary data after it, gRPC
as messages with raw contents.
"""

from __future__ import annotations

from typing import Any

import torch

from app.adapters import oip_explain, oip_tensors, tensor_io
from app.adapters.oip_tensors import INPUT
from app.core.types import Classified, InferOutput, InferRequest, Upload
from app.core.verbs import Core
from app.engine import Engine
from app.tensor_model import TensorModel

EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration", "statistics"]
SERVER_VERSION = "1"


def server_metadata() -> dict[str, Any]:
    """The server's name and the protocol extensions it implements."""
    return {"name": "wanwu", "version": SERVER_VERSION, "extensions": EXTENSIONS}


def counted(core: Core, name: str | None, version: str | None) -> list[Engine]:
    """The engines a statistics request covers: every loaded version of every model (no
    name), of one model (no version), or the one version named."""
    registry = core.registry
    if name is None:
        return [e for n in registry.plans for e in registry.loaded(n)[1].values()]
    if version is None:
        return list(registry.loaded(name)[1].values())
    return [core.model(name, version)]


def classify(
    core: Core, engine: Engine, request: InferRequest, images: list[bytes], started: float
) -> tuple[Classified, list[InferOutput]]:
    """Classify (or explain) `images` with `engine`'s model; the outputs `request` asks for."""
    request, heatmaps = oip_explain.split(request)
    outputs = oip_tensors.outputs(request)
    uploads = [Upload(image, f"{INPUT}[{i}]") for i, image in enumerate(images)]
    verb = core.classify if heatmaps is None else core.explain
    result = verb(uploads, started, engine)
    probs = torch.stack(result.probs)
    labels = engine.classifier.labels("en")
    described = [oip_tensors.tensor(probs, o, labels) for o in outputs]
    if heatmaps is not None:
        described.append(heatmaps.tensor(result, engine.classifier))
    return result, described


def infer(
    core: Core,
    model: TensorModel,
    engine: Engine,
    request: InferRequest,
    started: float,
) -> tuple[Classified, list[InferOutput]]:
    """Run a Triton model's rows; the outputs `request` asks for."""
    rows = tensor_io.rows(model, request)
    outputs = tensor_io.requested(model, request)
    result = core.infer(rows, started, engine)
    return result, tensor_io.written(model, result.probs, outputs)
