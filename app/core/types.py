"""What an adapter builds once from its wire format, and what the core answers it.

Policy: an adapter reads its protocol (multipart, base64 JSON, OIP's JSON and binary tensors,
gRPC messages) into these types, calls a verb of `app.core.verbs` with them, and renders the
answer in its own shape; no adapter builds another protocol's wire format to reach the core.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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


# -- tensors: OIP v2 (KServe's InferRequest, less its size), over REST and gRPC alike -------------


@dataclass(frozen=True)
class InferInput:
    """One input tensor as the client named it, not yet checked: each field holds what came.

    Its contents are JSON's `data` (nested lists; from gRPC's typed contents protobuf's flat
    repeated field, BYTES elements as bytes) or `raw` bytes in Triton's binary layout
    (little-endian, BYTES elements each a u32 length then its bytes), or neither: over REST,
    `binary_data_size` among its parameters then names its share of the request's `binary`.
    """

    name: Any
    datatype: Any
    shape: Any
    parameters: Any = None
    data: Any = None
    raw: bytes | memoryview | None = None


@dataclass(frozen=True)
class RequestedOutput:
    """An output a request names, and its parameters (`binary_data`, `classification`)."""

    name: Any
    parameters: Any = None


@dataclass(frozen=True)
class InferRequest:
    """An inference request: its inputs (None where the wire held no list; an entry None
    where it held no tensor), the outputs it names (None: it names none), its parameters
    (`explain`, `target`, `binary_data_output`), and over REST the binary data after the JSON
    header (the binary-data extension), which inputs share by their `binary_data_size`."""

    inputs: list[InferInput | None] | None
    outputs: list[RequestedOutput] | None = None
    parameters: Any = None
    binary: memoryview = field(default_factory=lambda: memoryview(b""))


@dataclass(frozen=True)
class InferOutput:
    """One output tensor of an answer: JSON `data` (flat), or `raw` bytes when it travels
    binary."""

    name: str
    datatype: str
    shape: list[int]
    data: list[Any] | None = None
    raw: bytes | None = None
