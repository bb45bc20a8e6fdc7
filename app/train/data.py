"""A folder of photos -> classes, seeded splits, and every file left out with the reason.

Layout: `DATA/CLASS/...` (a folder per class, its name the label, pictures at any depth), or
`DATA/train/`, `DATA/val/` and `DATA/test/`, each laid out that way.

Policy:
- Every file is read and decoded by the service's own code (`app.imaging`: the formats it
  serves, EXIF orientation, HEIC and AVIF), so what trains is what it will serve. A file it
  refuses (not an image, corrupt, too large), an empty or unreadable file, a hidden file or
  folder (`.ipynb_checkpoints`, `.DS_Store`) and a file outside a class folder are skipped
  and listed with the reason, never a traceback.
- A class with fewer than MIN_IMAGES usable pictures, or none in one of the splits, is
  refused before anything is computed, naming the class.
- Without split folders each class is split SPLIT (train:val:test), seeded; copies of one
  picture (the same bytes) go to the same split. The same picture in two splits (possible
  with given split folders, or across classes) is reported as leakage.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app import imaging
from app.errors import ApiError
from app.train.features import progress

SPLITS = ("train", "val", "test")
SPLIT = (5, 3, 2)
MIN_IMAGES = 10  # 5 : 3 : 2 of ten leaves two test pictures per class
LABELS_ZH = "labels_zh.txt"  # Chinese names, one a line, in the classes' (sorted) order


class DataError(ValueError):
    """The folder cannot be trained on as it is; the message says what to change."""


@dataclass(frozen=True)
class Item:
    """One usable picture: where it is (relative to DATA), its class, split and content hash."""

    file: str
    label: int
    split: str
    sha256: str


@dataclass
class Dataset:
    """What a folder holds, as training uses it (plain data, saved between stages)."""

    root: str
    classes: list[str]
    items: list[Item]
    skipped: list[dict[str, str]] = field(default_factory=list)
    leakage: list[dict[str, Any]] = field(default_factory=list)

    def split(self, name: str) -> list[Item]:
        return [item for item in self.items if item.split == name]

    def counts(self) -> dict[str, dict[str, int]]:
        """Pictures per class in each split."""
        return {
            s: {c: sum(i.label == k for i in self.split(s)) for k, c in enumerate(self.classes)}
            for s in SPLITS
        }

    def fingerprint(self) -> dict[str, dict[str, Any]]:
        """Each split's file count and one hash over its pictures' contents and labels."""
        result = {}
        for s in SPLITS:
            lines = sorted(f"{i.sha256} {self.classes[i.label]}\n" for i in self.split(s))
            digest = hashlib.sha256("".join(lines).encode()).hexdigest()
            result[s] = {"files": len(lines), "sha256": digest}
        return result

    def to_dict(self) -> dict[str, Any]:
        items = [[i.file, i.label, i.split, i.sha256] for i in self.items]
        return {**vars(self), "items": items}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Dataset:
        return cls(**{**data, "items": [Item(*row) for row in data["items"]]})


def scan(
    root: Path,
    split: tuple[int, int, int] = SPLIT,
    seed: int = 0,
    max_pixels: int = 40_000_000,
    min_images: int = MIN_IMAGES,
) -> Dataset:
    """Read the folder at `root`; raise DataError if it cannot be trained on."""
    if not root.is_dir():
        raise DataError(f"{root} is not a folder: give a folder with a folder per class")
    skipped: list[dict[str, str]] = []
    given = [s for s in SPLITS if (root / s).is_dir()]
    if given and given != list(SPLITS):
        missing = ", ".join(f"{s}/" for s in SPLITS if s not in given)
        raise DataError(f"{root} has split folders but lacks {missing}: give all three or none")
    tops = [root / s for s in SPLITS] if given else [root]
    found: dict[str, list[tuple[str, str, str]]] = {}  # class -> (file, split, sha256)
    paths = [(top, path) for top in tops for path in sorted(top.rglob("*"))]
    with progress(len(paths), "data", "file") as bar:
        for top, path in paths:
            rel = path.relative_to(root).as_posix()
            why = _unusable(path, top, max_pixels)
            if why is None:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                label = path.relative_to(top).parts[0]
                found.setdefault(label, []).append((rel, top.name if given else "", digest))
            elif why:
                skipped.append({"file": rel, "reason": why})
            bar.update()
    classes = sorted(found)
    if len(classes) < 2:
        raise DataError(f"{root} has {len(classes)} class folders with pictures; give at least 2")
    items = []
    for label, name in enumerate(classes):
        files = found[name]
        if len(files) < min_images:
            raise DataError(
                f"class {name!r} has {len(files)} usable pictures; each class needs at least "
                f"{min_images}: add pictures or remove the folder"
            )
        chosen = _split(files, split, seed) if not given else [f[1] for f in files]
        for (rel, _, digest), s in zip(files, chosen, strict=True):
            items.append(Item(rel, label, s, digest))
    data = Dataset(str(root), classes, items, skipped, _leakage(items))
    for s, per_class in data.counts().items():
        empty = [c for c, n in per_class.items() if n == 0]
        if empty:
            raise DataError(f"class {empty[0]!r} has no pictures in {s}: add some there")
    return data


def _unusable(path: Path, top: Path, max_pixels: int) -> str | None:
    """Why `path` is left out ("" when it is not a file to mention), or None if usable."""
    parts = path.relative_to(top).parts
    if any(p.startswith(".") for p in parts):
        hidden = next(p for p in parts if p.startswith("."))
        # List a hidden folder once, by itself, not each file in it.
        return "hidden" if path.name == hidden else ""
    if path.is_dir():
        return ""
    if len(parts) == 1:
        return "" if path.name == LABELS_ZH else "not in a class folder"
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    if not data:
        return "empty file"
    try:
        imaging.decode(data, max_pixels)
    except ApiError as exc:
        return exc.message
    return None


def _split(files: list[tuple[str, str, str]], ratio: tuple[int, ...], seed: int) -> list[str]:
    """Each file's split: copies of one picture together, the groups shuffled with `seed`."""
    groups = sorted({digest for _, _, digest in files})
    random.Random(seed).shuffle(groups)
    counts = [sum(1 for f in files if f[2] == g) for g in groups]
    total, where, done = len(files), {}, 0
    bounds = [total * sum(ratio[: k + 1]) / sum(ratio) for k in range(len(ratio))]
    for group, count in zip(groups, counts, strict=True):
        # The split whose share the group's middle falls in.
        middle = done + count / 2
        where[group] = SPLITS[next(k for k, b in enumerate(bounds) if middle <= b)]
        done += count
    return [where[digest] for _, _, digest in files]


def _leakage(items: list[Item]) -> list[dict[str, Any]]:
    """Pictures (by content) found in more than one split."""
    by_hash: dict[str, list[Item]] = {}
    for item in items:
        by_hash.setdefault(item.sha256, []).append(item)
    return [
        {"sha256": digest, "files": {i.file: i.split for i in group}}
        for digest, group in sorted(by_hash.items())
        if len({i.split for i in group}) > 1
    ]
