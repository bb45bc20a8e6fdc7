"""The command line of `python -m app.export`: parse, build an ExportRequest, report.

  python -m app.export                                  # ResNet-18, ImageNet-1K
  python -m app.export --arch convnext_tiny --weights DEFAULT
  python -m app.export --arch resnet50 --weights finetune.pth --labels labels.txt \\
      --labels-zh labels_zh.txt --name pets --out models/pets.pt
  python -m app.export --arch timm:convnext_tiny --weights pets-timm.pth --labels labels.txt
  python -m app.export --from-hf ./vit-pets                # save_pretrained's folder
  python -m app.export --arch mypkg.models:build --weights pets.pth --resize 256 --crop 224 \\
      --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225
  python -m app.export --torchscript mine.pt --resize 256 --crop 224 \\
      --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --labels index_to_name.json
  python -m app.export --from-mar resnet-18.mar
  python -m app.export --format onnx                     # models/resnet18.onnx
  python -m app.export --onnx mine.onnx --resize 256 --crop 224 \\
      --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --labels labels.txt

Models (--arch, with --weights DEFAULT | none | PATH):
  NAME             a torchvision classifier; DEFAULT downloads its weights (offline: a seeded
                   random init, `trained: false`, said loudly; --require-trained: fail);
                   preprocessing from those weights' transforms. A PATH whose SHA-256 is
                   torchvision's published checksum is recorded as the official weights.
  timm:NAME        a timm model; preprocessing from its pretrained_cfg (resolve_data_config).
  module:callable  any importable factory returning an nn.Module (without --weights, the
                   factory's own weights); give its preprocessing.
--from-hf DIR      a Hugging Face AutoModelForImageClassification folder: labels from
                   id2label, preprocessing from preprocessor_config.json, sigmoid scores for
                   multi_label_classification.
--torchscript PATH a TorchScript classifier, copied as it is; give its preprocessing.
--onnx PATH        an ONNX classifier (NCHW float images in, logits out), copied as it is and
                   served by ONNX Runtime; give its preprocessing.
--from-mar FILE    a TorchServe archive whose model is TorchScript: its name, labels and the
                   stock image_classifier's preprocessing (resize 256, crop 224).
Any preprocessing option given wins over the source's. The class count comes from running
the model once; --labels/--labels-zh (one per line, or JSON such as index_to_name.json) must
match it. Without labels, 1000 classes get the ImageNet-1K names in English and Chinese.

Format: TorchScript (fp32; the service casts it), --format onnx (fp32, served by ONNX Runtime),
or --format pt2 --precision fp32|bf16|int8 (torch.export + AOTInductor, app/export/pt2.py; int8
calibrates on --calibrate DIR).

Nothing is written unless everything checks out, an existing artifact is replaced only with
--force, and artifact and manifest appear together or not at all.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from app.export import pt2
from app.export.library import export
from app.export.request import DEFAULT_ARCH, FORMATS, INTERPOLATIONS, ExportError, ExportRequest

log = logging.getLogger("wanwu.export")


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


def parser(add_help: bool = True) -> argparse.ArgumentParser:
    """The command line of `python -m app.export` (`python -m app.train` takes it as a parent)."""
    p = argparse.ArgumentParser(
        prog="python -m app.export",
        description=__doc__.split("\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=add_help,
    )
    source = p.add_argument_group("model")
    source.add_argument(
        "--arch",
        metavar="NAME",
        help=f"torchvision NAME, timm:NAME or module:callable (default {DEFAULT_ARCH})",
    )
    source.add_argument(
        "--weights",
        metavar="PATH|DEFAULT|none",
        help="a state_dict file, the published weights or a seeded random init (default DEFAULT)",
    )
    source.add_argument("--torchscript", type=Path, metavar="PATH", help="a TorchScript file")
    source.add_argument("--onnx", type=Path, metavar="PATH", help="an ONNX classifier file")
    source.add_argument("--from-mar", type=Path, metavar="FILE", help="a TorchServe archive")
    source.add_argument("--from-hf", type=Path, metavar="DIR", help="a Hugging Face checkpoint")
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
    pre = p.add_argument_group("preprocessing (defaults: the source's own)")
    pre.add_argument("--resize", type=int, help="resize the short side to this many pixels")
    pre.add_argument("--crop", type=int, help="then centre-crop a square of this size")
    pre.add_argument("--mean", type=_floats, help="per-channel mean, e.g. 0.485,0.456,0.406")
    pre.add_argument("--std", type=_floats, help="per-channel std, e.g. 0.229,0.224,0.225")
    pre.add_argument("--interpolation", choices=INTERPOLATIONS, help="resize filter")
    kind = p.add_argument_group("format and precision")
    kind.add_argument("--format", choices=FORMATS, default="torchscript")
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
        help="int8: refuse unless its top-1 equals fp32's on this share of the held-out images "
        "(one in five of DIR's, never calibrated on)",
    )
    kind.add_argument(
        "--allow-untrained",
        dest="untrained",
        action="store_true",
        help="int8: build it from an untrained model too (refused otherwise)",
    )
    kind.add_argument("--max-batch", type=int, default=8, help="pt2: the largest batch served")
    kind.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="pt2: the device it serves on"
    )
    out = p.add_argument_group("output")
    out.add_argument("--name", help="the model name clients see (default: the source's or --out's)")
    out.add_argument(
        "--out", type=Path, help="artifact path, default models/NAME.pt; manifest .json beside it"
    )
    out.add_argument("--force", action="store_true", help="replace an existing artifact")
    return p


def terminate(signum: int, frame: Any) -> None:
    """SIGTERM ends the export like Ctrl-C: unwinding, so that its staging is removed."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Run one export; 0 on success, 1 (nothing written) on an ExportError, 2 on bad usage."""
    p = parser()
    args = p.parse_args(argv)
    try:
        request = ExportRequest(**vars(args))
    except ExportError as exc:  # options that conflict: a usage error, before any work
        p.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        manifest = export(request)
    except (ExportError, pt2.AgreementError) as exc:
        log.error("export failed, nothing written: %s", exc)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not manifest["trained"]:
        banner = "!" * 78
        log.warning(
            "%s\nUNTRAINED MODEL: no trained weights were loaded; %s holds a seeded random "
            "init.\nIts predictions are meaningless. Re-run with network access or "
            "--weights PATH.\n%s",
            banner,
            request.out,
            banner,
        )
    log.info(
        "wrote %s: %s, %d classes, labels in %s (sha256 %s, trained=%s)",
        request.out,
        manifest["arch"] or manifest["format"],
        manifest["num_classes"],
        "+".join(manifest["languages"]),
        manifest["artifact_sha256"][:12],
        manifest["trained"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
