"""One training run, stage by stage: data, features, head, fine-tune, export, report.

Each stage's result is kept (app.train.stages) so that `--resume` continues after the last
finished one. The test figures are those of the exported classifier's own computation
(backbone, then the trained head) on the test pictures decoded as the service decodes them,
so a served model answers those pictures as the report says. The artifact is written by the
export library (app.export.library), with the manifest's `training` block: the data (files
and a hash per split), the recipe, each stage's time and the test figures.
"""

from __future__ import annotations

import logging
import stat
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from app.export import formats, sources
from app.export.files import Loaded
from app.export.library import export
from app.export.request import ExportError, ExportRequest
from app.settings import Settings
from app.train import data as dataset
from app.train import features, finetune, head, report
from app.train.stages import Stages

log = logging.getLogger("wanwu.train")


@dataclass(frozen=True)
class Options:
    """What a run trains on and how, beside the export's own options."""

    data: Path
    report: Path
    split: tuple[int, int, int] = dataset.SPLIT
    seed: int = 0
    min_images: int = dataset.MIN_IMAGES
    finetune: int = 0
    resume: bool = False


def train(request: ExportRequest, options: Options) -> dict[str, Any]:
    """Train as `options` say and export as `request` says; return the report."""
    stages = Stages(options.report / ".stages", options.resume)
    limit = Settings().max_pixels
    seconds: dict[str, float] = {}
    clock = time.monotonic()

    def lap(stage: str) -> None:
        nonlocal clock
        seconds[stage] = round(time.monotonic() - clock, 2)
        clock = time.monotonic()

    inputs = {"files": listing(options.data), "split": options.split, "seed": options.seed}
    scanned = stages.run(
        "data",
        {**inputs, "min_images": options.min_images},
        lambda: dataset.scan(
            options.data, options.split, options.seed, limit, options.min_images
        ).to_dict(),
    )
    data = dataset.Dataset.from_dict(scanned)
    lap("data")
    with tempfile.TemporaryDirectory() as workdir:
        loaded = sources.load(request, Path(workdir))
    if request.require_trained and not loaded.provenance["trained"]:
        raise ExportError("UNTRAINED BACKBONE refused (--require-trained): see the warning above")
    source = f"--arch {request.arch}"
    spec = formats.input_spec(request.given_input(), loaded.input, source)
    body, head_name, _ = features.backbone(loaded.module)
    lap("backbone")
    where = finetune.device()
    unique = {item.sha256: item.file for item in data.items}
    computed = stages.run(
        "features",
        {"arch": loaded.arch, "weights": loaded.provenance, "input": spec},
        lambda: {
            "sha256": list(unique),
            "rows": features.compute(body, options.data, list(unique.values()), spec, limit, where),
        },
    )
    row = {digest: i for i, digest in enumerate(computed["sha256"])}
    lap("features")

    def part(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        items = data.split(split)
        x = computed["rows"][[row[i.sha256] for i in items]]
        return x, torch.tensor([i.label for i in items])

    (x, y), (vx, vy), (tx, ty) = (part(s) for s in dataset.SPLITS)
    trained = stages.run("head", {}, lambda: _head(x, y, vx, vy, data, options.seed))
    linear = torch.nn.Linear(x.shape[1], len(data.classes))
    linear.load_state_dict(trained["state"])
    model = features.replace_head(body, head_name, linear).cpu().eval()
    with torch.no_grad():
        test_logits = linear(tx)
        baseline = head.score(linear(vx), vy, head.class_weights(y, len(data.classes)))
    lap("head")
    recipe = {**head.RECIPE, "head_epochs": trained["history"]["epochs"]}
    stage = "linear head"
    if options.finetune:
        tuned = stages.run(
            "finetune",
            {"epochs": options.finetune},
            lambda: _finetune(model, head_name, options, data, spec, limit, baseline),
        )
        recipe |= {**finetune.RECIPE, "finetune_epochs": options.finetune, **tuned["history"]}
        if tuned["state"] is not None:
            model.load_state_dict(tuned["state"])
            files = [i.file for i in data.split("test")]
            test_logits = finetune.evaluate(model, options.data, files, spec, limit, where)
            stage = "fine-tuned"
        lap("finetune")
    test = report.figures(test_logits, ty, data.classes)
    examples: dict[tuple[int, int], list[str]] = {}
    predictions = []
    for item, guess in zip(data.split("test"), test_logits.argmax(1).tolist(), strict=True):
        examples.setdefault((item.label, guess), []).append(item.file)
        predictions.append([item.file, data.classes[item.label], data.classes[guess]])
    summary = {k: test[k] for k in ("images", "top1", "top5", "macro_f1")}
    record = {
        "data": data.fingerprint(),
        "recipe": {"backbone": loaded.arch, "stage": stage, **recipe},
        "seconds": seconds,
        "test": summary,
    }
    provenance = {
        "source": f"app.train:{options.data.resolve().name}",
        "sha256": None,
        "kind": "trained",
        "backbone": loaded.provenance,
        "trained": True,
    }
    labels_zh = options.data / dataset.LABELS_ZH
    if request.labels_zh is None and labels_zh.is_file():
        request = replace(request, labels_zh=labels_zh)
    trained_model = Loaded(model, provenance, loaded.arch, spec, data.classes)
    manifest = export(request, trained_model, {"training": record})
    lap("export")
    return {
        "name": manifest["name"],
        "artifact": str(request.out),
        "artifact_sha256": manifest["artifact_sha256"],
        "data": str(options.data),
        "stage": stage,
        "classes": data.classes,
        "splits": data.counts(),
        "skipped": data.skipped,
        "leakage": data.leakage,
        "recipe": record["recipe"],
        "seconds": seconds,
        "images_per_s": {
            "features": round(len(unique) / max(seconds["features"], 1e-9), 1),
        },
        "test": test,
        "confused": report.confused(test, data.classes, examples),
        "predictions": predictions,  # each test picture: file, true class, predicted class
    }


def listing(root: Path) -> list[tuple[str, int, int]]:
    """Every file under `root` with its size and modification time: what a rescan would see."""
    # lstat: a broken link is listed (and skipped by the scan as unreadable), not an error.
    return sorted(
        (p.relative_to(root).as_posix(), s.st_size, s.st_mtime_ns)
        for p in root.rglob("*")
        if not stat.S_ISDIR((s := p.lstat()).st_mode)
    )


def _head(x, y, vx, vy, data: dataset.Dataset, seed: int) -> dict[str, Any]:
    linear, history = head.train(x, y, vx, vy, len(data.classes), seed)
    log.info(
        "head: %d epochs, best %d, validation top-1 %.1f %%",
        history["epochs"],
        history["best_epoch"],
        100 * history["val_top1"],
    )
    return {"state": linear.state_dict(), "history": history}


def _finetune(model, head_name, options, data, spec, limit, baseline) -> dict[str, Any]:
    def part(split: str) -> tuple[list[str], torch.Tensor]:
        items = data.split(split)
        return [i.file for i in items], torch.tensor([i.label for i in items])

    inputs = {"root": options.data, "spec": spec, "max_pixels": limit}
    inputs |= {"train": part("train"), "val": part("val")}
    tuned, history = finetune.finetune(
        model, head_name, options.finetune, inputs, baseline, options.seed
    )
    log.info("fine-tune %s (validation top-1 by epoch %s)", "kept" if tuned else "dropped",
             history["val_top1"])  # fmt: skip
    return {"state": tuned.state_dict() if tuned else None, "history": history}
