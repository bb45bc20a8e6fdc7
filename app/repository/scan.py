"""The repository on disk: model folders, their numbered versions, and each version's artifact.

Policy:
- `WANWU_MODEL_REPOSITORY=DIR`: each folder of DIR is a model, named for the folder; each of its
  numbered subfolders is a version holding one artifact (`.pt`, `.pt2` or `.onnx`, manifest beside
  it), as `python -m app.export` writes it, or a Triton model folder (`config.pbtxt`,
  app.repository.triton) beside them. The highest version serves (a Triton model's
  `version_policy` may pick another) unless WANWU_PINNED_VERSIONS names one. Files and hidden
  folders in DIR are ignored; a model folder without a version, or a version without exactly
  one artifact, stops start-up with its path.
- Version folders are numbers, ordered as numbers ("10" after "9") and named without leading
  zeros ("07" is version 7); model names are bounded (`NAME`) before the file system sees them.
"""

from __future__ import annotations

import re
from pathlib import Path

from app.artifact import ArtifactError, manifest_path
from app.repository import triton

ARTIFACT_SUFFIXES = (".pt", ".pt2", ".onnx")
# A model name is a URL path segment in every protocol, and a folder name: bounded here, a
# client's longer name is refused before the file system sees it (ENAMETOOLONG).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
NAME_RULE = "letters, digits, '.', '_' or '-' (at most 128, the first a letter or digit)"


def version_name(text: str) -> str | None:
    """A version number as it is named ("07" is "7"), or None if `text` is not one: ASCII
    digits, compared as text (a client's may be long; it is never converted)."""
    if not (text.isascii() and text.isdigit()):
        return None
    return text.lstrip("0") or "0"


def versions(folder: Path) -> dict[str, Path]:
    """The numbered version folders of one model folder, by version, in numeric order."""
    found = {version_name(p.name): p for p in folder.iterdir() if p.is_dir()}
    found.pop(None, None)
    return dict(sorted(found.items(), key=lambda item: (len(item[0]), item[0])))


def model_folders(root: Path) -> list[Path]:
    """The folders of the repository at `root` that name a model, by name."""
    return sorted(p for p in root.iterdir() if p.is_dir() and NAME.fullmatch(p.name))


def scan(root: str | Path) -> dict[str, tuple[str, Path]]:
    """Map each model of the repository at `root` to (its highest version, that artifact)."""
    root = Path(root)
    if not root.is_dir():
        raise ArtifactError(f"WANWU_MODEL_REPOSITORY={root} is not a folder")
    found = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not NAME.fullmatch(folder.name):
            raise ArtifactError(f"{folder}: a model folder's name must be {NAME_RULE}")
        numbered = versions(folder)
        if not numbered:
            raise ArtifactError(
                f"{folder} has no version folder: put what `python -m app.export` wrote "
                f"(the artifact and its manifest) in {folder}/1/"
            )
        newest = list(numbered)[-1]
        if triton.is_triton(folder):
            newest = triton.serving_version(folder, triton.read_config(folder), numbered)
        found[folder.name] = (newest, artifact(numbered[newest]))
    if not found:
        raise ArtifactError(f"WANWU_MODEL_REPOSITORY={root} holds no model folder")
    return found


def artifact(version_dir: Path) -> Path:
    """The one artifact (with its manifest beside it) in a version folder; in a Triton model
    folder, the model file its config names."""
    if triton.is_triton(version_dir.parent):
        config = triton.read_config(version_dir.parent)
        return triton.model_file(version_dir.parent, version_dir.name, config)
    candidates = [
        p
        for p in sorted(version_dir.iterdir())
        if p.suffix in ARTIFACT_SUFFIXES and manifest_path(p).is_file()
    ]
    if len(candidates) != 1:
        raise ArtifactError(
            f"{version_dir} must hold exactly one .pt, .pt2 or .onnx artifact with its .json "
            f"manifest beside it; found {len(candidates)}"
        )
    return candidates[0]
