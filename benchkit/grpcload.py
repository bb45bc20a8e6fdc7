"""gRPC for tests and benchmarks: a port held for a server, and ModelInfer calls as load."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import requests
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from benchkit.loadgen import MakeRequest
from benchkit.server import GunicornServer

MAX_MESSAGE = 2**31 - 1  # tritonclient's own default: no client-side limit


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


@contextmanager
def grpc_server(log_dir: Path, **settings: object) -> Iterator[GunicornServer]:
    """Real Gunicorn that also serves gRPC, on a held port, once every worker listens there;
    `grpc_port` and `grpc_address` say where."""
    with reserved_port() as port:
        with GunicornServer(log_dir, grpc_bind=f"127.0.0.1:{port}", **settings) as server:
            wait_listening(server.worker_pids(), port)
            server.grpc_port, server.grpc_address = port, f"127.0.0.1:{port}"  # type: ignore[attr-defined]
            yield server


def sockets_by_worker(worker_pids: list[int], port: int, status: str) -> dict[int, int]:
    """How many TCP sockets on local `port` in `status` (psutil.CONN_*) each worker holds."""
    return {
        pid: sum(
            c.status == status and c.laddr.port == port
            for c in psutil.Process(pid).net_connections("tcp")
        )
        for pid in worker_pids
    }


def wait_listening(worker_pids: list[int], port: int, seconds: float = 60) -> None:
    """Wait until every worker listens on `port` (each starts its server once warm)."""
    deadline = time.monotonic() + seconds
    while not all(sockets_by_worker(worker_pids, port, psutil.CONN_LISTEN).values()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"not every worker of {worker_pids} listens on {port}")
        time.sleep(0.05)


def own_connection(address: str) -> triton.InferenceServerClient:
    """A tritonclient.grpc client on a connection of its own.

    gRPC channels of one process to one address share a connection by default (the global
    subchannel pool), which would put every client on one server worker.
    """
    options = [
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.max_send_message_length", MAX_MESSAGE),
        ("grpc.max_receive_message_length", MAX_MESSAGE),
    ]
    return triton.InferenceServerClient(address, channel_args=options)


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


def grpc_infer(
    address: str, images: list[tuple[str, bytes]], model: str, shared: bool = False
) -> MakeRequest:
    """Send image n (round-robin) to ModelInfer with tritonclient.grpc, a client per thread.

    Each client has a connection of its own, or with `shared` all share one (gRPC's default
    within a process), which one server worker then serves alone.
    """
    local = threading.local()

    def make(session: requests.Session, n: int) -> Answer:
        if not hasattr(local, "client"):
            connect = triton.InferenceServerClient if shared else own_connection
            local.client = connect(address)
        try:
            local.client.infer(model, [image_tensor([images[n % len(images)][1]])])
        except InferenceServerException as exc:
            return Answer(str(exc.status()).removeprefix("StatusCode."))
        return Answer(200)

    return make  # type: ignore[return-value]  # an Answer reads like a response to loadgen
