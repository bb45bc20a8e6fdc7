"""Class names: label files, the manifest's labels, and the project's ImageNet-1K set.

A model's labels live in its manifest, one list per language, in class-index order. Manifests
written before labels were embedded say `"labels": "imagenet-1k"`: the ImageNet-1K names
below (English from torchvision, Chinese our own).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torchvision.models import ResNet18_Weights

from app import bounds

# The largest class index read from a labels file (no model has a billion classes).
_MOST_INDEX = 10**9

LANGUAGES = ("en", "zh")  # every language a model may carry labels in
LANGUAGE_NAMES = {"en": "English", "zh": "Chinese"}
IMAGENET = "imagenet-1k"
ZH_FILE = Path(__file__).with_name("labels_zh.txt")


class LabelError(ValueError):
    """A label file or a manifest's labels are malformed."""


@functools.cache
def names(lang: str) -> tuple[str, ...]:
    """Return the 1000 ImageNet-1K class names in `lang` ('en' torchvision's, 'zh' our own)."""
    if lang == "en":
        return tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    if lang == "zh":
        return tuple(ZH_FILE.read_text(encoding="utf-8").splitlines())
    raise KeyError(f"no labels in {lang!r}; available: {', '.join(LANGUAGES)}")


def imagenet() -> dict[str, list[str]]:
    """The ImageNet-1K labels in every language we have them."""
    return {lang: list(names(lang)) for lang in LANGUAGES}


def read_labels(path: str | Path) -> list[str]:
    """Read class names in class-index order from a text or JSON file.

    Text: one label per line (blank lines at the end are ignored). JSON (a `.json` file):
    TorchServe's `index_to_name.json`, `{"0": "cat", "1": "dog"}`, whose values may also be
    `[wnid, name]` lists (the name is used), or a plain list of names.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelError(f"cannot read labels file {path}: {exc}") from exc
    if path.suffix.lower() == ".json":
        try:
            return parse_json(bounds.loads_json(text.encode()), str(path))
        except ValueError as exc:
            raise LabelError(f"{path}: {exc}") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return _checked([line.strip() for line in lines], str(path))


def parse_json(data: Any, where: str = "labels") -> list[str]:
    """Turn a JSON list of names, or an index -> name (or [wnid, name]) object, into a list."""
    if isinstance(data, dict) and list(data) == ["object_type_names"]:
        data = data["object_type_names"]  # TorchServe's legacy index_to_name.json
    if isinstance(data, list):
        return _checked([_name(value, str(i)) for i, value in enumerate(data)], where)
    if not isinstance(data, dict):
        raise LabelError(f'{where}: expected a JSON object {{"0": "name", ...}} or a list')
    indexed = {}
    for key, value in data.items():
        try:  # a file's keys: checked as text before any is converted
            indexed[bounds.parse_count(key.strip(), _MOST_INDEX)] = value
        except ValueError:
            raise LabelError(f"{where}: key {key!r} is not a class index") from None
    if sorted(indexed) != list(range(len(indexed))):
        missing = sorted(set(range(len(indexed))) - set(indexed))  # bounded by the key count
        raise LabelError(
            f"{where}: class indices must run 0..{len(indexed) - 1} without gaps"
            + (f"; missing {missing[:5]}" if missing else "")
        )
    return _checked([_name(indexed[i], str(i)) for i in range(len(indexed))], where)


def _name(value: Any, index: str) -> str:
    """A label value: a string, or a [wnid, name] list whose last item is the name."""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        value = value[-1]
    if not isinstance(value, str):
        raise LabelError(f"label {index} is {value!r}: expected a string or a [wnid, name] list")
    return value.strip()


def _checked(labels: list[str], where: str) -> list[str]:
    if not labels:
        raise LabelError(f"{where} has no labels")
    empty = [i for i, label in enumerate(labels) if not label]
    if empty:
        raise LabelError(f"{where}: label {empty[0]} is empty (line {empty[0] + 1})")
    return labels


def from_manifest(manifest: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """The labels of a manifest by language, checked against its class count."""
    raw = manifest.get("labels", IMAGENET)
    if raw == IMAGENET:  # the manifests written before labels were embedded
        raw = imagenet()
    if not isinstance(raw, dict) or "en" not in raw:
        raise LabelError("the manifest's labels must map languages to lists, with 'en' among them")
    unknown = set(raw) - set(LANGUAGES)
    if unknown:
        raise LabelError(f"the manifest has labels in {sorted(unknown)}; known: {LANGUAGES}")
    count = manifest.get("num_classes", len(raw["en"]))
    result = {}
    for lang in LANGUAGES:
        if lang in raw:
            result[lang] = tuple(parse_json(raw[lang], f"manifest labels[{lang!r}]"))
            if len(result[lang]) != count:
                raise LabelError(
                    f"the manifest has {len(result[lang])} {lang} labels for {count} classes"
                )
    return result
