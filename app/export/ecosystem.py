"""Models from the ecosystem: timm, Hugging Face checkpoints and importable factories.

- `timm:NAME` builds the timm model; its preprocessing comes from its `pretrained_cfg`
  through timm's own `resolve_data_config`, as timm's eval transform reads it.
- `--from-hf DIR` loads an `AutoModelForImageClassification` checkpoint from a local folder
  (nothing is downloaded): labels from `config.json`'s `id2label`, preprocessing from the
  image processor of `preprocessor_config.json`, sigmoid scores where the pipeline uses them
  (`multi_label_classification`, or a single output).
- `module.path:callable` calls any importable factory returning an `nn.Module`, as Gunicorn
  reads an app spec. Without --weights the factory's own weights are taken as trained (its
  code loads them); a factory carries no preprocessing, so the options must give it.

timm and transformers are optional (`pip install 'wanwu[models]'`); without them the export
names the package and the command.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from app import sniff
from app.export.files import (
    RANDOM_SEED,
    Loaded,
    load_into,
    random_init,
    read_state_dict,
    summary,
    weights_file,
)
from app.export.request import ExportError

log = logging.getLogger("wanwu.export")

EXTRA = "pip install 'wanwu[models]'"
# PIL's resampling filters by number, as Hugging Face image processors record them.
PIL_FILTERS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def require(module: str, package: str, option: str) -> ModuleType:
    """Import an optional package, or fail naming it and the install command."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExportError(
            f"{option} needs the {package} package, which is not installed: {EXTRA} "
            f"(or pip install {package})"
        ) from None


# -- timm -----------------------------------------------------------------------------------------


def timm_model(name: str, weights: str) -> Loaded:
    """Build timm's `name` with `weights` (DEFAULT: timm's pretrained, none, or a file)."""
    timm = require("timm", "timm", "--arch timm:NAME")
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:12]
        raise ExportError(f"timm has no model {name!r}; similar: {', '.join(close) or 'none'}")
    torch.manual_seed(RANDOM_SEED)
    if weights.lower() == "none":
        model, provenance = timm.create_model(name, pretrained=False).eval(), random_init()
    elif weights.upper() == "DEFAULT":
        try:
            model = timm.create_model(name, pretrained=True).eval()
            provenance = {"source": f"timm:{name}", "sha256": None, "kind": "official"}
            provenance = {**provenance, "trained": True}
        except Exception as exc:  # no network: the same loud fallback as torchvision's
            log.warning("could not download timm's %s weights (%s)", name, summary(exc, 200))
            torch.manual_seed(RANDOM_SEED)  # the same init as --weights none
            model, provenance = timm.create_model(name, pretrained=False).eval(), random_init()
    else:
        path = Path(weights)
        state = read_state_dict(path)
        head = timm.models.get_pretrained_cfg_value(name, "classifier") or ""
        classes = state.get(f"{head}.weight")
        kwargs = {} if classes is None else {"num_classes": int(classes.shape[0])}
        build = lambda: timm.create_model(name, pretrained=False, **kwargs)  # noqa: E731
        model, provenance = load_into(build, state, path, f"timm:{name}"), weights_file(path)
    config = timm.data.resolve_data_config({}, model=model)
    return Loaded(model, provenance, f"timm:{name}", timm_input(config))


def timm_input(config: Mapping[str, Any]) -> dict[str, Any]:
    """The preprocessing of timm's eval transform (`create_transform`) for a data config."""
    _, height, width = config["input_size"]
    pct = config.get("crop_pct") or 0.875
    mode = config.get("crop_mode") or "center"
    scale = [math.floor(height / pct), math.floor(width / pct)]
    if mode == "center" and height == width:
        resize: int | list[int] = scale[0]  # the short side, as torchvision's Resize(int)
    elif mode == "squash":
        resize = scale
    else:
        raise ExportError(
            f"timm's crop_mode {mode!r} at {height}x{width} is not one wanwu reproduces; "
            "give --resize and --crop"
        )
    return {
        "resize": resize,
        "crop": height if height == width else [height, width],
        "mean": [float(m) for m in config["mean"]],
        "std": [float(s) for s in config["std"]],
        "interpolation": config.get("interpolation") or "bilinear",
    }


# -- Hugging Face ---------------------------------------------------------------------------------


class _Logits(torch.nn.Module):
    """A Hugging Face classifier as a plain pixels -> logits module, for tracing."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values, return_dict=False)[0]


def huggingface(folder: Path) -> Loaded:
    """An image-classification checkpoint folder, as `transformers.pipeline` would run it."""
    transformers = require("transformers", "transformers", "--from-hf")
    if folder.is_file():
        raise ExportError(
            f"--from-hf takes a checkpoint folder, and {folder} is a file: {sniff.hint(folder)}"
        )
    if not (folder / "config.json").is_file():
        raise ExportError(
            f"{folder} is not a Hugging Face checkpoint folder (no config.json): save one with "
            "model.save_pretrained(DIR) and image_processor.save_pretrained(DIR)"
        )
    if not (folder / "preprocessor_config.json").is_file():
        raise ExportError(
            f"{folder} has no preprocessor_config.json: save the image processor the model was "
            "trained with there (image_processor.save_pretrained(DIR))"
        )
    try:
        model = transformers.AutoModelForImageClassification.from_pretrained(
            folder, local_files_only=True
        )
        processor = transformers.AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ExportError(f"cannot load {folder} as an image classifier: {summary(exc)}") from None
    config = model.config
    labels = [str(config.id2label[i]) for i in range(config.num_labels)]
    multi = config.problem_type == "multi_label_classification" or config.num_labels == 1
    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    provenance = {
        "source": f"huggingface:{folder.resolve().name}",
        "sha256": weights_file(weights[0])["sha256"] if len(weights) == 1 else None,
        "kind": "huggingface",
        "model_type": config.model_type,
        "trained": True,
    }
    return Loaded(
        _Logits(model.eval()).eval(),
        provenance,
        arch=f"huggingface:{(config.architectures or [config.model_type])[0]}",
        input=hf_input(processor),
        labels=labels,
        scores="sigmoid" if multi else "softmax",
    )


def _size(value: Any) -> dict[str, int]:
    """A processor's size (a dict, or a SizeDict in recent releases) as a plain dict."""
    if isinstance(value, Mapping):
        items = dict(value)
    else:
        keys = ("height", "width", "shortest_edge", "longest_edge")
        items = {k: getattr(value, k, None) for k in keys}
    return {k: int(v) for k, v in items.items() if v is not None}


def hf_input(processor: Any) -> dict[str, Any]:
    """The preprocessing of the image processors ImageNet classifiers use.

    ViT-style `size: {height, width}` (resized to it, aspect not kept); ConvNext-style
    `shortest_edge` with `crop_pct` (below 384: short side to edge / crop_pct, then a centre
    crop of edge; else resized to edge x edge); and `shortest_edge` + `crop_size` pairs.
    """
    name = type(processor).__name__
    size = _size(processor.size) if getattr(processor, "do_resize", True) else {}
    crop = _size(processor.crop_size) if getattr(processor, "do_center_crop", False) else {}
    pct = getattr(processor, "crop_pct", None)
    resample = getattr(processor, "resample", 2)
    interpolation = PIL_FILTERS.get(int(getattr(resample, "value", resample)))
    if "height" in size and "width" in size:
        resize: int | list[int] = [size["height"], size["width"]]
    elif "shortest_edge" in size and "longest_edge" not in size:
        edge = size["shortest_edge"]
        resize = edge
        if pct is not None and not crop:  # ConvNext: crop_pct below 384, a plain resize above
            if edge < 384:
                resize, crop = int(edge / pct), {"height": edge, "width": edge}
            else:
                resize = [edge, edge]
    else:
        raise ExportError(f"{name}'s size {size or 'none'} leaves the input size open; wanwu "
                          "serves a fixed input: give --resize and --crop")  # fmt: skip
    if interpolation is None:
        raise ExportError(f"{name}'s resample {resample!r} is not a PIL filter wanwu knows")
    box = (
        [crop["height"], crop["width"]] if crop else (resize if isinstance(resize, list) else None)
    )
    if box is None:
        raise ExportError(f"{name} does not crop after resizing the short side: give --crop")
    # do_rescale multiplies 0..255 pixels by rescale_factor before normalising; wanwu's pixels
    # are 0..1, so the mean and std are scaled to match (1/255 leaves them as they are).
    scale = 255 * (processor.rescale_factor if getattr(processor, "do_rescale", True) else 1)
    normalize = getattr(processor, "do_normalize", True)
    mean = list(processor.image_mean) if normalize else [0.0, 0.0, 0.0]
    std = list(processor.image_std) if normalize else [1.0, 1.0, 1.0]
    return {
        "resize": resize,
        "crop": box[0] if box[0] == box[1] else box,
        "mean": [float(m) / scale for m in mean],
        "std": [float(s) / scale for s in std],
        "interpolation": interpolation,
    }


# -- factories ------------------------------------------------------------------------------------


def factory(spec: str, weights: str | None) -> Loaded:
    """Call `module.path:callable` (no arguments) and load `weights` into what it returns."""
    module_name, _, attr = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ExportError(
            f"--arch {spec}: cannot import {module_name} ({exc}); install it, or run from the "
            "folder that holds it"
        ) from None
    for part in attr.split("."):
        target = getattr(target, part, None)
    if not callable(target):
        raise ExportError(f"--arch {spec}: {module_name} has no callable {attr!r}")
    torch.manual_seed(RANDOM_SEED)
    model = target()
    if not isinstance(model, torch.nn.Module):
        raise ExportError(f"--arch {spec} returned {type(model).__name__}, not a torch.nn.Module")
    if weights is None:
        provenance = {"source": f"factory:{spec}", "sha256": None, "kind": "factory"}
        return Loaded(model.eval(), {**provenance, "trained": True}, spec)
    if weights.lower() == "none":
        return Loaded(model.eval(), random_init(), spec)
    path = Path(weights)
    return Loaded(
        load_into(lambda: model, read_state_dict(path), path, spec), weights_file(path), spec
    )
