"""Triton model repositories built from a small seeded model, as a Triton team lays them out.

`seed_team(root)` writes what the seed team serves (`wuwang/1/model.onnx` from
`torch.onnx.export`, input `input`, output `output`, a dynamic batch axis, and their
config.pbtxt word for word); `libtorch(root)` a `pytorch_libtorch` model with
`INPUT__0`/`OUTPUT__0` and a `label_filename`. Both hold the same seeded network (`Seeded`),
which the tests also run directly to compare answers.
"""

from __future__ import annotations

from pathlib import Path

import torch

SEED = 0
CLASSES = 1000

SEED_TEAM_CONFIG = """\
name: "wuwang"
platform: "onnxruntime_onnx"
max_batch_size: 32
dynamic_batching {
  preferred_batch_size: [ 4, 8, 16 ]
  max_queue_delay_microseconds: 100000
}
input [
  {
    name: "input"
    data_type: TYPE_FP32
    dims: [ 3, 224, 224 ]
  }
]
output [
  {
    name: "output"
    data_type: TYPE_FP32
    dims: [ 1000 ]
  }
]
"""

LIBTORCH_CONFIG = """\
name: "{name}"
platform: "pytorch_libtorch"
max_batch_size: 8
dynamic_batching {{ max_queue_delay_microseconds: 20000 }}
input [ {{ name: "INPUT__0", data_type: TYPE_FP32, dims: [3, 224, 224] }} ]
output [ {{ name: "OUTPUT__0", data_type: TYPE_FP32, dims: [{classes}],
            label_filename: "labels.txt" }} ]
instance_group [ {{ count: 1, kind: KIND_CPU }} ]
"""


class Seeded(torch.nn.Module):
    """A small convolutional classifier with seeded weights: NCHW images in, logits out."""

    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        torch.manual_seed(SEED)
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 7, stride=4),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
        )
        self.head = torch.nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Slow(Seeded):
    """`Seeded` with two full-resolution convolutions in front: about half a billion
    multiply-adds a row, so that requests sent together queue behind a pass on any machine,
    however fast it parses them."""

    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__(classes)
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 32, 3, padding=1),
            torch.nn.Conv2d(32, 32, 3, padding=1),
            torch.nn.Conv2d(32, 8, 7, stride=4),
            *self.features[1:],
        )


def export_onnx(model: torch.nn.Module, out: Path, size: int = 224) -> Path:
    """`torch.onnx.export` as the seed team runs it: opset 13, `input`/`output`, a dynamic
    batch axis.

    The TorchScript-based exporter (`dynamo=False`) needs neither onnxscript nor a network.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model.eval(),
        (torch.zeros(1, 3, size, size),),
        str(out),
        opset_version=13,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch_size"}, "output": {0: "batch_size"}},
        dynamo=False,
    )
    return out


def seed_team(root: Path, name: str = "wuwang", model: torch.nn.Module | None = None) -> Path:
    """The seed team's repository model: `root/wuwang/{config.pbtxt, 1/model.onnx}`
    (`model` in place of their network where a test needs another)."""
    folder = root / name
    export_onnx(model or Seeded(), folder / "1" / "model.onnx")
    (folder / "config.pbtxt").write_text(SEED_TEAM_CONFIG.replace('"wuwang"', f'"{name}"'))
    return folder


def labels(classes: int = CLASSES) -> list[str]:
    return [f"class-{i}" for i in range(classes)]


def libtorch(root: Path, name: str = "seeded_pt", classes: int = CLASSES) -> Path:
    """A `pytorch_libtorch` model with INPUT__0/OUTPUT__0 and a label_filename."""
    folder = root / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    traced = torch.jit.trace(Seeded(classes).eval(), torch.zeros(1, 3, 224, 224))
    traced.save(str(folder / "1" / "model.pt"))
    (folder / "labels.txt").write_text("\n".join(labels(classes)) + "\n")
    (folder / "config.pbtxt").write_text(LIBTORCH_CONFIG.format(name=name, classes=classes))
    return folder


class Scaled(torch.nn.Module):
    """y = x * scale: inputs bound by forward's argument names, not their order."""

    def forward(self, scale: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x * scale


SCALED_CONFIG = """\
platform: "pytorch_libtorch"
max_batch_size: 4
input [ { name: "x", data_type: TYPE_FP32, dims: [2] },
        { name: "scale", data_type: TYPE_FP32, dims: [1] } ]
output [ { name: "y", data_type: TYPE_FP32, dims: [2] } ]
"""


def scaled(root: Path, name: str = "two") -> Path:
    """A `pytorch_libtorch` model of two FP32 inputs, `Scaled`, scripted."""
    folder = root / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    torch.jit.script(Scaled()).save(str(folder / "1" / "model.pt"))
    (folder / "config.pbtxt").write_text(SCALED_CONFIG)
    return folder


DTYPES_CONFIG = """\
name: "{name}"
backend: "onnxruntime"
max_batch_size: 4
input [
  { name: "u8", data_type: TYPE_UINT8, dims: [4] },
  { name: "i64", data_type: TYPE_INT64, dims: [4] },
  { name: "h", data_type: TYPE_FP16, dims: [2, 2], reshape: { shape: [4] } },
  { name: "s", data_type: TYPE_STRING, dims: [2] }
]
output [
  { name: "total", data_type: TYPE_FP32, dims: [4] },
  { name: "h_out", data_type: TYPE_FP16, dims: [4] },
  { name: "s_out", data_type: TYPE_STRING, dims: [2] }
]
"""


def datatypes(root: Path, name: str = "dtypes") -> Path:
    """An ONNX model over UINT8, INT64, FP16 and BYTES: `total` = u8 + i64 + h as FP32,
    `h_out` = h (reshaped to [4] by the config), `s_out` = s. Built with onnx.helper."""
    from onnx import TensorProto, helper, save

    def io(tensor: str, kind: int, dims: list[object]) -> object:
        return helper.make_tensor_value_info(tensor, kind, ["batch", *dims])

    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["u8"], ["u8f"], to=TensorProto.FLOAT),
            helper.make_node("Cast", ["i64"], ["i64f"], to=TensorProto.FLOAT),
            helper.make_node("Cast", ["h"], ["hf"], to=TensorProto.FLOAT),
            helper.make_node("Sum", ["u8f", "i64f", "hf"], ["total"]),
            helper.make_node("Identity", ["h"], ["h_out"]),
            helper.make_node("Identity", ["s"], ["s_out"]),
        ],
        name,
        [
            io("u8", TensorProto.UINT8, [4]),
            io("i64", TensorProto.INT64, [4]),
            io("h", TensorProto.FLOAT16, [4]),
            io("s", TensorProto.STRING, [2]),
        ],
        [
            io("total", TensorProto.FLOAT, [4]),
            io("h_out", TensorProto.FLOAT16, [4]),
            io("s_out", TensorProto.STRING, [2]),
        ],
    )
    folder = root / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every onnxruntime since 1.10 reads
    save(model, str(folder / "1" / "model.onnx"))
    (folder / "config.pbtxt").write_text(DTYPES_CONFIG.replace("{name}", name))
    return folder
