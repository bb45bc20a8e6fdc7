"""Export an image classifier as a wanwu artifact (TorchScript or .pt2) plus a manifest.

  python -m app.export                                  # ResNet-18, ImageNet-1K
  python -m app.export --arch convnext_tiny --weights DEFAULT
  python -m app.export --arch resnet50 --weights finetune.pth --labels labels.txt \\
      --labels-zh labels_zh.txt --name pets --out models/pets.pt
  python -m app.export --torchscript mine.pt --resize 256 --crop 224 \\
      --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --labels index_to_name.json

Weights (--weights, with any torchvision classification --arch):
  DEFAULT  torchvision's default weights, downloaded with their hash checked; without network,
           a seeded random init, `trained: false` and said loudly (--require-trained: fail);
  none     that seeded random init, without trying the network;
  PATH     a local state_dict. A file whose SHA-256 matches torchvision's published checksum
           for the architecture is recorded as the official weights; any other file as a
           fine-tune, with its hash. The class count comes from its classification head.
--torchscript PATH wraps a TorchScript classifier you exported yourself instead; it needs
--resize, --crop, --mean and --std, since nothing else says how it was trained.
--from-mar FILE.mar imports a TorchServe archive whose serialized file is TorchScript: its
model name, its index_to_name.json labels, and the stock image_classifier's preprocessing
(each overridable by its option). Eager archives (model.py + state_dict) are refused with
the steps to convert them (app/mar.py).

Labels: --labels and --labels-zh take one label per line, or JSON (TorchServe's
index_to_name.json, {"0": "cat", ...}, values may be [wnid, name] lists). Their count must
match the model's outputs, checked by running it once. Without --labels, a 1000-class model
gets the ImageNet-1K names (English and the project's Chinese), any other the class indices.

Format and precision: TorchScript (the default, fp32: the service casts and freezes it), or
with --format pt2 a torch.export + AOTInductor package compiled for one precision (fp32, bf16,
int8) and a dynamic batch 1..--max-batch (app/pt2.py):
  python -m app.export --format pt2 --precision bf16 --out models/resnet18-bf16.pt2
  python -m app.export --precision int8 --calibrate photos/ --out models/resnet18-int8.pt2
--precision int8 implies --format pt2 and calibrates on the first 200 images of --calibrate
DIR (by name), preprocessed exactly as the service does.

Nothing is written unless everything checks out: artifact and manifest appear together.
"""

from __future__ import annotations

import argparse
import functools
import logging
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision
from torchvision import models

from app import labels as labelling
from app import mar, pt2
from app.artifact import sha256_file, write_artifact, write_manifest
from app.labels import LabelError, read_labels

__all__ = [
    "ExportError",
    "architectures",
    "build_model",
    "class_count",
    "default_input",
    "load_torchscript",
    "manifest_fields",
    "read_labels",
    "resolve_labels",
    "save_traced",
    "write_artifact",
    "write_manifest",
]

log = logging.getLogger("wanwu.export")

DEFAULT_ARCH = "resnet18"
RANDOM_SEED = 0
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "box", "hamming", "lanczos")
_HASH_IN_URL = re.compile(r"-([0-9a-f]{6,})\.[a-z]+$")


class ExportError(RuntimeError):
    """An export that cannot be made as asked; the message names the problem and the fix."""


# -- the model ------------------------------------------------------------------------------------


def architectures() -> list[str]:
    """Every image-classification architecture torchvision.models builds."""
    return sorted(models.list_models(module=models))


def check_arch(arch: str) -> str:
    """Return `arch` if torchvision builds it, else fail listing the ones it does."""
    if arch not in architectures():
        raise ExportError(
            f"unknown architecture {arch!r}; torchvision's classification models are: "
            + ", ".join(architectures())
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
        return models.get_model(arch, weights=None).eval(), _random_init()
    if str(weights).upper() == "DEFAULT":
        return _with_default_weights(arch)
    return _with_weights_file(arch, Path(weights))


def _random_init() -> dict[str, Any]:
    return {
        "source": f"random-init(seed={RANDOM_SEED})",
        "sha256": None,
        "kind": "random-init",
        "trained": False,
    }


def _with_default_weights(arch: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    weights = models.get_model_weights(arch).DEFAULT
    model = models.get_model(arch, weights=None)
    try:
        state = weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # no network, proxy refusal, hash mismatch, ...
        log.warning("could not download %s (%s: %s)", weights.url, type(exc).__name__, exc)
        return model.eval(), _random_init()
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


def _with_weights_file(arch: str, path: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    state = _read_state_dict(path)
    with torch.device("meta"):  # shapes and names only: no memory, no random numbers drawn
        head = list(models.get_model(arch, weights=None).state_dict())[-1]
    kwargs = {}
    if head in state and state[head].ndim >= 1 and state[head].shape[0] != 1000:
        kwargs["num_classes"] = int(state[head].shape[0])
    try:
        model = models.get_model(arch, weights=None, **kwargs)
        model.load_state_dict(state)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ExportError(
            f"the weights in {path} do not fit {arch}: {_summary(exc)}. Check --arch, and that "
            f"the file is that architecture's state_dict."
        ) from None
    sha256 = sha256_file(path)
    official = official_weights(arch, sha256)
    if official is not None:
        return model.eval(), _official(official, f"file:{path.name}", sha256)
    provenance = {"source": f"file:{path.name}", "sha256": sha256, "kind": "fine-tune"}
    return model.eval(), {**provenance, "trained": True}


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from a file: bare, under 'state_dict' or 'model', DDP prefixes removed."""
    if not path.is_file():
        raise ExportError(f"weights file {path} not found (or pass --weights DEFAULT or none)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ExportError(
            f"cannot read {path} as a state_dict ({type(exc).__name__}: {_summary(exc)}); "
            "save one with torch.save(model.state_dict(), PATH), or pass a TorchScript file "
            "with --torchscript"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ExportError(f"{path} holds no state_dict (a mapping of names to tensors)")
    if all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _summary(exc: Exception, limit: int = 600) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + " …"


def load_torchscript(path: Path) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """Load a user's TorchScript classifier (on the CPU) and describe where it came from."""
    if not path.is_file():
        raise ExportError(f"TorchScript file {path} not found")
    try:
        module = torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:
        raise ExportError(
            f"{path} is not a TorchScript file ({_summary(exc)}); save one with "
            "torch.jit.save(torch.jit.trace(model, example), PATH), or pass a state_dict "
            "with --arch and --weights"
        ) from None
    provenance = {"source": f"torchscript:{path.name}", "sha256": sha256_file(path)}
    return module, {**provenance, "kind": "torchscript", "trained": True}


def class_count(module: torch.nn.Module, crop: int) -> int:
    """Run the model once on a blank image and return how many classes it scores."""
    try:
        with torch.inference_mode():
            out = module(torch.zeros(1, 3, crop, crop))
    except Exception as exc:
        raise ExportError(
            f"the model failed on a 1x3x{crop}x{crop} input: {_summary(exc)}. "
            "Check --crop and the model."
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ExportError(
            f"the model returned {shape} for one image; a classifier returns (1, classes) logits"
        )
    return int(out.shape[1])


# -- preprocessing and labels -------------------------------------------------------------------


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


def input_spec(args: argparse.Namespace, defaults: dict[str, Any] | None) -> dict[str, Any]:
    """The preprocessing: each option given on the command line, else its default."""
    given = {
        "resize": args.resize,
        "crop": args.crop,
        "mean": args.mean,
        "std": args.std,
        "interpolation": args.interpolation,
    }
    if defaults is None:  # a user's TorchScript: nothing says how it was trained
        missing = [f"--{k}" for k in ("resize", "crop", "mean", "std") if given[k] is None]
        if missing:
            raise ExportError(
                f"--torchscript needs the preprocessing it was trained with: missing "
                f"{', '.join(missing)} (ImageNet-style: --resize 256 --crop 224 "
                "--mean 0.485,0.456,0.406 --std 0.229,0.224,0.225)"
            )
        defaults = {"interpolation": "bilinear"}
    spec = {k: v if v is not None else defaults[k] for k, v in given.items()}
    if spec["resize"] < spec["crop"]:
        raise ExportError(f"--resize {spec['resize']} is smaller than --crop {spec['crop']}")
    if any(s <= 0 for s in spec["std"]):
        raise ExportError(f"--std must be positive; got {spec['std']}")
    return spec


def resolve_labels(
    num_classes: int, labels: Path | None = None, labels_zh: Path | None = None
) -> dict[str, list[str]]:
    """The labels by language, each checked against the model's class count.

    Without a file: ImageNet-1K names for 1000 classes, else the class indices. ImageNet-1K
    English names get the project's Chinese ones unless --labels-zh says otherwise.
    """
    result: dict[str, list[str]] = {}
    for lang, path in (("en", labels), ("zh", labels_zh)):
        if path is None:
            continue
        try:
            names = read_labels(path)
        except LabelError as exc:
            raise ExportError(str(exc)) from None
        if len(names) != num_classes:
            raise ExportError(
                f"label count mismatch: {path} has {len(names)} labels, the model outputs "
                f"{num_classes} classes"
            )
        result[lang] = names
    if "en" not in result:
        if num_classes == 1000:
            result["en"] = list(labelling.names("en"))
        else:
            log.warning("no --labels: the %d classes are labelled by index", num_classes)
            result["en"] = [str(i) for i in range(num_classes)]
    if "zh" not in result and result["en"] == list(labelling.names("en")):
        result["zh"] = list(labelling.names("zh"))
    return {lang: result[lang] for lang in labelling.LANGUAGES if lang in result}


# -- writing ------------------------------------------------------------------------------------


def save_traced(module: torch.nn.Module, crop: int) -> Callable[[Path], None]:
    """A `save(path)` for write_artifact that traces `module` to TorchScript."""

    def save(path: Path) -> None:
        # torch.jit.trace's own check re-traces the model (4x the time): compare outputs once.
        x = torch.randn(2, 3, crop, crop, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            traced = torch.jit.trace(module, x[:1], check_trace=False)
            expected, actual = module(x), traced(x)
        if not torch.allclose(actual, expected, rtol=1e-4, atol=1e-5):
            raise ExportError(
                "the traced model's outputs differ from the model's (data-dependent control "
                "flow?); export it yourself with torch.jit.script and pass --torchscript"
            )
        traced.save(str(path))

    return save


def manifest_fields(
    *,
    name: str,
    arch: str | None,
    format: str,
    provenance: dict[str, Any],
    input: dict[str, Any],
    labels: dict[str, list[str]],
) -> dict[str, Any]:
    """Everything the service reads from a manifest, in its order (the hash is added on write)."""
    weights = {k: v for k, v in provenance.items() if k != "trained"}
    return {
        "name": name,
        "arch": arch,
        "format": format,
        "weights": weights,
        "trained": bool(provenance["trained"]),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "input": input,
        "num_classes": len(labels["en"]),
        "languages": list(labels),
        "labels": labels,
    }


def export(args: argparse.Namespace) -> dict[str, Any]:
    """Build or load the model, check it, and write the artifact and manifest at args.out."""
    if args.from_mar is not None:
        with tempfile.TemporaryDirectory() as folder:
            return export(unpack_mar(args, Path(folder)))
    if args.torchscript is not None:
        if args.weights is not None:
            raise ExportError("--torchscript and --weights exclude each other")
        module, provenance = load_torchscript(args.torchscript)
        provenance.update(args.provenance or {})
        arch, fmt, defaults = args.arch and check_arch(args.arch), "torchscript", None
    else:
        arch = args.arch or DEFAULT_ARCH
        module, provenance = build_model(arch, args.weights or "DEFAULT")
        fmt, defaults = "torchscript-trace", default_input(arch, provenance.get("official"))
    spec = input_spec(args, defaults)
    labels = resolve_labels(class_count(module, spec["crop"]), args.labels, args.labels_zh)
    if args.require_trained and not provenance["trained"]:
        raise ExportError(
            "UNTRAINED MODEL refused (--require-trained): no trained weights were loaded "
            "(see the warning above); re-run with network access or --weights PATH"
        )
    package: dict[str, Any] = {}
    if args.format == "pt2":
        if args.torchscript is not None:
            raise ExportError(
                "--format pt2 needs the eager model (--arch, --weights): torch.export cannot "
                "read TorchScript"
            )
        images, calibration = (None, None)
        if args.precision == "int8":
            try:
                images, calibration = pt2.calibration_set(args.calibrate, spec)
            except ValueError as exc:
                raise ExportError(str(exc)) from None
        save = functools.partial(
            pt2.compile_package,
            module,
            precision=args.precision,
            max_batch=args.max_batch,
            crop=spec["crop"],
            calibration=images,
            device=args.device,
            min_agreement=args.min_agreement,
        )
        package = pt2.manifest_fields(args.precision, args.max_batch, args.device, calibration)
    elif args.torchscript is not None:
        source = args.torchscript

        def save(path: Path) -> None:
            shutil.copyfile(source, path)

    else:
        save = save_traced(module, spec["crop"])
    fields = manifest_fields(
        name=args.name or args.out.stem,
        arch=arch,
        format=fmt,
        provenance=provenance,
        input=spec,
        labels=labels,
    )
    return write_artifact(args.out, save, **{**fields, **package})


def unpack_mar(args: argparse.Namespace, folder: Path) -> argparse.Namespace:
    """The same export as --torchscript, from a TorchServe archive unpacked into `folder`.

    The archive gives the model, its name and labels; preprocessing defaults to the stock
    image_classifier's. Options given on the command line win over each of them.
    """
    if args.torchscript is not None or args.weights is not None:
        raise ExportError("--from-mar excludes --torchscript and --weights")
    try:
        archive = mar.read_mar(args.from_mar)
    except mar.MarError as exc:
        raise ExportError(str(exc)) from None
    if archive.handler not in mar.STOCK_HANDLERS:
        log.warning(
            "%s uses the handler %r, which is not run: wanwu preprocesses as TorchServe's "
            "image_classifier does (or as --resize/--crop/--mean/--std say)",
            args.from_mar,
            archive.handler,
        )
    model = folder / archive.serialized_file
    archive.save_model(model)
    labels = args.labels
    if labels is None and archive.labels_file is not None:
        labels = folder / archive.labels_file
        archive.save_labels(labels)
    given = {k: getattr(args, k) for k in mar.IMAGE_CLASSIFIER_INPUT}
    preprocessing = {
        k: v if given[k] is None else given[k] for k, v in mar.IMAGE_CLASSIFIER_INPUT.items()
    }
    provenance = {
        "source": f"torchserve-archive:{args.from_mar.name}",
        "sha256": sha256_file(args.from_mar),
        "kind": "torchserve-archive",
        "archive_version": archive.version,
    }
    return argparse.Namespace(
        **{
            **vars(args),
            **preprocessing,
            "from_mar": None,
            "torchscript": model,
            "labels": labels,
            "name": args.name or archive.name,
            "provenance": provenance,
        }
    )


# -- command line -------------------------------------------------------------------------------


def _floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers like 0.485,0.456,0.406; got {text!r}"
        ) from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected 1 or 3 numbers (R,G,B); got {text!r}")
    return values


def parser() -> argparse.ArgumentParser:
    """The command line of `python -m app.export`."""
    p = argparse.ArgumentParser(
        prog="python -m app.export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = p.add_argument_group("model")
    source.add_argument(
        "--arch", metavar="NAME", help=f"torchvision classification model (default {DEFAULT_ARCH})"
    )
    source.add_argument(
        "--weights",
        metavar="PATH|DEFAULT|none",
        help="a state_dict file, torchvision's default weights or a seeded random init "
        "(default DEFAULT)",
    )
    source.add_argument(
        "--torchscript", type=Path, metavar="PATH", help="wrap this TorchScript classifier"
    )
    source.add_argument(
        "--from-mar", type=Path, help="import a TorchServe archive whose model is TorchScript"
    )
    p.set_defaults(provenance=None)  # set by --from-mar: where the TorchScript came from
    source.add_argument(
        "--require-trained", action="store_true", help="fail instead of using random weights"
    )
    names = p.add_argument_group("labels")
    names.add_argument(
        "--labels", type=Path, metavar="FILE", help="English labels: text, one per line, or JSON"
    )
    names.add_argument(
        "--labels-zh", type=Path, metavar="FILE", help="Chinese labels, same formats"
    )
    pre = p.add_argument_group("preprocessing (defaults: the torchvision weights' transforms)")
    pre.add_argument("--resize", type=int, help="resize the short side to this many pixels")
    pre.add_argument("--crop", type=int, help="then centre-crop a square of this size")
    pre.add_argument("--mean", type=_floats, help="per-channel mean, e.g. 0.485,0.456,0.406")
    pre.add_argument("--std", type=_floats, help="per-channel std, e.g. 0.229,0.224,0.225")
    pre.add_argument("--interpolation", choices=INTERPOLATIONS, help="resize filter")
    kind = p.add_argument_group("format and precision")
    kind.add_argument("--format", choices=("torchscript", "pt2"), default="torchscript")
    kind.add_argument(
        "--precision",
        choices=pt2.PRECISIONS,
        default="fp32",
        help="fp32, bf16 or int8 (pt2 only; int8 implies --format pt2)",
    )
    kind.add_argument(
        "--calibrate",
        type=Path,
        metavar="DIR",
        help=f"int8: calibrate on the first {pt2.CALIBRATION_IMAGES} images of DIR, by name",
    )
    kind.add_argument(
        "--min-agreement",
        type=float,
        default=pt2.MIN_AGREEMENT,
        metavar="FRACTION",
        help="int8: refuse unless its top-1 equals fp32's on this share of the calibration images",
    )
    kind.add_argument("--max-batch", type=int, default=8, help="pt2: the largest batch served")
    kind.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="pt2: the device it serves on"
    )
    out = p.add_argument_group("output")
    out.add_argument("--name", help="the model name clients see (default: --out's file stem)")
    out.add_argument(
        "--out", type=Path, help="artifact path, default models/ARCH.pt; manifest .json"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.precision == "int8":
        args.format = "pt2"
        if args.calibrate is None:
            p.error("--precision int8 needs --calibrate DIR (images like those it will serve)")
    if not 0 <= args.min_agreement <= 1:
        p.error("--min-agreement is a fraction between 0 and 1, e.g. 0.9")
    if args.format == "torchscript" and args.precision != "fp32":
        p.error("TorchScript is exported in fp32 (the service casts it): add --format pt2")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.out is None:
        source = args.from_mar or args.torchscript
        stem = source.stem if source else args.arch or DEFAULT_ARCH
        suffix = f"-{args.precision}.pt2" if args.format == "pt2" else ".pt"
        args.out = Path("models") / f"{stem}{suffix}"
    try:
        manifest = export(args)
    except (ExportError, pt2.AgreementError) as exc:
        log.error("export failed, nothing written: %s", exc)
        return 1
    if not manifest["trained"]:
        banner = "!" * 78
        log.warning(
            "%s\nUNTRAINED MODEL: no trained weights were loaded; %s holds a seeded random "
            "init.\nIts predictions are meaningless. Re-run with network access or "
            "--weights PATH.\n%s",
            banner,
            args.out,
            banner,
        )
    log.info(
        "wrote %s: %s, %d classes, labels in %s (sha256 %s, trained=%s)",
        args.out,
        manifest["arch"] or manifest["format"],
        manifest["num_classes"],
        "+".join(manifest["languages"]),
        manifest["artifact_sha256"][:12],
        manifest["trained"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
