"""OIP v2 inference, the same over REST and gRPC: the server's metadata, and a request's
outputs computed through the core, described once for either wire to render.

Policy: an image model classifies (or, with `explain: true`, explains) the encoded images and
answers the requested PROBS (app/adapters/oip_tensors.py) and HEATMAP
(app/adapters/oip_explain.py); a Triton model runs its rows and answers the outputs of its
config (app/adapters/tensor_io.py). REST writes the descriptions as JSON with binary data
after it, gRPC as messages with raw contents.
"""

from __future__ import annotations

from typing import Any

import torch

from app.adapters import oip_explain, oip_tensors, tensor_io
from app.adapters.oip_tensors import INPUT
from app.core.types import Classified, Upload
from app.core.verbs import Core
from app.engine import Engine
from app.tensor_model import Row, TensorModel

EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration", "statistics"]
SERVER_VERSION = "1"

# Each output: its JSON description, and its bytes when it travels binary.
Described = list[tuple[dict[str, Any], bytes | None]]


def server_metadata() -> dict[str, Any]:
    """The server's name and the protocol extensions it implements."""
    return {"name": "wanwu", "version": SERVER_VERSION, "extensions": EXTENSIONS}


def classify(
    core: Core, engine: Engine, header: dict[str, Any], images: list[bytes], started: float
) -> tuple[Classified, Described]:
    """Classify (or explain) `images` with `engine`'s model; the outputs `header` asks for."""
    header, heatmaps = oip_explain.split(header)
    outputs = oip_tensors.outputs(header)
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
    header: dict[str, Any],
    rows: list[Row],
    started: float,
) -> tuple[Classified, Described]:
    """Run a Triton model's checked `rows`; the outputs `header` asks for."""
    outputs = tensor_io.requested(model, header)
    result = core.infer(rows, started, engine)
    return result, tensor_io.written(model, result.probs, outputs)
