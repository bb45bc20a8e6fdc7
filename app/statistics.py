"""Triton's model configuration and statistics extensions, for every served model.

Policy:
- A Triton model's configuration is its config.pbtxt as parsed; a wanwu export's is what wanwu
  does with it, in the same terms: input `IMAGE` (BYTES), output `PROBS` (FP32, one per
  class), `max_batch_size` WANWU_MAX_BATCH, `dynamic_batching` with WANWU_MAX_WAIT_MS, one
  instance per worker on its device.
- Statistics are summed over every worker (the metrics' shared files, as /metrics): requests
  answered and their time (`success`), rows run (`inference_count`) and forward passes
  (`execution_count`, below `inference_count` when requests shared passes), the time rows
  waited (`queue`) and passes took (`compute_infer`), the last pass (ms since the epoch).
"""

from __future__ import annotations

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor

from app import metrics
from app.engine import Engine
from app.grpc_proto import grpc_service_pb2 as gs
from app.grpc_proto import model_config_pb2 as mc
from app.tensor_model import TensorModel


def config(engine: Engine) -> mc.ModelConfig:
    """The model configuration of the version `engine` serves."""
    model = engine.classifier
    if isinstance(model, TensorModel):
        found = mc.ModelConfig()
        found.CopyFrom(model.spec.config)
        found.name, found.platform = model.name, model.platform
        return found
    kind = (
        mc.ModelInstanceGroup.KIND_GPU
        if model.device.type == "cuda"
        else mc.ModelInstanceGroup.KIND_CPU
    )
    return mc.ModelConfig(
        name=model.name,
        platform=model.platform,
        max_batch_size=engine.batcher.max_batch,
        input=[mc.ModelInput(name="IMAGE", data_type=mc.TYPE_STRING, dims=[1])],
        output=[mc.ModelOutput(name="PROBS", data_type=mc.TYPE_FP32, dims=[model.num_classes])],
        dynamic_batching=mc.ModelDynamicBatching(
            max_queue_delay_microseconds=round(engine.batcher.max_wait_s * 1_000_000)
        ),
        instance_group=[mc.ModelInstanceGroup(count=1, kind=kind)],
    )


def statistics(engines: list[Engine]) -> gs.ModelStatisticsResponse:
    """The statistics of each engine's model version, summed over every worker."""
    samples = metrics.per_model()
    answer = gs.ModelStatisticsResponse()
    for engine in engines:
        name, version = engine.classifier.name, engine.classifier.version

        def value(sample: str, name: str = name, version: str = version) -> float:
            return samples.get((f"wanwu_model_{sample}", name, version), 0.0)

        inferences, executions = int(value("inferences_total")), int(value("executions_total"))
        requests = int(value("requests_total"))
        answer.model_stats.add(
            name=name,
            version=version,
            last_inference=round(value("last_inference_timestamp_seconds") * 1000),
            inference_count=inferences,
            execution_count=executions,
            inference_stats=gs.InferStatistics(
                success=_duration(requests, value("request_seconds_total")),
                queue=_duration(inferences, value("queue_seconds_total")),
                compute_infer=_duration(executions, value("compute_seconds_total")),
            ),
        )
    return answer


def _duration(count: int, seconds: float) -> gs.StatisticDuration:
    return gs.StatisticDuration(count=count, ns=round(seconds * 1e9))


def as_json(message: object) -> dict[str, object]:
    """A config (or statistics) message as Triton's HTTP API renders it: proto field names,
    every field, and 64-bit integers as JSON numbers (protobuf's JSON writes them as strings)."""
    data = json_format.MessageToDict(
        message,  # type: ignore[arg-type]
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    return _numbers(message, data)


_INT64 = {FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64}


def _numbers(message: object, data: dict[str, object]) -> dict[str, object]:
    for field in message.DESCRIPTOR.fields:  # type: ignore[attr-defined]
        if field.name not in data:
            continue
        value = getattr(message, field.name)
        repeated = field.is_repeated
        if field.cpp_type in _INT64:
            data[field.name] = list(value) if repeated else value
        elif (
            field.type == FieldDescriptor.TYPE_MESSAGE
            and not field.message_type.GetOptions().map_entry
        ):
            if repeated:
                data[field.name] = [
                    _numbers(m, d) for m, d in zip(value, data[field.name], strict=True)
                ]
            else:
                data[field.name] = _numbers(value, data[field.name])
    return data
