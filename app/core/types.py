"""What an adapter builds once from its wire format, and what the core answers it.

Policy: an adapter reads its protocol (multipart, base64 JSON, OIP tensors, gRPC messages)
into these types, calls a verb of `app.core.verbs` with them, and renders the answer in its
own shape; no adapter builds another protocol's wire format to reach the core.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Upload:
    """One image as a protocol received it: encoded bytes, and its name when it has one."""

    data: bytes
    filename: str | None = None


@dataclass(frozen=True)
class Classified:
    """Probability rows in upload order (a tensor model's: each row's outputs), where the
    request's time went, the largest batch."""

    probs: list[torch.Tensor]
    timing_ms: dict[str, float]
    batch_size: int


@dataclass(frozen=True)
class Explained(Classified):
    """Also, per image: every class's activation map, the crop as the model saw it (uint8
    pixels, `imaging.load_pixels`) and where it lies in the upload (`imaging.crop_box`)."""

    cams: list[torch.Tensor]
    pictures: list[torch.Tensor]
    boxes: list[list[float]]
