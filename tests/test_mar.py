"""TorchServe archives made by the real torch-model-archiver: what is taken, what is refused."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch

from app.artifact import read_manifest
from app.export.mar import IMAGE_CLASSIFIER_INPUT, MarError, read_mar
from app.labels import parse_json
from benchkit.images import image_bytes
from tests.conftest import TinyNet, archive


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
        tmp_path, "--serialized-file", str(tiny_model_path), "--extra-files", str(labels_file)
    )
    model = read_mar(mar)
    assert (model.name, model.version, model.handler) == ("resnet-18", "1.0", "image_classifier")
    assert model.labels_file == "index_to_name.json"
    model.save_model(tmp_path / "out.pt")
    assert (tmp_path / "out.pt").read_bytes() == tiny_model_path.read_bytes()


def test_without_index_to_name_there_is_no_labels_file(tiny_model_path, tmp_path):
    mar = archive(tmp_path, "--serialized-file", str(tiny_model_path), name="plain")
    assert read_mar(mar).labels_file is None


def test_export_from_mar_serves_the_archive_under_its_name_and_labels(
    tiny_model_path, labels_file, tmp_path
):
    from app.engine import Engine
    from app.export.cli import main as export
    from app.model import Classifier
    from app.web import create_app
    from tests.conftest import make_settings

    mar = archive(
        tmp_path, "--serialized-file", str(tiny_model_path), "--extra-files", str(labels_file)
    )
    out = tmp_path / "imported.pt"
    assert export(["--from-mar", str(mar), "--out", str(out)]) == 0
    manifest = read_manifest(out)
    assert manifest["name"] == "resnet-18" and manifest["input"] == IMAGE_CLASSIFIER_INPUT
    assert manifest["labels"]["en"][:2] == ["class 0", "class 1"]
    assert manifest["weights"]["kind"] == "torchserve-archive"
    assert manifest["weights"]["archive_version"] == "1.0"
    # A TorchServe client's call, unchanged, against the imported model.
    settings = make_settings(out)
    engine = Engine(Classifier.load(out), settings)
    engine.start()
    try:
        assert engine.batcher.wait_ready(60)
        client = create_app(settings, engine).test_client()
        answer = client.put("/predictions/resnet-18", data=image_bytes()).get_json()
        assert len(answer) == 5 and all(label.startswith("class ") for label in answer)
        # Its clients' versioned URL keeps working.
        assert client.put("/predictions/resnet-18/1.0", data=image_bytes()).get_json() == answer
    finally:
        engine.stop(timeout=10)


def test_export_refuses_an_eager_archive_and_writes_nothing(tmp_path, caplog):
    from app.export.cli import main as export

    weights = tmp_path / "weights.pth"
    torch.save(TinyNet().state_dict(), weights)
    model_file = tmp_path / "model.py"
    model_file.write_text("import torch\n\nclass Net(torch.nn.Module):\n    pass\n")
    mar = archive(tmp_path, "--serialized-file", str(weights), "--model-file", str(model_file))
    assert export(["--from-mar", str(mar), "--out", str(tmp_path / "m.pt")]) == 1
    assert "eager-mode" in caplog.text and "torch.jit.script" in caplog.text
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "m.json").exists()


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
            z.writestr(name, data)
    return path


def test_bad_manifests_are_refused(tiny_model_path, tmp_path):
    script = tiny_model_path.read_bytes()
    with pytest.raises(MarError, match="modelName"):
        read_mar(handmade(tmp_path, {"model": {"modelVersion": "1"}}, **{"m.pt": script}))
    outside = {"modelName": "m", "modelVersion": "1", "serializedFile": "../m.pt"}
    with pytest.raises(MarError, match="root"):
        read_mar(handmade(tmp_path, {"model": outside}, **{"m.pt": script}))
    broken = tmp_path / "broken.mar"
    with zipfile.ZipFile(broken, "w") as z:
        z.writestr("MAR-INF/MANIFEST.json", "{")
    with pytest.raises(MarError, match="not valid JSON"):
        read_mar(broken)


def test_the_legacy_object_type_names_labels_are_read():
    assert parse_json({"object_type_names": ["a", "b"]}) == ["a", "b"]


def test_a_hostile_archive_is_a_mar_error_not_a_crash(tmp_path):
    deep = tmp_path / "deep.mar"
    with zipfile.ZipFile(deep, "w") as z:
        z.writestr("MAR-INF/MANIFEST.json", "[" * 200_000)
    with pytest.raises(MarError, match="not valid JSON"):
        read_mar(deep)
    # An end record that zipfile.is_zipfile accepts, over a central directory that is junk.
    damaged = tmp_path / "damaged.mar"
    end = b"PK\x05\x06" + (0).to_bytes(4, "little") + (1).to_bytes(2, "little") * 2
    damaged.write_bytes(b"x" * 46 + end + (46).to_bytes(4, "little") + bytes(6))
    assert zipfile.is_zipfile(damaged)
    with pytest.raises(MarError, match="damaged or unsupported"):
        read_mar(damaged)


def test_labels_with_an_enormous_index_are_refused_without_building_it():
    with pytest.raises(ValueError, match="is not a class index"):
        parse_json({"0": "a", "9" * 5000: "b"})
    with pytest.raises(ValueError, match="without gaps; missing \\[1\\]"):
        parse_json({"0": "a", "99999999": "b"})
