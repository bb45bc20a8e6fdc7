"""timm, Hugging Face and factory models: exported with one command, served like their own
libraries run them (real Gunicorn over HTTP), and their preprocessing reproduced exactly.
"""

from __future__ import annotations

import io
import json

import pytest
import requests
import torch
from PIL import Image

from app import imaging
from app.artifact import read_manifest
from app.export.cli import main as export
from benchkit.images import image_bytes, sample_photos

timm = pytest.importorskip("timm", reason="timm is not installed: pip install 'wanwu[models]'")
transformers = pytest.importorskip(
    "transformers", reason="transformers is not installed: pip install 'wanwu[models]'"
)

# Pictures of several shapes and sizes (the resize and crop must both matter).
SIZES = [(320, 240), (240, 320), (500, 180), (97, 131), (1024, 768)]


def pictures() -> list[bytes]:
    photos = [p.read_bytes() for p in sample_photos()[::25]]
    return photos + [image_bytes("PNG", size, seed=i) for i, size in enumerate(SIZES)]


def served_scores(url: str, images: list[bytes], topk: int) -> list[dict[str, float]]:
    """label -> served score, for each image, every class."""
    answers = []
    for data in images:
        response = requests.post(
            f"{url}/predict?topk={topk}", files={"file": ("x", data)}, timeout=60
        )
        assert response.status_code == 200, response.text
        answers.append({p["label"]: p["score"] for p in response.json()["predictions"]})
    return answers


def rgb(data: bytes) -> Image.Image:
    return imaging.to_rgb(Image.open(io.BytesIO(data)))


# -- Hugging Face ---------------------------------------------------------------------------------

LABELS = ["cat", "dog", "eel", "fox"]


def save_vit(folder, **config) -> None:
    """A tiny seeded ViT and its image processor, as `save_pretrained` writes them."""
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(
        image_size=[32, 48], patch_size=8, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=37, num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)}, **config,
    )  # fmt: skip
    transformers.ViTForImageClassification(cfg).save_pretrained(folder)
    transformers.ViTImageProcessor(
        size={"height": 32, "width": 48}, resample=3, image_mean=[0.4, 0.5, 0.6],
        image_std=[0.2, 0.25, 0.3],
    ).save_pretrained(folder)  # fmt: skip


@pytest.mark.integration
def test_a_hugging_face_checkpoint_answers_over_http_like_its_pipeline(tmp_path, gunicorn):
    folder, out = tmp_path / "vit-pets", tmp_path / "pets.pt"
    save_vit(folder, problem_type="multi_label_classification")
    assert export(["--from-hf", str(folder), "--out", str(out)]) == 0
    manifest = read_manifest(out)
    assert manifest["scores"] == "sigmoid" and manifest["labels"]["en"] == LABELS
    assert manifest["input"]["resize"] == [32, 48] and manifest["input"]["crop"] == [32, 48]
    assert manifest["input"]["interpolation"] == "bicubic"
    images = pictures()
    with gunicorn(workers=1, model=out, precision="fp32", decode="exact") as server:
        served = served_scores(server.url, images, topk=len(LABELS))
    pipe = transformers.pipeline("image-classification", model=str(folder), device="cpu")
    for data, scores in zip(images, served, strict=True):
        expected = {r["label"]: r["score"] for r in pipe(rgb(data), top_k=None)}
        assert scores.keys() == expected.keys()
        assert sum(scores.values()) > 1.05 or sum(expected.values()) <= 1.05  # sigmoid, not softmax
        for label, score in expected.items():
            assert scores[label] == pytest.approx(score, abs=2e-3), (label, scores, expected)


@pytest.mark.parametrize(
    "processor",
    [
        # ViT-style: a fixed size, aspect not kept
        lambda: transformers.ViTImageProcessor(size={"height": 40, "width": 56}, resample=2),
        # ConvNext-style: shortest_edge with crop_pct below 384, and a plain resize above
        lambda: transformers.ConvNextImageProcessor(size={"shortest_edge": 64}, crop_pct=0.875),
        lambda: transformers.ConvNextImageProcessor(size={"shortest_edge": 384}),
        # size / crop_size pairs (ResNet-like BiT and EfficientNet processors)
        lambda: transformers.BitImageProcessor(
            size={"shortest_edge": 72}, crop_size={"height": 64, "width": 64}
        ),
    ],
    ids=["vit", "convnext-crop-pct", "convnext-384", "bit-size-crop"],
)
def test_hugging_face_preprocessing_is_reproduced(processor):
    from app.export.ecosystem import hf_input

    proc = processor()
    spec = hf_input(proc)
    for data in pictures():
        picture = rgb(data)
        expected = proc(picture, return_tensors="pt")["pixel_values"][0]
        ours = imaging.preprocess(picture, **spec)
        assert ours.shape == expected.shape
        # The same geometry and filter; Hugging Face resizes a tensor where we resize the PIL
        # picture, so a few pixels round to the next 8-bit level (measured mean: under 0.003).
        assert float((ours - expected).abs().mean()) < 0.005, type(proc).__name__


# -- timm -----------------------------------------------------------------------------------------


@pytest.mark.integration
def test_a_timm_fine_tune_answers_like_timms_eval_transform_and_model(tmp_path, gunicorn):
    torch.manual_seed(1)
    model = timm.create_model("test_vit", num_classes=len(LABELS)).eval()
    weights, names = tmp_path / "pets-timm.pth", tmp_path / "labels.txt"
    torch.save(model.state_dict(), weights)
    names.write_text("\n".join(LABELS) + "\n")
    out = tmp_path / "pets.pt"
    assert export(["--arch", "timm:test_vit", "--weights", str(weights), "--labels", str(names),
                   "--out", str(out)]) == 0  # fmt: skip
    manifest = read_manifest(out)
    assert manifest["arch"] == "timm:test_vit" and manifest["weights"]["kind"] == "fine-tune"
    # test_vit's pretrained_cfg: 160 px, crop_pct 0.95, bicubic, mean = std = 0.5.
    assert manifest["input"] == {
        "resize": 168, "crop": 160, "mean": [0.5] * 3, "std": [0.5] * 3,
        "interpolation": "bicubic",
    }  # fmt: skip
    images = pictures()
    with gunicorn(workers=1, model=out, precision="fp32", decode="exact") as server:
        served = served_scores(server.url, images, topk=len(LABELS))
    config = timm.data.resolve_data_config({}, model=model)
    transform = timm.data.create_transform(**config)
    with torch.inference_mode():
        batch = torch.stack([transform(rgb(data)) for data in images])
        expected = model(batch).softmax(1)
    for row, scores in zip(expected, served, strict=True):
        for label, score in zip(LABELS, row.tolist(), strict=True):
            assert scores[label] == pytest.approx(score, abs=1e-4)


def test_without_the_optional_package_the_export_names_it(tmp_path, monkeypatch, caplog):
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)  # as if it were not installed
    assert export(["--arch", "timm:resnet18", "--out", str(tmp_path / "m.pt")]) == 1
    assert "needs the timm package" in caplog.text
    assert "pip install 'wanwu[models]'" in caplog.text
    assert not list(tmp_path.iterdir())


# -- factories ------------------------------------------------------------------------------------


def test_a_factory_exports_with_its_weights_and_explicit_preprocessing(tmp_path, caplog):
    from torchvision.models import mobilenet_v3_small

    torch.manual_seed(2)
    weights = tmp_path / "mine.pth"
    torch.save(mobilenet_v3_small().state_dict(), weights)
    out = tmp_path / "mine.pt"
    spec = "torchvision.models:mobilenet_v3_small"
    assert export(["--arch", spec, "--weights", str(weights), "--out", str(out)]) == 1
    assert "needs the preprocessing it was trained with" in caplog.text
    pre = ["--resize", "72", "--crop", "64", "--mean", "0.5", "--std", "0.25"]
    assert export(["--arch", spec, "--weights", str(weights), *pre, "--out", str(out)]) == 0
    manifest = read_manifest(out)
    assert manifest["arch"] == spec and manifest["weights"]["kind"] == "fine-tune"
    reference = mobilenet_v3_small().eval()
    reference.load_state_dict(torch.load(weights, weights_only=True))
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(torch.jit.load(str(out))(x), reference(x))
    assert export(["--arch", "nowhere.at_all:build", "--out", str(tmp_path / "n.pt")]) == 1
    assert "cannot import nowhere.at_all" in caplog.text


def test_hf_labels_and_problem_type_reach_the_manifest(tmp_path):
    folder = tmp_path / "vit"
    save_vit(folder)
    assert export(["--from-hf", str(folder), "--out", str(tmp_path / "m.pt")]) == 0
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert "scores" not in manifest  # single-label: softmax, as every manifest before
    assert manifest["weights"]["kind"] == "huggingface" and manifest["trained"] is True
