"""The backends' table (app/backends/__init__.py): each artifact kind has one backend, and it
declares what app/backends/base.py asks of its capabilities."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app import artifact, backends

IMAGES = ("load", "prepare", "resolve_precision", "weights", "input_dtype", "__call__")
TENSORS = ("load_tensors", "prepare", "run")
REPORTED = ("format", "runtime", "platform", "runner")


@pytest.mark.parametrize(
    "kind", [artifact.TORCHSCRIPT, artifact.PT2, artifact.ONNX, artifact.LIBTORCH]
)
def test_every_kind_has_a_backend_that_declares_the_contract(kind):
    backend = backends.BACKENDS[kind]
    assert all(hasattr(backend, name) for name in REPORTED)
    assert backend.images or backend.tensors  # it serves something
    for capability, methods in (("images", IMAGES), ("tensors", TENSORS)):
        if getattr(backend, capability):
            missing = [m for m in methods if not callable(getattr(backend, m, None))]
            assert not missing, f"{backend.__name__} serves {capability} without {missing}"


def test_a_manifest_names_its_kind_and_an_older_one_is_torchscript():
    assert artifact.kind({"format": artifact.PT2_FORMAT}) == artifact.PT2
    assert artifact.kind({"format": "onnx"}) == artifact.ONNX
    for older in ({"format": "torchscript-trace"}, {"format": "torchscript"}, {}):
        assert artifact.kind(older) == artifact.TORCHSCRIPT


def test_each_triton_platform_has_one_tensor_backend():
    platforms = [b.platform for b in backends.BACKENDS.values() if b.tensors]
    assert sorted(platforms) == ["onnxruntime_onnx", "pytorch_libtorch"]


def test_the_export_library_never_loads_its_command_line():
    code = (
        "import sys; import app.export.library, app.export.mar; "
        "print('app.export.cli' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
