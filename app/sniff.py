"""What a model file is, read from its contents, and the command that makes it servable.

The service serves a wanwu artifact (TorchScript or .pt2, with a manifest beside it); users
arrive with state_dicts, TorchScript files, TorchServe archives and Hugging Face folders.
Every message about a wrong file names the command for the file it is (`hint`), so that a
`.mar` given to WANWU_MODEL or a TorchScript file given to --weights says what to run.
Only zip directories and headers are read: nothing is unpickled or executed.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import IO

EXPORT = "python -m app.export"


def kind(path: str | Path) -> str:
    """One of torchscript, pt2, mar, state_dict, huggingface, missing or unknown."""
    path = Path(path)
    if path.is_dir():
        return "huggingface" if (path / "config.json").is_file() else "unknown"
    if not path.is_file():
        return "missing"
    if not zipfile.is_zipfile(path):
        # torch.save's legacy (pre-1.6) format and safetensors files are weights, not models.
        return "state_dict" if path.suffix in (".pth", ".bin", ".safetensors") else "unknown"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:  # an end record, but a damaged directory
        return "unknown"
    return zip_kind(names)


def zip_kind(names: list[str]) -> str:
    """The kind of a zip file from its member names (see `kind`)."""
    if "MAR-INF/MANIFEST.json" in names:
        return "mar"
    if any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names):
        return "torchscript"
    if any(n.endswith("archive_format") for n in names) or any("/aotinductor/" in n for n in names):
        return "pt2"
    if any(n.endswith("/data.pkl") for n in names):
        return "state_dict"
    return "unknown"


def is_torchscript(member: IO[bytes]) -> bool:
    """Whether an open (seekable) file is a TorchScript zip; nothing is loaded whole."""
    if not zipfile.is_zipfile(member):
        return False
    try:
        with zipfile.ZipFile(member) as inner:
            return zip_kind(inner.namelist()) == "torchscript"
    except zipfile.BadZipFile:  # an end record, but a damaged directory
        return False


def hint(path: str | Path, out: str = "models/NAME.pt") -> str:
    """The command that turns `path` into a servable artifact, as a sentence."""
    path = Path(path)
    what = kind(path)
    if what in ("torchscript", "pt2") and path.with_suffix(".json").is_file():
        return f"it is already a wanwu artifact: serve it with `WANWU_MODEL={path} make serve`"
    if what == "mar":
        return (
            f"it is a TorchServe archive: import it with `{EXPORT} --from-mar {path} --out {out}`"
        )
    if what == "torchscript":
        return (
            f"it is a TorchScript file: wrap it with `{EXPORT} --torchscript {path} --resize N "
            f"--crop N --mean R,G,B --std R,G,B --out {out}`"
        )
    if what == "state_dict":
        return (
            f"it looks like a state_dict (weights only): export it with `{EXPORT} --arch ARCH "
            f"--weights {path} --out {out}` (ARCH: a torchvision name, timm:NAME or "
            "module:factory)"
        )
    if what == "huggingface":
        return f"it is a Hugging Face checkpoint: export it with `{EXPORT} --from-hf {path}`"
    if what == "pt2":
        return f"it is a .pt2 package: export one with `{EXPORT} --format pt2 --out {out}`"
    return f"export a model with `{EXPORT}` (see `{EXPORT} --help`)"
