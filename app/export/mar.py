"""Read a TorchServe model archive (.mar) whose serialized file is TorchScript.

Policy (docs/MIGRATING.md; ../shared/PROTOCOLS.md section 2 has TorchServe's rules):
- Only TorchScript archives, as `torch-model-archiver --serialized-file model.pt` makes them,
  are taken. An eager archive (`modelFile`: a model.py plus a state_dict) would need its
  Python run to rebuild the model; it is refused with the steps to convert it.
- Nothing in the archive is extracted by its own names: members are read by the names the
  manifest gives, which must sit at the archive root, and copied out to paths the caller
  chooses. The copy counts what it inflates, not what the zip declares: past MAX_MODEL_BYTES,
  or past MAX_RATIO times the member's compressed size beyond its first MiB (a classifier's
  weights compress little; a bomb a thousandfold), it stops and the export keeps nothing.
- The model is TorchScript, a program: app.trust screens it before the export runs it
  (docs/RELIABILITY.md, "Trust"). The handler's Python is never imported.
- The model name and version come from MAR-INF/MANIFEST.json. index_to_name.json, when
  present, is copied out as it is: `app.labels` reads it (`{"0": "tench"}`,
  `{"0": ["n01440764", "tench"]}` or the legacy `{"object_type_names": [...]}`).
- Wanwu preprocesses as TorchServe's stock `image_classifier` does (IMAGE_CLASSIFIER_INPUT),
  which is what a custom handler must match. That is resize 256, whatever torchvision's
  weights of the same architecture say (232 for resnet50's V2): the archive's model was
  served, and so judged, with TorchServe's.
"""

from __future__ import annotations

import logging
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app import bounds, sniff
from app.artifact import sha256_file
from app.export.files import Loaded, load_torchscript
from app.export.request import ExportError
from app.labels import LabelError, read_labels

log = logging.getLogger("wanwu.export")

MANIFEST = "MAR-INF/MANIFEST.json"
LABELS = "index_to_name.json"
MAX_MODEL_BYTES = 4 << 30
MAX_METADATA_BYTES = 64 << 20
MAX_RATIO = 100  # inflated / compressed, past the first MiB of a member
CHUNK = 1 << 20
STOCK_HANDLERS = ("image_classifier", "vision_handler", "base_handler")

# TorchServe's image_classifier: Resize(256), CenterCrop(224), ToTensor, ImageNet Normalize.
IMAGE_CLASSIFIER_INPUT = {
    "resize": 256,
    "crop": 224,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "interpolation": "bilinear",
}

_CONVERT = (
    "Convert it to TorchScript where its model.py is importable: build the model and load the "
    "state_dict as the handler does, then torch.jit.script(model).save('model.pt') (or "
    "torch.jit.trace(model, torch.zeros(1, 3, 224, 224))), and rebuild the archive with "
    "`torch-model-archiver --serialized-file model.pt --handler image_classifier "
    "--extra-files index_to_name.json` and no --model-file."
)


class MarError(ValueError):
    """The archive is not one wanwu can serve; the message says why and what to do."""


@dataclass(frozen=True)
class MarArchive:
    """A checked TorchScript archive: its name, version, labels and model member."""

    path: Path
    name: str
    version: str
    handler: str
    serialized_file: str
    labels_file: str | None

    def save_model(self, dest: str | Path) -> None:
        """Copy the TorchScript model out of the archive to `dest`."""
        self._copy(self.serialized_file, dest)

    def save_labels(self, dest: str | Path) -> None:
        """Copy index_to_name.json out of the archive to `dest` (check `labels_file` first)."""
        if self.labels_file is None:
            raise MarError(f"{self.path} has no {LABELS}")
        self._copy(self.labels_file, dest)

    def _copy(self, member: str, dest: str | Path) -> None:
        """Inflate `member` to `dest`, counting the bytes as they come (the sizes a zip
        declares are the archive's word, not a bound)."""
        with _zip_errors(self.path), zipfile.ZipFile(self.path) as archive:
            info = archive.getinfo(member)
            most = min(MAX_MODEL_BYTES, max(CHUNK, info.compress_size * MAX_RATIO))
            inflated = 0
            with archive.open(info) as src, open(dest, "wb") as out:
                while chunk := src.read(CHUNK):
                    inflated += len(chunk)
                    if inflated > most:
                        raise MarError(
                            f"{self.path}: {member} inflates past {most} bytes from "
                            f"{info.compress_size} (a ratio over {MAX_RATIO}:1 or over "
                            f"{MAX_MODEL_BYTES >> 30} GiB): an archive bomb, not a model"
                        )
                    out.write(chunk)


def read_mar(path: str | Path) -> MarArchive:
    """Open and check a .mar; raise MarError naming what is wrong and how to fix it."""
    path = Path(path)
    if not path.is_file():
        raise MarError(f"TorchServe archive {path} not found")
    if sniff.kind(path) in ("torchscript", "pt2", "state_dict"):
        raise MarError(f"{path} is not a TorchServe archive: {sniff.hint(path)}")
    if not zipfile.is_zipfile(path):
        raise MarError(
            f"{path} is not a .mar (zip) archive. A tgz or no-archive export: rebuild it with "
            "torch-model-archiver's default --archive-format."
        )
    with _zip_errors(path), zipfile.ZipFile(path) as archive:
        members = {info.filename: info for info in archive.infolist()}
        manifest = _json(archive, members, MANIFEST, path)
        model = manifest.get("model") if isinstance(manifest, dict) else None
        if not isinstance(model, dict) or not all(
            isinstance(model.get(k), str) and model[k] for k in ("modelName", "modelVersion")
        ):
            raise MarError(f"{path}: {MANIFEST} lacks model.modelName or model.modelVersion.")
        if model.get("modelFile"):
            raise MarError(
                f"{path} is an eager-mode archive (modelFile {model['modelFile']!r} plus a "
                "state_dict): wanwu serves TorchScript only and never runs an archive's "
                f"Python. {_CONVERT}"
            )
        serialized = model.get("serializedFile")
        if not isinstance(serialized, str) or serialized not in members or "/" in serialized:
            raise MarError(
                f"{path}: the manifest's serializedFile {serialized!r} is not a file at the "
                "archive's root."
            )
        info = members[serialized]
        if info.file_size > MAX_MODEL_BYTES:
            raise MarError(f"{path}: {serialized} unpacks to {info.file_size} bytes; too large.")
        with archive.open(serialized) as member:
            torchscript = sniff.is_torchscript(member)
        if not torchscript:
            raise MarError(f"{path}: {serialized} is not a TorchScript file. {_CONVERT}")
        if LABELS in members and members[LABELS].file_size > MAX_METADATA_BYTES:
            raise MarError(f"{path}: {LABELS} is too large to be labels.")
    return MarArchive(
        path=path,
        name=model["modelName"],
        version=model["modelVersion"],
        handler=str(model.get("handler", "")),
        serialized_file=serialized,
        labels_file=LABELS if LABELS in members else None,
    )


@contextmanager
def _zip_errors(path: Path) -> Iterator[None]:
    """Turn what a damaged, encrypted or exotic zip raises while it is read into MarError."""
    try:
        yield
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise MarError(f"{path} is a damaged or unsupported zip archive ({exc}).") from None


def _json(
    archive: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], name: str, path: Path
) -> Any:
    if name not in members:
        raise MarError(f"{path} has no {name}: was it made by torch-model-archiver?")
    if members[name].file_size > MAX_METADATA_BYTES:
        raise MarError(f"{path}: {name} is too large to be metadata.")
    try:
        return bounds.loads_json(archive.read(name))
    except ValueError as exc:
        raise MarError(f"{path}: {name} is not valid JSON ({exc}).") from None


def load(path: Path, workdir: Path) -> Loaded:
    """The archive's TorchScript model, name and labels, with the image_classifier's input.

    The model is copied out to `workdir`, which must outlive the export.
    """
    try:
        return _load(path, workdir)
    except MarError as exc:
        raise ExportError(str(exc)) from None


def _load(path: Path, workdir: Path) -> Loaded:
    archive = read_mar(path)
    if archive.handler not in STOCK_HANDLERS:
        log.warning(
            "%s uses the handler %r, which is not run: wanwu preprocesses as TorchServe's "
            "image_classifier does (or as --resize/--crop/--mean/--std say)",
            path,
            archive.handler,
        )
    model = workdir / archive.serialized_file
    archive.save_model(model)
    labels = None
    if archive.labels_file is not None:
        archive.save_labels(workdir / archive.labels_file)
        try:
            labels = read_labels(workdir / archive.labels_file)
        except LabelError as exc:
            raise ExportError(f"{path}: {exc}") from None
    loaded = load_torchscript(model)
    loaded.provenance = {
        "source": f"torchserve-archive:{path.name}",
        "sha256": sha256_file(path),
        "kind": "torchserve-archive",
        "archive_version": archive.version,
        "trained": True,
    }
    loaded.input, loaded.labels, loaded.name = dict(IMAGE_CLASSIFIER_INPUT), labels, archive.name
    return loaded
