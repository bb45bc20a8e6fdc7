"""The backbone's features of every picture, computed once, in batches, on every core.

The backbone is the exported classifier without its head: the head is the last `Linear`
layer the model registers (torchvision's `fc` or `classifier[-1]`, timm's, Hugging Face's,
EfficientNet-Lite's `_fc`), replaced by an identity, so the model's output becomes that
layer's input. A new head of the same shape then makes the trained classifier, exported
as a whole. Pictures are decoded and preprocessed exactly as the service does
(`app.imaging.load`, the default `WANWU_DECODE=fast`) on a thread per core while the
backbone runs, so the features are those the served model computes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from app import imaging
from app.settings import Settings

BATCH = 32


class HeadError(ValueError):
    """The model has no replaceable classifier head; the message says what it found."""


def head_name(module: torch.nn.Module) -> str:
    """The dotted name of `module`'s classifier head: its last registered `Linear` layer."""
    names = [n for n, m in module.named_modules() if isinstance(m, torch.nn.Linear)]
    if isinstance(module, torch.jit.ScriptModule) or not names:
        raise HeadError(
            f"{type(module).__name__} has no torch.nn.Linear head to replace; train from an "
            "eager model (--arch, --from-hf), not a TorchScript file or archive"
        )
    return names[-1]


def replace_head(module: torch.nn.Module, name: str, head: torch.nn.Module) -> torch.nn.Module:
    """Put `head` where the layer `name` was (in place); return `module`."""
    parent, _, attr = name.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, attr, head)
    return module


def backbone(module: torch.nn.Module) -> tuple[torch.nn.Module, str, int]:
    """`module` with its head replaced by an identity; the head's name and input width."""
    name = head_name(module)
    width = module.get_submodule(name).in_features
    return replace_head(module, name, torch.nn.Identity()), name, width


def served(root: Path, spec: dict[str, Any], max_pixels: int) -> Callable[[str], torch.Tensor]:
    """A file of `root` -> the tensor the service makes of it (`WANWU_DECODE`'s default)."""
    policy = Settings().decode
    return lambda file: imaging.load((root / file).read_bytes(), spec, max_pixels, policy)


def batches(
    files: list[str], load: Callable[[str], torch.Tensor], size: int = BATCH
) -> Iterator[torch.Tensor]:
    """`load` each file on a thread per core, a batch ahead of the one handed out."""
    chunks = [files[i : i + size] for i in range(0, len(files), size)]
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        pending = [pool.submit(load, f) for f in chunks[0]] if chunks else []
        for k in range(len(chunks)):
            ready = [future.result() for future in pending]
            following = chunks[k + 1] if k + 1 < len(chunks) else []
            pending = [pool.submit(load, f) for f in following]
            yield torch.stack(ready)


@torch.inference_mode()
def compute(
    body: torch.nn.Module,
    root: Path,
    files: list[str],
    spec: dict[str, Any],
    max_pixels: int,
    device: torch.device,
) -> torch.Tensor:
    """The features of `files` (one row each), with a progress bar in images/s."""
    # Channels-last, as the service runs it: depthwise convolutions run twice as fast.
    body.eval().to(device, memory_format=torch.channels_last)
    rows = []
    with progress(len(files), "features") as bar:
        for batch in batches(files, served(root, spec, max_pixels)):
            batch = batch.to(device, memory_format=torch.channels_last)
            rows.append(body(batch).float().cpu().flatten(1))
            bar.update(len(batch))
    return torch.cat(rows)


def progress(total: int, step: str, unit: str = "img") -> tqdm:
    """The progress bar of a long step: images (or files) per second and the time left."""
    return tqdm(total=total, desc=step, unit=unit, dynamic_ncols=True)
