"""What every source gives (`Loaded`), and the files users bring: state_dicts, TorchScript, ONNX.

The sources (`app.export.sources`: torchvision; `app.export.ecosystem`: timm, Hugging Face,
factories; `app.export.mar`: TorchServe archives) each return a `Loaded`: the module, where
its weights came from (`provenance`: source, sha256, kind, trained), and what it knows of its
preprocessing, labels and score function. Weights files are read with `weights_only=True`:
nothing is unpickled that could run code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from app import sniff, trust
from app.artifact import ArtifactError, sha256_file
from app.backends.onnx import OnnxBackend
from app.export.request import ExportError

RANDOM_SEED = 0


@dataclass
class Loaded:
    """A model ready to export, and what its source says about it."""

    module: torch.nn.Module
    provenance: dict[str, Any]  # source, sha256, kind, trained (+ official, archive_version)
    arch: str | None = None
    input: dict[str, Any] | None = None  # the source's preprocessing; None: must be given
    labels: list[str] | None = None  # English labels the source carries, in class order
    name: str | None = None  # the name the source gives the model
    scores: str = "softmax"  # softmax (one class per image) or sigmoid (multi-label)
    file: Path | None = None  # a TorchScript file to copy as it is, instead of tracing


def random_init() -> dict[str, Any]:
    """The provenance of a seeded random init: untrained, said so."""
    return {
        "source": f"random-init(seed={RANDOM_SEED})",
        "sha256": None,
        "kind": "random-init",
        "trained": False,
    }


def weights_file(path: Path) -> dict[str, Any]:
    """The provenance of a user's weights file: a fine-tune, by its hash."""
    return {
        "source": f"file:{path.name}",
        "sha256": sha256_file(path),
        "kind": "fine-tune",
        "trained": True,
    }


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from a file: bare, under 'state_dict' or 'model', DDP prefixes removed."""
    if not path.is_file():
        raise ExportError(f"weights file {path} not found (or pass --weights DEFAULT or none)")
    what = sniff.kind(path)
    if what in ("torchscript", "mar", "pt2"):  # the right command, before torch's advice
        raise ExportError(
            f"--weights takes a state_dict, and {path} is not one: {sniff.hint(path)}"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ExportError(
            f"cannot read {path} as a state_dict ({type(exc).__name__}: {summary(exc)}); "
            "save one with torch.save(model.state_dict(), PATH)"
        ) from None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ExportError(f"{path} holds no state_dict (a mapping of names to tensors)")
    if all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def load_into(build: Any, state: dict[str, torch.Tensor], path: Path, arch: str) -> torch.nn.Module:
    """`build()` a module and load `state` into it strictly, in eval mode."""
    try:
        model = build()
        model.load_state_dict(state)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ExportError(
            f"the weights in {path} do not fit {arch}: {summary(exc)}. Check --arch, and that "
            f"the file is that architecture's state_dict."
        ) from None
    return model.eval()


def summary(exc: BaseException, limit: int = 600) -> str:
    """An exception's message on one line, cut at `limit` characters."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + " …"


def load_torchscript(path: Path) -> Loaded:
    """Load a user's TorchScript classifier (on the CPU), to be copied as it is."""
    if not path.is_file():
        raise ExportError(f"TorchScript file {path} not found")
    if sniff.kind(path) != "torchscript":
        raise ExportError(
            f"--torchscript takes a TorchScript file, and {path} is not one: {sniff.hint(path)}"
        )
    try:
        module = trust.load_torchscript(path)  # screened before anything runs it
    except trust.Untrusted as exc:
        raise ExportError(f"{exc}; nothing was exported") from None
    except Exception as exc:
        raise ExportError(f"cannot load {path} as TorchScript ({summary(exc)})") from None
    provenance = {"source": f"torchscript:{path.name}", "sha256": sha256_file(path)}
    return Loaded(module, {**provenance, "kind": "torchscript", "trained": True}, file=path)


def load_onnx(path: Path) -> Loaded:
    """Open a user's ONNX classifier with ONNX Runtime, to be copied as it is."""
    if not path.is_file():
        raise ExportError(f"ONNX file {path} not found")
    try:
        backend = OnnxBackend.load(path)
    except ArtifactError as exc:
        raise ExportError(str(exc)) from None
    provenance = {"source": f"onnx:{path.name}", "sha256": sha256_file(path)}
    return Loaded(backend, {**provenance, "kind": "onnx", "trained": True}, file=path)  # type: ignore[arg-type]
