"""The command line of `python -m app.train`: a folder of photos -> a served classifier.

  python -m app.train photos/ --name pets                      # models/pets.pt + report
  python -m app.train photos/ --name pets --out repo/pets/3/pets.pt --finetune 3 \\
      --load http://127.0.0.1:8081 --share 10                  # a gray release of version 3

DATA holds a folder per class (its name is the label; DATA/labels_zh.txt, one name a line in
the classes' sorted order, or --labels-zh adds Chinese), or train/, val/ and test/ folders
laid out that way. The backbone is EfficientNet-Lite0 with its ImageNet weights
(app/export/zoo.py) unless --arch names another, as `python -m app.export` takes it, with
the preprocessing it records for serving; every export option applies (--format pt2,
--precision int8 --calibrate DIR, ...). The report (report.json, report.md,
confusion_matrix.png) goes to --report, by default beside the artifact (ARTIFACT-report/);
each finished stage is kept there, and --resume continues after the last one.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import signal
import sys
from pathlib import Path

from app.export import cli as export_cli
from app.export import pt2, zoo
from app.export.request import PREPROCESSING, ExportError, ExportRequest
from app.train import data, report, rollout
from app.train.features import HeadError
from app.train.run import Options, train

log = logging.getLogger("wanwu.train")

DEFAULT = "efficientnet_lite0"


def _split(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(x) for x in text.split(":"))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected three positive parts like 5:3:2; got {text!r}")
    return parts


def parser() -> argparse.ArgumentParser:
    """The export's options plus the training's."""
    p = argparse.ArgumentParser(
        prog="python -m app.train",
        description=__doc__.split("\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[export_cli.parser(add_help=False)],
        conflict_handler="resolve",
    )
    p.add_argument("data", type=Path, metavar="DATA", help="the folder of photos")
    p.add_argument("--name", required=True, help="the model name clients see")
    p.add_argument("--out", type=Path, help="the artifact, default models/NAME.pt")
    run = p.add_argument_group("training")
    run.add_argument("--report", type=Path, metavar="DIR", help="default ARTIFACT-report/")
    run.add_argument(
        "--split", type=_split, default=data.SPLIT, metavar="T:V:T", help="default 5:3:2"
    )
    run.add_argument("--seed", type=int, default=0, help="the split's and training's seed")
    run.add_argument(
        "--min-images",
        type=int,
        default=data.MIN_IMAGES,
        help=f"fewest usable pictures a class may have (default {data.MIN_IMAGES})",
    )
    run.add_argument(
        "--finetune",
        type=int,
        default=0,
        metavar="EPOCHS",
        help="then fine-tune the whole network, kept if validation improves",
    )
    run.add_argument("--resume", action="store_true", help="continue after the last stage")
    run.add_argument("--mlflow", metavar="URI", help="also log the run to MLflow (pip install)")
    out = p.add_argument_group("roll out")
    out.add_argument("--load", metavar="MANAGEMENT_URL", help="serve it (key: WANWU_ADMIN_KEY)")
    out.add_argument(
        "--share", type=int, metavar="PERCENT", help="with --load: a gray release, 1-99 %%"
    )
    return p


def _request(args: argparse.Namespace) -> ExportRequest:
    """The export request: the options given, the Lite0 factory's where no model is named."""
    given = {k: v for k, v in vars(args).items() if k in ExportRequest.__dataclass_fields__}
    if not any(given[k] for k in ("arch", "torchscript", "from_mar", "from_hf")):
        defaults = vars(export_cli.parser().parse_args(zoo.EXPORTS[DEFAULT]))
        for key in ("arch", "require_trained", *PREPROCESSING):
            given[key] = given[key] or defaults[key]
    given["out"] = given["out"] or Path("models") / f"{args.name}.pt"
    return ExportRequest(**given)


def main(argv: list[str] | None = None) -> int:
    """Train, export, report (and roll out); 0 on success, 1 with nothing exported, 2 usage."""
    p = parser()
    args = p.parse_args(argv)
    if args.share is not None and (args.load is None or not 1 <= args.share <= 99):
        p.error("--share PERCENT (1-99) goes with --load MANAGEMENT_URL")
    if args.mlflow and importlib.util.find_spec("mlflow") is None:
        p.error("--mlflow needs the mlflow package: pip install mlflow")
    try:
        request = _request(args)
    except ExportError as exc:
        p.error(str(exc))
    folder = args.report or request.out.with_name(f"{request.out.stem}-report")
    options = Options(
        args.data, folder, args.split, args.seed, args.min_images, args.finetune, args.resume
    )
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    previous = signal.signal(signal.SIGTERM, export_cli.terminate)
    try:
        result = train(request, options)
        files = report.write(folder, result)
        if args.mlflow:
            report.log_mlflow(args.mlflow, result, files)
    except (data.DataError, ExportError, HeadError, pt2.AgreementError) as exc:
        log.error("training failed, nothing exported: %s", exc)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted: the finished stages are kept; --resume continues after them")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    test = result["test"]
    log.info(
        "wrote %s (%s): test top-1 %.1f %%, macro F1 %.3f on %d pictures; report in %s",
        request.out,
        result["stage"],
        100 * test["top1"],
        test["macro_f1"],
        test["images"],
        folder,
    )
    if result["skipped"] or result["leakage"]:
        log.warning(
            "%d files left out, %d pictures in two splits: see %s",
            len(result["skipped"]),
            len(result["leakage"]),
            folder / "report.md",
        )
    if args.load:
        try:
            answer = rollout.call(args.load, request.out, args.share)
        except rollout.RolloutError as exc:
            log.error("%s", exc)
            return 1
        log.info("%s: %s", args.load, answer.get("status", answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
