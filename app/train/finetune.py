"""`--finetune EPOCHS`: a short fine-tune of the whole network, kept only if validation gains.

Recipe: the classifier (backbone + the trained linear head) trains on augmented training
pictures (a random crop of 60-100 % of the served crop's area, brightness and contrast
jitter; no flips, which would change what text and digits mean), AdamW with a cosine
schedule, the backbone at a tenth of the head's rate, the head's loss (label smoothing,
class weights). Batch-norm statistics stay those of the backbone's own training: a few
hundred pictures estimate them worse. On CUDA when present, else on the CPU under bf16
autocast where the CPU has native bf16 (AVX512-BF16 or AMX), else fp32. After each epoch
the classifier is scored on the validation pictures as served; the best epoch is kept if it
beats the head alone, else the head alone is.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any

import torch
from torchvision.transforms import v2

from app import imaging, runtime
from app.train import features, head

HEAD_RATE = 1e-3
BACKBONE_RATE = HEAD_RATE / 10
RECIPE = {
    "finetune_augmentation": "random crop 60-100 % of area, brightness and contrast 0.2",
    "finetune_rates": {"head": HEAD_RATE, "backbone": BACKBONE_RATE},
    "finetune_schedule": "cosine",
}


def device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(where: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA and on a CPU with native bf16; none elsewhere."""
    if where.type == "cuda" or runtime.cpu_supports_bf16():
        return torch.autocast(where.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def augmenter(root: Path, spec: dict[str, Any], max_pixels: int):
    """A file -> an augmented training tensor, decoded as the service decodes."""
    height, width = imaging.size_hw(spec["crop"])
    steps = v2.Compose(
        [
            v2.RandomResizedCrop((height, width), scale=(0.6, 1.0), antialias=True),
            v2.ColorJitter(brightness=0.2, contrast=0.2),
        ]
    )
    resize = max(imaging.size_hw(spec["resize"]))

    def load(file: str) -> torch.Tensor:
        picture = imaging.decode((root / file).read_bytes(), max_pixels, 2 * resize)
        picture = steps(picture)
        return imaging.preprocess(
            picture, [height, width], spec["crop"], spec["mean"], spec["std"], max_pixels
        )

    return load


def evaluate(model: torch.nn.Module, root: Path, files: list[str], spec, max_pixels, where):
    """The classifier's logits on `files`, preprocessed as served."""
    model.eval()
    rows = []
    with torch.inference_mode(), features.progress(len(files), "evaluate") as bar:
        for batch in features.batches(files, features.served(root, spec, max_pixels)):
            rows.append(model(batch.to(where, memory_format=torch.channels_last)).float().cpu())
            bar.update(len(batch))
    return torch.cat(rows)


def finetune(
    model: torch.nn.Module,
    head_name: str,
    epochs: int,
    data: dict[str, Any],
    baseline: tuple,
    seed: int = 0,
) -> tuple[torch.nn.Module | None, dict[str, Any]]:
    """Fine-tune `model` for `epochs`; the best model if it beats `baseline`, and the history.

    `data` holds root, spec, max_pixels, train (files, labels), val (files, labels).
    """
    torch.manual_seed(seed)
    where = device()
    root, spec, limit = data["root"], data["spec"], data["max_pixels"]
    files, labels = data["train"]
    val_files, val_labels = data["val"]
    model = copy.deepcopy(model).to(where, memory_format=torch.channels_last)
    top = model.get_submodule(head_name)
    top_ids = {id(p) for p in top.parameters()}
    rest = [p for p in model.parameters() if id(p) not in top_ids]
    optimizer = torch.optim.AdamW(
        [{"params": rest, "lr": BACKBONE_RATE}, {"params": top.parameters(), "lr": HEAD_RATE}]
    )
    steps = epochs * -(-len(files) // features.BATCH)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    weights = head.class_weights(labels, len(set(labels.tolist()))).to(where)
    load = augmenter(root, spec, limit)
    best, best_state, scores = baseline, None, []
    for epoch in range(epochs):
        order = torch.randperm(len(files)).tolist()
        model.train()
        for m in model.modules():  # keep the backbone's batch-norm statistics
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
        with features.progress(len(files), f"finetune {epoch + 1}/{epochs}") as bar:
            for k, batch in enumerate(features.batches([files[i] for i in order], load)):
                idx = order[k * features.BATCH : (k + 1) * features.BATCH]
                with autocast(where):
                    logits = model(batch.to(where, memory_format=torch.channels_last))
                loss = head.loss(logits.float(), labels[idx].to(where), weights)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.update(len(batch))
        logits = evaluate(model, root, val_files, spec, limit, where)
        current = head.score(logits, val_labels, weights.cpu())
        scores.append(current[0])
        if current > best:
            best, best_state = current, copy.deepcopy(model.state_dict())
    history = {"epochs": epochs, "val_top1": scores, "kept": best_state is not None}
    if best_state is None:
        return None, history
    model.load_state_dict(best_state)
    return model.cpu().eval(), history
