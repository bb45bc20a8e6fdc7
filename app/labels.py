"""ImageNet-1K class names, in class-index order, in every language the API offers."""

from __future__ import annotations

import functools
from pathlib import Path

from torchvision.models import ResNet18_Weights

LANGUAGES = ("en", "zh")
ZH_FILE = Path(__file__).with_name("labels_zh.txt")


@functools.cache
def names(lang: str) -> tuple[str, ...]:
    """Return the 1000 class names in `lang` ('en' from torchvision, 'zh' our own)."""
    if lang == "en":
        return tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    if lang == "zh":
        return tuple(ZH_FILE.read_text(encoding="utf-8").splitlines())
    raise KeyError(f"no labels in {lang!r}; available: {', '.join(LANGUAGES)}")
