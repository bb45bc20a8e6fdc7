"""TorchServe archives made by the real torch-model-archiver: what is taken, what is refused."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from app.mar import MarError, read_mar
from tests.conftest import TinyNet


def archive(folder: Path, *args: str, name: str = "resnet-18") -> Path:
    """Run torch-model-archiver as TorchServe's docs do; return the archive it wrote."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "model_archiver.model_packaging",
            "--model-name",
            name,
            "--version",
            "1.0",
            "--handler",
            "image_classifier",
            "--export-path",
            str(folder),
            *args,
        ],
        cwd=folder,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return next(folder.glob(f"{name}.*"))


@pytest.fixture
def labels_file(tmp_path: Path) -> Path:
    """TorchServe's ImageNet style: index -> [wnid, name]."""
    path = tmp_path / "index_to_name.json"
    path.write_text(json.dumps({str(i): [f"n{i:08d}", f"class {i}"] for i in range(1000)}))
    return path


def test_a_torchscript_archive_gives_name_version_labels_and_model(
    tiny_model_path, labels_file, tmp_path
):
    mar = archive(
        tmp_path,
        "--serialized-file",
        str(tiny_model_path),
        "--extra-files",
        str(labels_file),
    )
    model = read_mar(mar)
    assert (model.name, model.version, model.handler) == ("resnet-18", "1.0", "image_classifier")
    assert model.labels is not None and len(model.labels) == 1000
    assert model.labels[:2] == ["class 0", "class 1"]
    model.save_model(tmp_path / "out.pt")
    assert (tmp_path / "out.pt").read_bytes() == tiny_model_path.read_bytes()
    loaded = torch.jit.load(str(tmp_path / "out.pt"))
    assert loaded(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)


def test_without_index_to_name_there_are_no_labels(tiny_model_path, tmp_path):
    mar = archive(tmp_path, "--serialized-file", str(tiny_model_path), name="plain")
    assert read_mar(mar).labels is None


def test_an_eager_archive_is_refused_with_how_to_convert(tmp_path):
    weights = tmp_path / "weights.pth"
    torch.save(TinyNet().state_dict(), weights)
    model_file = tmp_path / "model.py"
    model_file.write_text("import torch\n\nclass Net(torch.nn.Module):\n    pass\n")
    mar = archive(tmp_path, "--serialized-file", str(weights), "--model-file", str(model_file))
    with pytest.raises(MarError, match="eager-mode") as error:
        read_mar(mar)
    assert "torch.jit.script" in str(error.value) and "--serialized-file model.pt" in str(
        error.value
    )


def test_a_state_dict_without_model_file_is_not_torchscript(tmp_path):
    weights = tmp_path / "weights.pt"
    torch.save(TinyNet().state_dict(), weights)
    mar = archive(tmp_path, "--serialized-file", str(weights))
    with pytest.raises(MarError, match="not a TorchScript file"):
        read_mar(mar)


def test_a_tgz_archive_is_refused(tiny_model_path, tmp_path):
    mar = archive(tmp_path, "--serialized-file", str(tiny_model_path), "--archive-format", "tgz")
    with pytest.raises(MarError, match="not a .mar"):
        read_mar(mar)


def handmade(tmp_path: Path, manifest: object, **files: bytes) -> Path:
    path = tmp_path / "hand.mar"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest))
        for name, data in files.items():
            z.writestr(name.replace("__", "/"), data)
    return path


def test_bad_manifests_and_labels_are_refused(tiny_model_path, tmp_path):
    script = tiny_model_path.read_bytes()
    good = {"modelName": "m", "modelVersion": "1", "serializedFile": "m.pt"}
    with pytest.raises(MarError, match="modelName"):
        read_mar(handmade(tmp_path, {"model": {"modelVersion": "1"}}, **{"m.pt": script}))
    outside = {**good, "serializedFile": "../m.pt"}
    with pytest.raises(MarError, match="root"):
        read_mar(handmade(tmp_path, {"model": outside}, **{"m.pt": script}))
    with pytest.raises(MarError, match="without gaps"):
        labels = json.dumps({"0": "a", "2": "b"}).encode()
        read_mar(
            handmade(tmp_path, {"model": good}, **{"m.pt": script, "index_to_name.json": labels})
        )
    legacy = json.dumps({"object_type_names": ["a", "b"]}).encode()
    model = read_mar(
        handmade(tmp_path, {"model": good}, **{"m.pt": script, "index_to_name.json": legacy})
    )
    assert model.labels == ["a", "b"]
