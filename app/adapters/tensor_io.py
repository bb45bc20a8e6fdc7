"""OIP v2 tensors of a Triton model: read from the core's types, checked against its
config, and written back.

Policy: a request names each input of the config once, with its datatype and a shape of
`[-1] + dims` (at most `max_batch_size` rows) or, with `max_batch_size` 0, `dims`; the data is
JSON (`data`, nested or flat, BYTES as strings) or binary (the binary-data extension over HTTP,
`raw_input_contents` over gRPC: little-endian, BYTES as u32-length-prefixed elements), or
gRPC's typed contents. A
mismatch is a 400 in Triton's words, naming what the model expects. Outputs are every output
of the config unless the request names some; each is JSON or binary as asked, or with the
classification extension the top k of each row as `"score:index:label"` (`"score:index"`
without a label_filename), the raw values, six decimals, as Triton writes them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app import errors
from app.adapters import oip_tensors
from app.adapters.oip_tensors import deserialize_bytes, serialize_bytes
from app.core.types import InferInput, InferOutput, InferRequest
from app.model import Classifier
from app.repository.triton import TensorSpec
from app.tensor_model import Row, TensorModel


@dataclass(frozen=True)
class Requested:
    """One output to answer: its config, whether binary, the classification's k (or None)."""

    spec: TensorSpec
    binary: bool
    classification: int | None


def metadata(model: TensorModel | Classifier) -> dict[str, Any]:
    """OIP model metadata: a Triton model's tensors as its config names them (the batch
    dimension first, -1, when `max_batch_size` > 0), or a wanwu export's IMAGE and PROBS."""
    if not isinstance(model, TensorModel):
        return oip_tensors.metadata(model)
    lead = [-1] if model.spec.batched else []

    def described(specs: tuple[TensorSpec, ...]) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": [*lead, *t.dims]} for t in specs]

    return {
        "name": model.name,
        "versions": [model.version],
        "platform": model.platform,
        "inputs": described(model.spec.inputs),
        "outputs": described(model.spec.outputs),
    }


def _shape(dims: list[int] | tuple[int, ...]) -> str:
    return f"[{','.join(str(d) for d in dims)}]"


def rows(model: TensorModel, request: InferRequest) -> list[Row]:
    """Each request row's arrays, in the config's input order; the request's binary data
    (REST's, after the JSON header) is read in the order the inputs carry `binary_data_size`."""
    spec, name, inputs, binary = model.spec, model.name, request.inputs, request.binary
    if inputs is None:
        raise errors.BadRequest("'inputs' must be a list of input tensors.")
    by_name: dict[str, InferInput] = {}
    for tensor in inputs:
        if tensor is None or not isinstance(tensor.name, str):
            raise errors.BadRequest("Each input must be an object with a 'name'.")
        if tensor.name not in {t.name for t in spec.inputs}:
            raise errors.BadRequest(
                f"unexpected inference input '{tensor.name}' for model '{name}'"
            )
        by_name[tensor.name] = tensor
    missing = [t.name for t in spec.inputs if t.name not in by_name]
    if missing or len(inputs) != len(spec.inputs):
        raise errors.BadRequest(
            f"expected {len(spec.inputs)} inputs but got {len(inputs)} inputs for model "
            f"'{name}'. Got input(s) {list(by_name)}, but missing required input(s) {missing}. "
            "Please provide all required input(s)."
        )
    offset, arrays = 0, {}
    for tensor in by_name.values():  # binary data comes in the request's input order
        config = next(t for t in spec.inputs if t.name == tensor.name)
        array, offset = _array(model, config, tensor, binary, offset)
        arrays[config.name] = array
    if offset != len(binary):
        raise errors.BadRequest(f"{len(binary) - offset} bytes of binary data follow no input.")
    columns = [arrays[t.name] for t in spec.inputs]
    if not spec.batched:
        return [tuple(a[None] for a in columns)]
    counts = {len(a) for a in columns}
    if len(counts) != 1:
        raise errors.BadRequest(f"the inputs of model '{name}' must have the same batch size")
    return list(zip(*columns, strict=True))


def _array(
    model: TensorModel, config: TensorSpec, tensor: InferInput, binary: memoryview, offset: int
) -> tuple[np.ndarray, int]:
    """One input's array, and where the next input's binary data starts."""
    name, spec = model.name, model.spec
    if tensor.datatype != config.datatype:
        raise errors.BadRequest(
            f"inference input '{config.name}' data-type is '{tensor.datatype}', but "
            f"model '{name}' expects '{config.datatype}'"
        )
    shape = tensor.shape
    expected = [-1, *config.dims] if spec.batched else list(config.dims)
    fits = (
        isinstance(shape, list)
        and all(type(d) is int and d >= 0 for d in shape)
        and len(shape) == len(expected)
        and all(e in (-1, d) for e, d in zip(expected, shape, strict=True))
    )
    if not fits:
        note = (
            " NOTE: Setting a non-zero max_batch_size in the model config requires a batch "
            "dimension to be prepended to each input shape. If you want to specify the full "
            "shape including the batch dim in your input dims config, try setting "
            "max_batch_size to zero. See the model configuration docs for more info on "
            "max_batch_size."
            if spec.batched
            else ""
        )
        got = _shape(shape) if isinstance(shape, list) else repr(shape)
        raise errors.BadRequest(
            f"unexpected shape for input '{config.name}' for model '{name}'. Expected "
            f"{_shape(expected)}, got {got}." + note
        )
    if spec.batched and shape[0] > spec.config.max_batch_size:
        raise errors.BadRequest(
            f"inference request batch-size must be <= {spec.config.max_batch_size} for '{name}'"
        )
    count = math.prod(shape)  # Python's integers: a client's dims cannot overflow it
    parameters = oip_tensors.bounded_parameters(tensor.parameters, "Input")
    if tensor.raw is not None:  # gRPC's raw_input_contents
        return _from_bytes(config, shape, count, memoryview(tensor.raw)), offset
    if "binary_data_size" in parameters:
        size = parameters["binary_data_size"]
        if type(size) is not int or size < 0 or offset + size > len(binary):
            raise errors.BadRequest(
                f"binary_data_size of input '{config.name}' is {size!r}; "
                f"{len(binary) - offset} bytes are left"
            )
        return _from_bytes(config, shape, count, binary[offset : offset + size]), offset + size
    return _from_json(config, shape, count, tensor.data), offset


def _from_bytes(config: TensorSpec, shape: list[int], count: int, data: memoryview) -> np.ndarray:
    if config.datatype == "BYTES":
        items = deserialize_bytes(data, count)
        if len(items) != count:
            raise errors.BadRequest(
                f"unexpected number of string elements {len(items)} for inference input "
                f"'{config.name}', expecting {count}"
            )
        return np.array(items, dtype=object).reshape(shape)
    expected = count * config.dtype.itemsize
    if len(data) != expected:
        raise errors.BadRequest(
            f"unexpected total byte size {len(data)} for input '{config.name}', expecting "
            f"{expected}"
        )
    return np.frombuffer(data, dtype=config.dtype.newbyteorder("<")).reshape(shape)


def _from_json(config: TensorSpec, shape: list[int], count: int, data: Any) -> np.ndarray:
    flat = _flatten(data, config.name)
    if len(flat) != count:
        raise errors.BadRequest(
            f"unexpected number of elements {len(flat)} for inference input '{config.name}', "
            f"expecting {count}"
        )
    if config.datatype == "BYTES":  # JSON's strings, or gRPC's bytes_contents
        if not all(isinstance(v, str | bytes) for v in flat):
            raise errors.BadRequest(f"input '{config.name}' is BYTES: send strings")
        elements = [v.encode() if isinstance(v, str) else v for v in flat]
        return np.array(elements, dtype=object).reshape(shape)
    if not all(type(v) in (int, float, bool) for v in flat):
        raise errors.BadRequest(f"input '{config.name}' is {config.datatype}: send numbers")
    try:
        return np.array(flat, dtype=config.dtype).reshape(shape)
    except (OverflowError, ValueError) as exc:
        raise errors.BadRequest(f"input '{config.name}': {exc}") from None


def _flatten(data: Any, name: str) -> Sequence[Any]:
    if oip_tensors.is_typed_contents(data):  # flat already, and read only once counted
        return data
    if not isinstance(data, list):
        raise errors.BadRequest(f"input '{name}' needs 'data' (a list) or binary data")
    if not any(isinstance(item, list) for item in data):
        return data
    flat: list[Any] = []
    for item in data:
        flat.extend(_flatten(item, name) if isinstance(item, list) else [item])
    return flat


def requested(model: TensorModel, request: InferRequest) -> list[Requested]:
    """The outputs to answer: those the request names, else every output of the config."""
    binary = oip_tensors.binary_output(request)
    named = oip_tensors.named_outputs(request)
    if named is None:
        return [Requested(spec, binary, None) for spec in model.spec.outputs]
    by_name = {spec.name: spec for spec in model.spec.outputs}
    answer = []
    for output in named:
        spec = by_name.get(output.name)
        if spec is None:
            raise errors.BadRequest(
                f"unexpected inference output '{output.name}' for model '{model.name}'"
            )
        how = oip_tensors.choice(output, binary)
        answer.append(Requested(spec, how.binary, how.classification))
    return answer


def written(model: TensorModel, results: list[Row], outputs: list[Requested]) -> list[InferOutput]:
    """Each requested output, JSON or binary as asked."""
    position = {spec.name: i for i, spec in enumerate(model.spec.outputs)}
    answer = []
    for output in outputs:
        spec = output.spec
        array = np.stack([row[position[spec.name]] for row in results])
        if not model.spec.batched:
            array = array[0]
        datatype = spec.datatype
        if output.classification is not None:
            array, datatype = _classified(array, output.classification, spec), "BYTES"
        shape = list(array.shape)
        if output.binary:
            if datatype == "BYTES":
                blob = serialize_bytes([_bytes(v) for v in array.flatten()])
            else:
                blob = np.ascontiguousarray(array, dtype=spec.dtype.newbyteorder("<")).tobytes()
            answer.append(InferOutput(spec.name, datatype, shape, raw=blob))
        else:
            data = array.flatten().tolist()
            if datatype == "BYTES":
                data = [
                    v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in data
                ]
            answer.append(InferOutput(spec.name, datatype, shape, data=data))
    return answer


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogateescape")


def _classified(array: np.ndarray, k: int, spec: TensorSpec) -> np.ndarray:
    """The top k of each row (the last dimension) as Triton's "score:index[:label]" strings."""
    rows = array.reshape(-1, array.shape[-1]) if array.ndim else array.reshape(1, 1)
    k = min(k, rows.shape[1])
    strings = []
    for row in rows.astype(np.float64):
        for index in np.argsort(-row, kind="stable")[:k]:
            label = f":{spec.labels[index]}" if spec.labels and index < len(spec.labels) else ""
            strings.append(f"{row[index]:.6f}:{index}{label}")
    return np.array(strings, dtype=object).reshape(*array.shape[:-1], k)
