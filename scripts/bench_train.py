#!/usr/bin/env python3
"""`python -m app.train`'s default recipe on scikit-learn's digits rendered as PNGs: its test
top-1, its time per stage and images/s, beside one pass of the backbone (EfficientNet-Lite0,
the whole classifier) over the same pictures, decoded as the service decodes them.

  python -m scripts.bench_train                     # 1,797 digits, 8:1:1 (1,437 to train)
  python -m scripts.bench_train --per-class 40 --finetune 1

The split is 8:1:1 so that the training set is the size the ResNet-18 trained from scratch
on (`benchkit.digits`, 80 %: 1,437 pictures), whose held-out top-1 is 95 % or more.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from app.export import cli as export_cli
from app.export import formats, zoo
from app.export.request import ExportRequest
from app.settings import Settings
from app.train import cli, features
from benchkit import folders
from benchkit.bench import header


def backbone_pass(root: Path) -> tuple[int, float]:
    """One pass of Lite0 over every picture under `root`: (pictures, seconds)."""
    args = vars(export_cli.parser().parse_args(zoo.EXPORTS[cli.DEFAULT]))
    request = ExportRequest(**args)
    spec = formats.input_spec(request.given_input(), None, "--arch")
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    model = zoo.efficientnet_lite0()
    started = time.monotonic()
    features.compute(model, root, files, spec, Settings().max_pixels, torch.device("cpu"))
    return len(files), time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m scripts.bench_train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--per-class", type=int, help="at most this many digits of each (default all)")
    p.add_argument("--split", default="8:1:1", help="train:val:test (default 8:1:1)")
    p.add_argument("--finetune", type=int, default=0, metavar="EPOCHS")
    args = p.parse_args(argv)
    print(header("python -m app.train on the rendered digits"))
    print(f"- torch threads: {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp, "digits")
        counts = folders.digits(root, args.per_class)
        pictures, pass_s = backbone_pass(root)
        out = Path(tmp, "digits.pt")
        command = [str(root), "--name", "digits", "--out", str(out), "--split", args.split]
        started = time.monotonic()
        status = cli.main([*command, "--finetune", str(args.finetune)])
        total = time.monotonic() - started
        if status != 0:
            return status
        report = json.loads(Path(tmp, "digits-report", "report.json").read_text())
    splits = {s: sum(c.values()) for s, c in report["splits"].items()}
    print(f"- pictures: {sum(counts.values())} ({splits}), 48x48 PNGs")
    print("\n| Step | Seconds | Images/s |\n|---|---|---|")
    print(f"| one backbone pass (Lite0, all {pictures}) | {pass_s:.1f} | {pictures / pass_s:.1f} |")
    for stage, seconds in report["seconds"].items():
        rate = f"{pictures / seconds:.1f}" if stage == "features" else ""
        print(f"| train: {stage} | {seconds:.1f} | {rate} |")
    print(f"| train: whole run (process start excluded) | {total:.1f} | {pictures / total:.1f} |")
    test = report["test"]
    print(
        f"\ntest top-1 {test['top1']:.2%}, top-5 {test['top5']:.2%}, macro F1 "
        f"{test['macro_f1']:.3f} on {test['images']} pictures ({report['stage']}); "
        f"head epochs {report['recipe']['head_epochs']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
