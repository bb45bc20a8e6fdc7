"""A Triton model folder: `config.pbtxt` read against Triton's ModelConfig, checked, planned.

Policy (docs/MIGRATING.md, "From Triton", lists every field):
- A model folder holding `config.pbtxt` is a Triton model; protobuf's text format parses it
  against the vendored `model_config.proto`, so a misspelt field is refused as Triton refuses it.
- Every field set in the config is in `HONOURED` (wanwu does what Triton does with it) or start-up
  stops naming it and why: a model is served as configured or not at all.
- Platforms: `onnxruntime_onnx` (backend `onnxruntime`) and `pytorch_libtorch` (backend
  `pytorch`); the artifact is `default_model_filename` (else `model.onnx` / `model.pt`) in the
  version folder.
- `version_policy` picks the serving version (latest 1 by default; `specific` of one version);
  one that would serve several versions at once is refused: one version serves, and a gray
  release adds a second through the management API.
- Shapes follow Triton: with `max_batch_size` > 0 a request's tensor is `[-1] + dims` and holds
  at most that many rows; with 0 it is `dims` exactly. `reshape` is the shape the model sees.
- The batcher runs up to `max_batch_size` rows per pass; `dynamic_batching`'s
  `max_queue_delay_microseconds` is how long a partial batch waits for requests still being
  read (without dynamic_batching: no wait, so requests merge only while the model is busy).
  `preferred_batch_size` is accepted: the batcher runs what is queued at once rather than
  waiting to fill a preferred size. A variable dimension (-1) in `dims` runs each row alone,
  since a pass stacks same-shaped rows.
- `instance_group`: one instance per worker (WANWU_WORKERS scales), on the worker's device; a
  count above 1, or a kind the device cannot honour, is refused.
- `label_filename` (one label per line, beside config.pbtxt) names the classes of the
  classification extension.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor

from app.artifact import ArtifactError
from app.grpc_proto import model_config_pb2 as mc

CONFIG = "config.pbtxt"

# platform -> (its backend's name, the default artifact file)
PLATFORMS = {
    "onnxruntime_onnx": ("onnxruntime", "model.onnx"),
    "pytorch_libtorch": ("pytorch", "model.pt"),
}

# Triton's config data types wanwu serves -> (OIP datatype, numpy dtype).
DATATYPES = {
    mc.TYPE_BOOL: ("BOOL", np.dtype(np.bool_)),
    mc.TYPE_UINT8: ("UINT8", np.dtype(np.uint8)),
    mc.TYPE_INT8: ("INT8", np.dtype(np.int8)),
    mc.TYPE_INT32: ("INT32", np.dtype(np.int32)),
    mc.TYPE_INT64: ("INT64", np.dtype(np.int64)),
    mc.TYPE_FP16: ("FP16", np.dtype(np.float16)),
    mc.TYPE_FP32: ("FP32", np.dtype(np.float32)),
    mc.TYPE_FP64: ("FP64", np.dtype(np.float64)),
    mc.TYPE_STRING: ("BYTES", np.dtype(object)),
}

# Every config field wanwu honours, as a dotted path; a set field elsewhere is refused.
HONOURED = {
    "name",
    "version_policy.latest",
    "platform",
    "backend",
    "version_policy.latest.num_versions",
    "version_policy.specific.versions",
    "max_batch_size",
    "default_model_filename",
    *(f"input.{f}" for f in ("name", "data_type", "format", "dims", "reshape.shape")),
    *(f"output.{f}" for f in ("name", "data_type", "dims", "reshape.shape", "label_filename")),
    "dynamic_batching",  # empty: Triton's defaults (no delay)
    "dynamic_batching.preferred_batch_size",
    "dynamic_batching.max_queue_delay_microseconds",
    "dynamic_batching.preserve_ordering",  # answers always keep their request's order
    "instance_group",
    *(f"instance_group.{f}" for f in ("name", "count", "kind", "gpus")),
    # wanwu warms every batch size up itself before a worker is ready
    *(f"model_warmup.{f}" for f in ("name", "batch_size", "count", "inputs")),
}
WHY_NOT = {
    "version_policy.all": "wanwu serves one version of a model (a gray release adds a second "
    "through the management API); use `specific` with one version",
    "sequence_batching": "wanwu serves stateless models only",
    "ensemble_scheduling": "ensembles are not served; serve each model and chain them in the "
    "client",
    "parameters": "backend parameters are not read; threads follow WANWU_THREADS",
    "optimization": "execution accelerators and graph options are not applied; WANWU_DEVICE "
    "picks the device",
    "input.optional": "every input is required",
    "input.is_shape_tensor": "shape tensors are not served",
    "input.allow_ragged_batch": "a batch stacks same-shaped rows",
    "output.is_shape_tensor": "shape tensors are not served",
}


# OIP datatype -> numpy dtype, for the wire.
DTYPES = {datatype: dtype for datatype, dtype in DATATYPES.values()}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: its name, OIP datatype, the client's dims and the model's."""

    name: str
    datatype: str
    dtype: np.dtype
    dims: tuple[int, ...]  # as the client sends it, without the batch dimension
    model_dims: tuple[int, ...]  # as the model sees it (`reshape`), without the batch dimension
    labels: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TritonModel:
    """A Triton model folder, checked: what to load, its tensors, and how to batch it."""

    name: str
    version: str
    config: mc.ModelConfig
    platform: str  # a key of PLATFORMS, whether the config names it or its backend
    artifact: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batch_rows: int  # most rows one pass runs (1: each request alone)
    max_wait_ms: float

    @property
    def config_path(self) -> Path:
        return self.artifact.parent.parent / CONFIG

    @property
    def batched(self) -> bool:
        """Whether tensors carry a batch dimension (`max_batch_size` > 0)."""
        return self.config.max_batch_size > 0


def is_triton(folder: Path) -> bool:
    """Whether the model folder `folder` is laid out for Triton."""
    return (folder / CONFIG).is_file()


def read_config(folder: Path) -> mc.ModelConfig:
    """Parse `folder`/config.pbtxt with protobuf's text format; check every field set."""
    path = folder / CONFIG
    try:
        config = text_format.Parse(path.read_text(), mc.ModelConfig())
    except (OSError, UnicodeDecodeError, text_format.ParseError) as exc:
        raise ArtifactError(f"{path}: {exc}") from None
    for field in _set_fields(config):
        if field not in HONOURED:
            reason = next((why for f, why in WHY_NOT.items() if field.startswith(f)), None)
            raise ArtifactError(
                f"{path}: `{field}` is not supported"
                + (f": {reason}" if reason else "; remove it to serve this model")
            )
    if config.name and config.name != folder.name:
        raise ArtifactError(f"{path}: name {config.name!r} must be the folder's, {folder.name!r}")
    return config


def _set_fields(message: object, prefix: str = "") -> list[str]:
    """The dotted paths of the scalar fields set in `message`, submessages walked into."""
    paths = []
    for field, value in message.ListFields():  # type: ignore[attr-defined]
        path = f"{prefix}{field.name}"
        if field.type != FieldDescriptor.TYPE_MESSAGE or field.message_type.GetOptions().map_entry:
            paths.append(path)
            continue
        for item in value if field.is_repeated else [value]:
            paths.extend(_set_fields(item, f"{path}.") or [path])
    return paths


def serving_version(folder: Path, config: mc.ModelConfig, numbered: dict[str, Path]) -> str:
    """The version `version_policy` serves among the numbered folders (in numeric order)."""
    policy = config.version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "specific":
        wanted = [str(v) for v in policy.specific.versions]
        if len(wanted) != 1:
            raise ArtifactError(
                f"{folder / CONFIG}: version_policy: {WHY_NOT['version_policy.all']}"
            )
        if wanted[0] not in numbered:
            raise ArtifactError(
                f"{folder}/{wanted[0]}: the version version_policy names is missing"
            )
        return wanted[0]
    if choice == "latest" and policy.latest.num_versions > 1:
        raise ArtifactError(f"{folder / CONFIG}: version_policy: {WHY_NOT['version_policy.all']}")
    return list(numbered)[-1]


def model_file(folder: Path, version: str, config: mc.ModelConfig) -> Path:
    """The model file of version `version`: `default_model_filename`, else the platform's."""
    platform = _platform(config, folder / CONFIG)
    path = folder / version / (config.default_model_filename or PLATFORMS[platform][1])
    if not path.is_file():
        raise ArtifactError(f"{path} not found (the model file of a {platform} model)")
    return path


def plan(folder: Path, version: str, config: mc.ModelConfig, device_type: str) -> TritonModel:
    """Check `config` for version `version` of the model in `folder` and say how to serve it."""
    where = folder / CONFIG
    artifact = model_file(folder, version, config)
    if not config.input or not config.output:
        raise ArtifactError(f"{where}: list the model's `input` and `output` tensors")
    if config.max_batch_size < 0:
        raise ArtifactError(f"{where}: max_batch_size must be >= 0")
    for group in config.instance_group:
        _check_instances(group, where, device_type)
    inputs = tuple(_tensor(t, where, folder) for t in config.input)
    outputs = tuple(_tensor(t, where, folder) for t in config.output)
    # Rows of different shapes do not stack: a variable dimension runs each row alone.
    rows = 1 if any(-1 in t.dims for t in inputs) else config.max_batch_size
    delay_ms = config.dynamic_batching.max_queue_delay_microseconds / 1000
    platform = _platform(config, where)
    return TritonModel(
        folder.name, version, config, platform, artifact, inputs, outputs, max(rows, 1), delay_ms
    )


def _platform(config: mc.ModelConfig, where: Path) -> str:
    for platform, (backend, _) in PLATFORMS.items():
        if config.platform in ("", platform) and config.backend in ("", backend):
            if config.platform or config.backend:
                return platform
    raise ArtifactError(
        f"{where}: platform {config.platform!r} / backend {config.backend!r} is not served; "
        f"wanwu serves {', '.join(PLATFORMS)}"
    )


def _check_instances(group: mc.ModelInstanceGroup, where: Path, device_type: str) -> None:
    if group.count > 1:
        raise ArtifactError(
            f"{where}: instance_group count {group.count}: wanwu runs one instance per worker; "
            "set WANWU_WORKERS for more"
        )
    wants_gpu = group.kind == mc.ModelInstanceGroup.KIND_GPU or group.gpus
    if wants_gpu and device_type != "cuda":
        raise ArtifactError(f"{where}: instance_group kind KIND_GPU, but WANWU_DEVICE is the CPU")
    if group.kind == mc.ModelInstanceGroup.KIND_MODEL:
        raise ArtifactError(f"{where}: instance_group kind KIND_MODEL is not served")


def _tensor(tensor: mc.ModelInput | mc.ModelOutput, where: Path, folder: Path) -> TensorSpec:
    kind = "input" if isinstance(tensor, mc.ModelInput) else "output"
    if tensor.data_type not in DATATYPES:
        raise ArtifactError(
            f"{where}: {kind} {tensor.name!r} data_type "
            f"{mc.DataType.Name(tensor.data_type)} is not served; wanwu serves "
            f"{', '.join(mc.DataType.Name(t) for t in DATATYPES)}"
        )
    datatype, dtype = DATATYPES[tensor.data_type]
    dims = tuple(tensor.dims)
    model_dims = tuple(tensor.reshape.shape) if tensor.HasField("reshape") else dims
    if -1 not in dims and np.prod(dims) != np.prod(model_dims):
        raise ArtifactError(
            f"{where}: {kind} {tensor.name!r}: reshape {model_dims} must hold {dims}"
        )
    labels = None
    if isinstance(tensor, mc.ModelOutput) and tensor.label_filename:
        path = folder / tensor.label_filename
        try:
            labels = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
        except (OSError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"{where}: label_filename: {exc}") from None
    return TensorSpec(tensor.name, datatype, dtype, dims, model_dims, labels)
