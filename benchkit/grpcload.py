"""gRPC for tests and benchmarks: a port held for a server, and ModelInfer calls as load."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import requests
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from benchkit.loadgen import MakeRequest


@contextmanager
def reserved_port() -> Iterator[int]:
    """Hold a loopback port for a gRPC server while it runs.

    The socket is bound with SO_REUSEPORT and never listens: no other program can take the
    port meanwhile (as one could take a probed free port), the server's workers bind it too
    (gRPC sets SO_REUSEPORT), and a socket that does not listen receives no connection.
    """
    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


def image_tensor(images: list[bytes]) -> triton.InferInput:
    """A BYTES `[N]` input `IMAGE` of encoded images, as tritonclient sends it."""
    tensor = triton.InferInput("IMAGE", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_))
    return tensor


@dataclass(frozen=True)
class Answer:
    """The part of a response `benchkit.loadgen` records: 200, or the gRPC status's name."""

    status_code: int | str
    headers: dict[str, str] = field(default_factory=dict)


def grpc_infer(address: str, images: list[tuple[str, bytes]], model: str) -> MakeRequest:
    """Send image n (round-robin) to ModelInfer with tritonclient.grpc, a channel per client."""
    local = threading.local()

    def make(session: requests.Session, n: int) -> Answer:
        if not hasattr(local, "client"):
            local.client = triton.InferenceServerClient(address)
        try:
            local.client.infer(model, [image_tensor([images[n % len(images)][1]])])
        except InferenceServerException as exc:
            return Answer(str(exc.status()).removeprefix("StatusCode."))
        return Answer(200)

    return make  # type: ignore[return-value]  # an Answer reads like a response to loadgen
