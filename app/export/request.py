"""What an export asks for, checked once: the source, the preprocessing, the format, the output.

Every conflict between options is decided here, in `ExportRequest.__post_init__`, before
anything is built or loaded; the library and the command line only read a valid request.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.export import pt2

DEFAULT_ARCH = "resnet18"
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "box", "hamming", "lanczos")
PREPROCESSING = ("resize", "crop", "mean", "std", "interpolation")
FORMATS = ("torchscript", "pt2", "onnx")


class ExportError(RuntimeError):
    """An export that cannot be made as asked; the message names the problem and the fix."""


@dataclass(frozen=True)
class ExportRequest:
    """One export. Exactly one source: `arch` (+ `weights`), `torchscript`, `onnx`, `from_mar`
    or `from_hf`; `arch` may also name a TorchScript file's architecture, for the record.

    `arch` is a torchvision name, `timm:NAME` or `module.path:callable`. Preprocessing left
    None comes from the source (torchvision's transforms, timm's pretrained_cfg, Hugging
    Face's preprocessor_config.json, TorchServe's image_classifier); a TorchScript file or a
    factory has none, so it must be given.
    """

    arch: str | None = None
    weights: str | None = None
    torchscript: Path | None = None
    onnx: Path | None = None
    from_mar: Path | None = None
    from_hf: Path | None = None
    labels: Path | None = None
    labels_zh: Path | None = None
    resize: int | None = None
    crop: int | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    interpolation: str | None = None
    require_trained: bool = False
    untrained: bool = False  # --allow-untrained: int8 of random weights, for trying things out
    format: str = "torchscript"
    precision: str = "fp32"
    calibrate: Path | None = None
    min_agreement: float = pt2.MIN_AGREEMENT
    max_batch: int = 8
    device: str = "cpu"
    name: str | None = None
    out: Path | None = None
    force: bool = False

    def __post_init__(self) -> None:
        sources = [
            f"--{k.replace('_', '-')}"
            for k in ("torchscript", "onnx", "from_mar", "from_hf")
            if getattr(self, k) is not None
        ]
        if len(sources) > 1:
            raise ExportError(f"{' and '.join(sources)} exclude each other: give one model")
        if sources and self.weights is not None:
            raise ExportError(f"{sources[0]} excludes --weights: the weights are in the file")
        if self.arch is not None and (self.from_mar or self.from_hf):
            raise ExportError(f"{sources[0]} excludes --arch: the file names its model")
        if self.onnx is not None:  # an ONNX file is served as it is
            if self.format not in ("torchscript", "onnx"):
                raise ExportError("--onnx is served as ONNX: leave out --format")
            object.__setattr__(self, "format", "onnx")
        if self.precision == "int8":
            object.__setattr__(self, "format", "pt2")
            if self.calibrate is None:
                raise ExportError(
                    "--precision int8 needs --calibrate DIR (images like those it will serve)"
                )
        if not 0 <= self.min_agreement <= 1:
            raise ExportError("--min-agreement is a fraction between 0 and 1, e.g. 0.9")
        if self.format not in FORMATS:
            raise ExportError(f"--format must be one of {', '.join(FORMATS)}")
        if self.format in ("torchscript", "onnx") and self.precision != "fp32":
            raise ExportError(
                f"{self.format} is exported in fp32: for another precision use --format pt2"
            )
        if self.format == "pt2" and (self.torchscript or self.from_mar):
            raise ExportError(
                "--format pt2 needs the eager model (--arch, --weights or --from-hf): "
                "torch.export cannot read TorchScript"
            )
        if self.precision not in pt2.PRECISIONS:
            raise ExportError(f"--precision must be one of {', '.join(pt2.PRECISIONS)}")
        if self.interpolation is not None and self.interpolation not in INTERPOLATIONS:
            raise ExportError(f"--interpolation must be one of {', '.join(INTERPOLATIONS)}")
        if self.out is None:
            object.__setattr__(self, "out", Path("models") / f"{self.stem}{self.suffix}")

    @property
    def stem(self) -> str:
        """The default artifact name: the source file's or the architecture's."""
        source = self.from_mar or self.torchscript or self.onnx or self.from_hf
        if source is not None:
            return Path(source).stem or Path(source).resolve().name
        return (self.arch or DEFAULT_ARCH).rsplit(":", 1)[-1]

    @property
    def suffix(self) -> str:
        if self.format == "onnx":
            return ".onnx"
        return f"-{self.precision}.pt2" if self.format == "pt2" else ".pt"

    def given_input(self) -> dict[str, Any]:
        """The preprocessing options given, by name (None where not given)."""
        return {k: getattr(self, k) for k in PREPROCESSING}
