"""Where an exported model comes from: `load(request, workdir)` picks the source.

The sources: torchvision (here), timm, Hugging Face and importable factories
(`app.export.ecosystem`), a weights, TorchScript or ONNX file (`app.export.files`) or a
TorchServe archive (`app.export.mar`). Each returns a `Loaded` (app/export/files.py): the
module, where its weights came from, and what it knows of its preprocessing and labels.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch
from torchvision import models

from app.artifact import sha256_file
from app.export import ecosystem, mar
from app.export.files import (
    RANDOM_SEED,
    Loaded,
    load_into,
    load_onnx,
    load_torchscript,
    random_init,
    read_state_dict,
    weights_file,
)
from app.export.request import DEFAULT_ARCH, ExportError, ExportRequest

log = logging.getLogger("wanwu.export")

_HASH_IN_URL = re.compile(r"-([0-9a-f]{6,})\.[a-z]+$")


def load(request: ExportRequest, workdir: Path) -> Loaded:
    """Build or load the model `request` names; temporary files go to `workdir`."""
    if request.from_mar is not None:
        return mar.load(request.from_mar, workdir)
    if request.from_hf is not None:
        return ecosystem.huggingface(request.from_hf)
    if request.onnx is not None:
        return load_onnx(request.onnx)
    if request.torchscript is not None:
        loaded = load_torchscript(request.torchscript)
        loaded.arch = request.arch and check_arch(request.arch)
        return loaded
    arch = request.arch or DEFAULT_ARCH
    weights = request.weights or "DEFAULT"
    if arch.startswith("timm:"):
        return ecosystem.timm_model(arch.removeprefix("timm:"), weights)
    if ":" in arch:
        return ecosystem.factory(arch, request.weights)
    module, provenance = build_model(arch, weights)
    spec = default_input(arch, provenance.get("official"))
    if provenance["kind"] == "fine-tune" and request.resize is None and spec["resize"] != 256:
        # A team arriving from TorchServe trained and served with its image_classifier's 256.
        log.warning(
            "recording torchvision's %s transforms: resize %d, crop %d. A model served by "
            "TorchServe's image_classifier used resize 256: pass --resize 256 to keep that "
            "(or import its .mar with --from-mar)",
            arch,
            spec["resize"],
            spec["crop"],
        )
    return Loaded(module, provenance, arch, spec)


# -- torchvision ----------------------------------------------------------------------------------


def architectures() -> list[str]:
    """Every image-classification architecture torchvision.models builds."""
    return sorted(models.list_models(module=models))


def check_arch(arch: str) -> str:
    """Return `arch` if torchvision builds it, else fail listing the ones it does."""
    if arch not in architectures():
        raise ExportError(
            f"unknown architecture {arch!r}; torchvision's classification models are: "
            + ", ".join(architectures())
            + " (or timm:NAME, or module.path:callable for any factory)"
        )
    return arch


def build_model(
    arch: str, weights: str | Path = "DEFAULT"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build `arch` with `weights` (DEFAULT, none or a state_dict path), in eval mode.

    Returns the module and its provenance: `source`, `sha256`, `kind` (official, fine-tune
    or random-init), `official` (the torchvision weights' name, when they are) and `trained`.
    Download failures fall back to the seeded random init, `trained: False`.
    """
    check_arch(arch)
    torch.manual_seed(RANDOM_SEED)
    if str(weights).lower() == "none":
        return models.get_model(arch, weights=None).eval(), random_init()
    if str(weights).upper() == "DEFAULT":
        return _with_default_weights(arch)
    path = Path(weights)
    state = read_state_dict(path)
    try:
        with torch.device("meta"):  # shapes and names only: no memory, no random numbers drawn
            head = list(models.get_model(arch, weights=None).state_dict())[-1]
    except (NotImplementedError, RuntimeError):  # an init that reads values (RegNet's)
        head = list(models.get_model(arch, weights=None).state_dict())[-1]
    kwargs = {}
    if head in state and state[head].ndim >= 1 and state[head].shape[0] != 1000:
        kwargs["num_classes"] = int(state[head].shape[0])
    model = load_into(lambda: models.get_model(arch, weights=None, **kwargs), state, path, arch)
    provenance = weights_file(path)
    official = official_weights(arch, provenance["sha256"])
    if official is not None:
        return model, _official(official, f"file:{path.name}", provenance["sha256"])
    return model, provenance


def _with_default_weights(arch: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    weights = models.get_model_weights(arch).DEFAULT
    model = models.get_model(arch, weights=None)
    try:
        state = weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # no network, proxy refusal, hash mismatch, ...
        log.warning("could not download %s (%s: %s)", weights.url, type(exc).__name__, exc)
        return model.eval(), random_init()
    model.load_state_dict(state)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    return model.eval(), _official(weights, weights.url, sha256_file(cached))


def _official(weights: models.WeightsEnum, source: str, sha256: str) -> dict[str, Any]:
    return {
        "source": source,
        "sha256": sha256,
        "kind": "official",
        "official": str(weights),
        "trained": True,
    }


def official_weights(arch: str, sha256: str) -> models.WeightsEnum | None:
    """The torchvision weights of `arch` whose published checksum `sha256` matches, if any."""
    for weights in models.get_model_weights(arch):
        match = _HASH_IN_URL.search(weights.url)
        if match and sha256.startswith(match.group(1)):
            return weights
    return None


def default_input(arch: str, weights: str | None = None) -> dict[str, Any]:
    """Resize, crop, mean, std and interpolation of `arch`'s torchvision weights' transforms.

    `weights` names the torchvision weights (e.g. ResNet50_Weights.IMAGENET1K_V1); without it,
    the architecture's default weights (the usual starting point of a fine-tune).
    """
    enum = models.get_model_weights(arch)
    chosen = enum[weights.split(".", 1)[1]] if weights else enum.DEFAULT
    t = chosen.transforms()
    return {
        "resize": int(t.resize_size[0]),
        "crop": int(t.crop_size[0]),
        "mean": [float(m) for m in t.mean],
        "std": [float(s) for s in t.std],
        "interpolation": t.interpolation.value,
    }
