"""export(request): load the model, check it, and write the artifact and manifest together.

The policy: nothing is written unless everything checks out (the model runs, its labels
fit its outputs, the traced copy agrees with it); an existing artifact is never replaced
without `force`; and artifact and manifest appear together or not at all
(`app.artifact.write_artifact`).
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

from app.artifact import PT2_FORMAT, manifest_path, write_artifact
from app.export import files, formats, pt2, sources
from app.export.request import ExportError, ExportRequest


def export(
    request: ExportRequest,
    loaded: files.Loaded | None = None,
    record: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Make the artifact `request` asks for at `request.out`; return its manifest.

    `loaded` is a model built already (`app.train`'s), exported instead of the request's
    source; `record` adds its fields to the manifest (what it was trained on, and how).
    """
    out = Path(request.out)
    existing = [p for p in (out, manifest_path(out)) if p.exists()]
    if existing and not request.force:
        raise ExportError(
            f"{existing[0]} exists and is not replaced (it may be being served): pass --force "
            "to replace it, or choose another --out"
        )
    with tempfile.TemporaryDirectory() as workdir:  # a .mar's model, until it is copied
        loaded = loaded or sources.load(request, Path(workdir))
        source = _source_option(request)
        spec = formats.input_spec(request.given_input(), loaded.input, source)
        classes = formats.class_count(loaded.module, spec["crop"])
        labels = formats.resolve_labels(classes, request.labels, request.labels_zh, loaded.labels)
        if request.require_trained and not loaded.provenance["trained"]:
            raise ExportError(
                "UNTRAINED MODEL refused (--require-trained): no trained weights were loaded "
                "(see the warning above); re-run with network access or --weights PATH"
            )
        if request.precision == "int8" and not (loaded.provenance["trained"] or request.untrained):
            raise ExportError(
                "int8 of an UNTRAINED MODEL refused: its agreement with fp32 says nothing (an "
                "untrained model's answers barely depend on the image); export trained weights, "
                "or pass --allow-untrained to build it anyway"
            )
        save, fmt, package = _saver(request, loaded, spec)
        fields = formats.manifest_fields(
            name=request.name or loaded.name or out.stem,
            arch=loaded.arch,
            format=fmt,
            provenance=loaded.provenance,
            input=spec,
            labels=labels,
            scores=loaded.scores,
        )
        try:
            fields = {**fields, **package, **(record or {})}
            return write_artifact(out, save, replace=request.force, **fields)
        except FileExistsError as exc:  # appeared while this export ran
            raise ExportError(f"{exc}: pass --force to replace it") from None


def _source_option(request: ExportRequest) -> str:
    """How the source was given, for messages."""
    if request.torchscript is not None:
        return "--torchscript"
    if request.onnx is not None:
        return "--onnx"
    return f"--arch {request.arch}"


def _saver(request: ExportRequest, loaded: files.Loaded, spec: dict[str, Any]) -> tuple:
    """How the artifact is saved, its format name, and the format's own manifest fields."""
    if request.format == "pt2":
        if not isinstance(spec["crop"], int):
            raise ExportError("--format pt2 compiles square inputs: give --crop N")
        images, calibration = None, None
        if request.precision == "int8":
            try:
                images, calibration = pt2.calibration_set(request.calibrate, spec)
            except ValueError as exc:
                raise ExportError(str(exc)) from None
        save = functools.partial(
            pt2.compile_package,
            loaded.module,
            precision=request.precision,
            max_batch=request.max_batch,
            crop=spec["crop"],
            calibration=images,
            device=request.device,
            min_agreement=request.min_agreement,
        )
        fields = pt2.manifest_fields(
            request.precision, request.max_batch, request.device, calibration
        )
        return save, PT2_FORMAT, fields
    file_format = "onnx" if request.onnx is not None else "torchscript"  # what a file holds
    if loaded.file is not None and request.format == file_format:
        return formats.save_copy(loaded.file), request.format, {}  # served as it is
    if request.format == "onnx":
        return formats.save_onnx(loaded.module, spec["crop"]), "onnx", {}
    return formats.save_traced(loaded.module, spec["crop"]), "torchscript-trace", {}
