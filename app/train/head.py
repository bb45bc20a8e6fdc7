"""A linear head trained on the backbone's features: the recipe's first, and often only, step.

Recipe (recorded in the manifest, `RECIPE`): features centred on the training set's mean and
divided by their overall spread (one number: a feature that happens to be zero on every
training picture must not be blown up on others), folded into the exported layer, so the
served model needs nothing more;
AdamW with a cosine schedule over at most EPOCHS epochs of mini-batches; cross-entropy with
label smoothing 0.1, each class weighted by the inverse of its share of the training set
(a rare class counts as much as a common one); early stopping on validation: the epoch with
the best validation top-1 (ties: the lower validation loss) is kept, and training stops
PATIENCE epochs after it. Seeded: the same features give the same head. On one torch thread:
its small products gain nothing from more, and a team of threads spinning on a busy
machine made it thirty times slower.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

EPOCHS = 300
PATIENCE = 30
BATCH = 64
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 1e-4
LABEL_SMOOTHING = 0.1
RECIPE = {
    "head": "linear",
    "optimizer": "AdamW",
    "learning_rate": LEARNING_RATE,
    "weight_decay": WEIGHT_DECAY,
    "schedule": "cosine",
    "max_epochs": EPOCHS,
    "early_stopping": f"validation top-1, patience {PATIENCE}",
    "label_smoothing": LABEL_SMOOTHING,
    "loss_weights": "inverse class frequency",
}


def class_weights(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Each class's loss weight: total / (classes x its count), so every class weighs alike."""
    counts = torch.bincount(labels, minlength=classes).float()
    return len(labels) / (classes * counts.clamp(min=1))


def loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The recipe's loss: class-weighted cross-entropy with label smoothing."""
    return F.cross_entropy(logits, labels, weight=weights, label_smoothing=LABEL_SMOOTHING)


def score(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> tuple:
    """What early stopping compares: (top-1, -loss), larger is better."""
    top1 = float((logits.argmax(1) == labels).float().mean())
    return top1, -float(loss(logits, labels, weights))


def train(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    classes: int,
    seed: int = 0,
) -> tuple[torch.nn.Linear, dict]:
    """Train the head; return it (standardisation folded in) and its history."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(train_x, train_y, val_x, val_y, classes, seed)
    finally:
        torch.set_num_threads(threads)


def _train(train_x, train_y, val_x, val_y, classes: int, seed: int) -> tuple:
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mean = train_x.mean(0)
    spread = (train_x - mean).std().clamp(min=1e-6)
    x, vx = (train_x - mean) / spread, (val_x - mean) / spread
    weights = class_weights(train_y, classes)
    head = torch.nn.Linear(x.shape[1], classes)
    optimizer = torch.optim.AdamW(head.parameters(), LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    steps = EPOCHS * math.ceil(len(x) / BATCH)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    best, best_state, best_epoch = None, None, 0
    for epoch in range(EPOCHS):
        head.train()
        for idx in torch.randperm(len(x), generator=generator).split(BATCH):
            optimizer.zero_grad()
            loss(head(x[idx]), train_y[idx], weights).backward()
            optimizer.step()
            schedule.step()
        with torch.no_grad():
            current = score(head.eval()(vx), val_y, weights)
        if best is None or current > best:
            best, best_epoch = current, epoch
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
        elif epoch - best_epoch >= PATIENCE:
            break
    head.load_state_dict(best_state)
    history = {"epochs": epoch + 1, "best_epoch": best_epoch + 1, "val_top1": best[0]}
    return fold(head, mean, spread), history


def fold(head: torch.nn.Linear, mean: torch.Tensor, spread: torch.Tensor) -> torch.nn.Linear:
    """The layer that computes `head((x - mean) / spread)` from raw features x."""
    folded = torch.nn.Linear(head.in_features, head.out_features)
    with torch.no_grad():
        folded.weight.copy_(head.weight / spread)
        folded.bias.copy_(head.bias - folded.weight @ mean)
    return folded
