"""Open Inference Protocol v2 over gRPC: KServe's and Triton's `inference.GRPCInferenceService`.

Policy:
- Served on WANWU_GRPC_BIND by every Gunicorn worker, after its model is warm: each worker
  binds the same port with SO_REUSEPORT and the kernel spreads connections (a gRPC channel is
  long-lived, so per connection). Workers answer the RPCs of the v2 core (ServerLive,
  ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer), Triton's ModelConfig
  and ModelStatistics (app/statistics.py); Triton's others answer UNIMPLEMENTED.
- ModelInfer reads its message once into the core's `InferRequest` (app/adapters/grpc_wire.py):
  the model's one input, `IMAGE` (BYTES `[N]` or `[N, 1]` of encoded images, from
  `raw_input_contents` as tritonclient sends it, or `contents.bytes_contents`), is checked and
  `PROBS` shaped exactly as OIP over HTTP does (`app.adapters.oip_infer`), with the
  classification extension (`class_count`), answered in `raw_output_contents`; the parameter
  `explain: true` adds HEATMAP as over HTTP (app/adapters/oip_explain.py). A Triton model's
  tensors come from `raw_input_contents` or the typed `contents` and are read exactly as over
  HTTP (app/adapters/tensor_io.py).
- Every image goes through the request core (`app.core.verbs`, called directly: no web
  framework here): the same keys and tokens (metadata `authorization: Bearer <key>`),
  per-caller rate limit (a caller without a key is its address), limits, admission, batcher
  and deadline as /predict. A message over WANWU_MAX_UPLOAD_MB is refused by gRPC itself
  (RESOURCE_EXHAUSTED).
- Errors map to status codes: 400/415/422 INVALID_ARGUMENT, 401 UNAUTHENTICATED, 404
  NOT_FOUND, 413, 429 and a full queue RESOURCE_EXHAUSTED, not ready UNAVAILABLE, 501 (a
  model that cannot explain) UNIMPLEMENTED, 504 DEADLINE_EXCEEDED, else INTERNAL. Those
  worth retrying carry google.rpc.RetryInfo and gRPC's own retry pushback
  (`grpc-retry-pushback-ms`).
- Metrics and the access log count each RPC under its method path
  (`/inference.GRPCInferenceService/ModelInfer`) with the status code's name.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import wraps
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from app import errors, metrics, statistics
from app.adapters import common, grpc_wire, oip_infer, oip_tensors, tensor_io
from app.core import ready
from app.core.types import Classified
from app.core.verbs import Core
from app.grpc_proto import grpc_service_pb2 as pb
from app.grpc_proto import grpc_service_pb2_grpc as pb_grpc
from app.tensor_model import TensorModel

SERVICE = "/inference.GRPCInferenceService/"

_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    501: grpc.StatusCode.UNIMPLEMENTED,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


# -- errors, metrics and the access log ----------------------------------------------------------


class _Status(NamedTuple):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


class _Aborted(_Status, grpc.Status):
    """A status for `ServicerContext.abort_with_status`: code, message, trailing metadata."""


def _status(exc: Exception) -> _Aborted:
    """The gRPC status of an error; RetryInfo and pushback where a retry can succeed."""
    exc = common.as_api_error(exc)  # an unexpected one is logged there, and is INTERNAL
    code = _CODES.get(exc.status, grpc.StatusCode.INTERNAL)
    if isinstance(exc, errors.Overloaded):
        code = grpc.StatusCode.RESOURCE_EXHAUSTED
    # Response headers (RateLimit-* on a 429) travel as trailing metadata, lower-cased.
    extra = tuple((name.lower(), str(value)) for name, value in exc.headers.items())
    if exc.retry_after is None:
        return _Aborted(code, exc.message, extra)
    detail = status_pb2.Status(code=code.value[0], message=exc.message)
    detail.details.add().Pack(
        error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=exc.retry_after))
    )
    pushback = ("grpc-retry-pushback-ms", str(exc.retry_after * 1000))
    rich = rpc_status.to_status(detail).trailing_metadata
    return _Aborted(code, exc.message, (*rich, pushback, *extra))


@dataclass
class _Call:
    """What one RPC brings (its metadata and peer) and what it classified, for the log."""

    metadata: dict[str, str]
    peer: str
    started: float
    classified: Classified | None = None


def _rpc(method: Callable[[Servicer, Any, _Call], Any]) -> Callable[..., Any]:
    """Serve one RPC; count and log it; answer errors with a status."""
    route = SERVICE + method.__name__

    @wraps(method)
    def handle(self: Servicer, request: Any, context: grpc.ServicerContext) -> Any:
        call = _Call(dict(context.invocation_metadata()), context.peer(), time.monotonic())
        code = grpc.StatusCode.OK
        metrics.IN_FLIGHT.inc()
        try:
            return method(self, request, call)
        except Exception as exc:
            status = _status(exc)
            code = status.code
            context.abort_with_status(status)
        finally:
            metrics.IN_FLIGHT.dec()
            _record(route, code, call, request.ByteSize())

    return handle


def _record(route: str, code: grpc.StatusCode, call: _Call, size: int) -> None:
    request_id = call.metadata.get("x-request-id") or uuid.uuid4().hex
    elapsed = time.monotonic() - call.started
    common.record(route, code.name, request_id, call.peer, "gRPC", size, call.classified, elapsed)


# -- the RPCs ------------------------------------------------------------------------------------


def _address(peer: str) -> str:
    """The client's address in gRPC's peer name ("ipv4:10.0.0.7:51234", "ipv6:[::1]:51234")."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return urlsplit(f"//{rest}").hostname or rest
    return peer


class Servicer(pb_grpc.GRPCInferenceServiceServicer):
    """The v2 core RPCs over the request core."""

    def __init__(self, core: Core) -> None:
        self.core = core

    @_rpc
    def ServerLive(self, request: Any, call: _Call) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @_rpc
    def ServerReady(self, request: Any, call: _Call) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=ready.worker(self.core.registry))

    @_rpc
    def ModelReady(self, request: Any, call: _Call) -> pb.ModelReadyResponse:
        try:  # as over HTTP, where tritonclient reads a 404 as "not ready"
            engine = self.core.model(request.name, request.version or None)
        except errors.ModelNotFound:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=ready.model(engine))

    @_rpc
    def ServerMetadata(self, request: Any, call: _Call) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**oip_infer.server_metadata())

    @_rpc
    def ModelMetadata(self, request: Any, call: _Call) -> pb.ModelMetadataResponse:
        engine = self.core.model(request.name, request.version or None)
        meta = tensor_io.metadata(engine.classifier)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            **{k: meta[k] for k in ("name", "versions", "platform")},
            inputs=[tensor(**t) for t in meta["inputs"]],
            outputs=[tensor(**t) for t in meta["outputs"]],
        )

    @_rpc
    def ModelInfer(self, request: Any, call: _Call) -> pb.ModelInferResponse:
        core = self.core
        core.authorize(call.metadata.get("authorization"), _address(call.peer))
        with core.lease(request.model_name, request.model_version or None) as engine:
            model = engine.classifier
            if isinstance(model, TensorModel):
                typed = grpc_wire.infer_request(request)
                call.classified, outputs = oip_infer.infer(core, model, engine, typed, call.started)
            else:
                most = core.settings.max_files
                grpc_wire.bound_images(request, most)
                typed = grpc_wire.infer_request(request)
                images = oip_tensors.images(typed, most)
                call.classified, outputs = oip_infer.classify(
                    core, engine, typed, images, call.started
                )
        return grpc_wire.answer(request, model, outputs)

    @_rpc
    def ModelConfig(self, request: Any, call: _Call) -> pb.ModelConfigResponse:
        engine = self.core.model(request.name, request.version or None)
        return pb.ModelConfigResponse(config=statistics.config(engine))

    @_rpc
    def ModelStatistics(self, request: Any, call: _Call) -> pb.ModelStatisticsResponse:
        engines = oip_infer.counted(self.core, request.name or None, request.version or None)
        return statistics.statistics(engines)


def serve(core: Core) -> grpc.Server:
    """Start this worker's gRPC server on WANWU_GRPC_BIND (call after fork, once warm).

    Its threads match Gunicorn's request threads; gRPC refuses RPCs beyond twice that
    (RESOURCE_EXHAUSTED) rather than queueing them without bound.
    """
    settings = core.settings
    threads = settings.request_threads
    server = grpc.server(
        ThreadPoolExecutor(threads, thread_name_prefix="wanwu-grpc"),
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", settings.max_upload_bytes),
        ],
        maximum_concurrent_rpcs=2 * threads,
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(core), server)
    server.add_insecure_port(settings.grpc_bind)
    server.start()
    logging.getLogger("wanwu").info("OIP v2 over gRPC on %s", settings.grpc_bind)
    return server
