"""`python -m app.train`: folders of photos -> a classifier the service serves as reported.

Most tests train on a small seeded backbone (`benchkit.folders.backbone`, milliseconds per
picture); one trains the default recipe, EfficientNet-Lite0's features, on texture crops.
Each trained model is served by real Gunicorn and must name every test picture as the
report says it does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import torch
from PIL import Image
from sklearn import metrics

from app import imaging
from app.artifact import read_manifest
from app.train import data as dataset
from app.train import report
from benchkit import folders

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--arch", "benchkit.folders:backbone", *folders.BACKBONE_INPUT]
KEY = "train-admin-key"


def train(*args: object, env: dict | None = None, check: bool = True):
    """Run `python -m app.train` as a user would; its completed process."""
    command = [sys.executable, "-m", "app.train", *map(str, args)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def read_report(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())


def served_top1(url: str, data: Path, predictions: list[list[str]], query: str = "") -> list:
    """What the service names each test picture, in the report's order."""
    answers = []
    for file, _, _ in predictions:
        body = (data / file).read_bytes()
        response = requests.post(
            f"{url}/predict{query}",
            data=body,
            headers={"Content-Type": "application/octet-stream"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        answers.append(response.json()["predictions"][0]["label"])
    return answers


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory) -> Path:
    """30 pictures of each digit, and the strays real folders hold, in the folder of 'three'."""
    root = tmp_path_factory.mktemp("photos") / "digits"
    folders.digits(root, per_class=30)
    folders.strays(root / "three")
    (root / "README.txt").write_text("handwritten digits\n")
    return root


def test_a_folder_is_split_and_its_strays_listed(digits_folder):
    data = dataset.scan(digits_folder)
    assert data.classes == sorted(folders.rendered.LABELS_EN)
    assert data.counts()["train"]["zero"] == 15 and data.counts()["val"]["zero"] == 9
    assert data.counts()["test"]["zero"] == 6
    skipped = {s["file"]: s["reason"] for s in data.skipped}
    assert skipped["three/.ipynb_checkpoints"] == "hidden"
    assert skipped["three/.DS_Store"] == "hidden"
    assert skipped["three/empty.jpg"] == "empty file"
    assert "corrupt or truncated" in skipped["three/broken.jpg"]
    assert "not an image" in skipped["three/notes.txt"]
    assert skipped["README.txt"] == "not in a class folder"
    assert len(skipped) == 6, skipped
    assert data.leakage == []
    again = dataset.scan(digits_folder)
    assert again.items == data.items, "the split is seeded"
    assert dataset.scan(digits_folder, seed=1).items != data.items


def test_heic_and_exif_rotated_photos_are_read_as_the_service_reads_them(tmp_path):
    folders.textures(tmp_path, per_class=10)
    picture = Image.open(tmp_path / "dots" / "000.jpg").crop((0, 0, 64, 40))
    picture.save(tmp_path / "dots" / "phone.heic", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: the camera was turned
    picture.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "dots" / "turned.jpg", exif=exif)
    data = dataset.scan(tmp_path)
    files = {i.file for i in data.items}
    assert {"dots/phone.heic", "dots/turned.jpg"} <= files and data.skipped == []
    turned = imaging.decode((tmp_path / "dots" / "turned.jpg").read_bytes(), 10**6)
    assert turned.size == (64, 40), "upright, as the camera meant it"


def test_a_class_below_the_minimum_is_refused_by_name(tmp_path):
    folders.textures(tmp_path, per_class=12)
    for extra in sorted((tmp_path / "dots").iterdir())[dataset.MIN_IMAGES - 1 :]:
        extra.unlink()
    result = train(tmp_path, "--name", "t", "--out", tmp_path / "t.pt", *SMALL, check=False)
    assert result.returncode == 1
    assert "class 'dots' has 9 usable pictures" in result.stderr
    assert "at least 10" in result.stderr
    assert not (tmp_path / "t.pt").exists() and not (tmp_path / "t-report").exists()


def test_the_same_picture_in_two_given_splits_is_leakage(tmp_path):
    source = tmp_path / "source"
    folders.textures(source, per_class=12)
    for s in dataset.SPLITS:
        for name in folders.TEXTURES:
            (tmp_path / "data" / s / name).mkdir(parents=True)
    for name in folders.TEXTURES:
        pictures = sorted((source / name).iterdir())
        for i, picture in enumerate(pictures):
            s = ("train", "train", "val", "test")[i % 4]
            shutil.copy(picture, tmp_path / "data" / s / name / picture.name)
    copied = tmp_path / "data" / "test" / "dots" / "copy.jpg"
    shutil.copy(source / "dots" / "000.jpg", copied)
    data = dataset.scan(tmp_path / "data")
    assert [s for s in dataset.SPLITS if data.counts()[s]["dots"]] == list(dataset.SPLITS)
    assert data.leakage == [
        {
            "sha256": data.leakage[0]["sha256"],
            "files": {"train/dots/000.jpg": "train", "test/dots/copy.jpg": "test"},
        }
    ]


def test_the_figures_are_scikit_learns():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 6, (200,), generator=generator)
    logits = torch.randn(200, 6, generator=generator) + torch.nn.functional.one_hot(labels)
    classes = ["a", "b", "c", "d", "e", "f"]
    figures = report.figures(logits, labels, classes)
    truth, guess = labels.numpy(), logits.argmax(1).numpy()
    assert figures["confusion_matrix"] == metrics.confusion_matrix(truth, guess).tolist()
    assert figures["top1"] == pytest.approx(metrics.accuracy_score(truth, guess))
    assert figures["macro_f1"] == pytest.approx(metrics.f1_score(truth, guess, average="macro"))
    precision, recall, f1, support = metrics.precision_recall_fscore_support(truth, guess)
    for i, name in enumerate(classes):
        c = figures["per_class"][name]
        assert (c["precision"], c["recall"], c["f1"]) == pytest.approx(
            (precision[i], recall[i], f1[i])
        )
        assert c["support"] == support[i]
    top5 = metrics.top_k_accuracy_score(truth, logits.numpy(), k=5)
    assert figures["top5"] == pytest.approx(top5)


@pytest.mark.integration
def test_a_trained_model_is_served_as_its_report_says(digits_folder, tmp_path, gunicorn):
    (digits_folder / dataset.LABELS_ZH).write_text("\n".join("八五四九一七六三二零") + "\n")
    out = tmp_path / "digits.pt"
    try:
        train(digits_folder, "--name", "digits", "--out", out, *SMALL)
    finally:
        (digits_folder / dataset.LABELS_ZH).unlink()
    found = read_report(tmp_path / "digits-report")
    manifest = read_manifest(out)
    assert manifest["trained"] is True and manifest["languages"] == ["en", "zh"]
    assert manifest["training"]["data"]["test"]["files"] == 60
    assert manifest["training"]["test"]["top1"] == found["test"]["top1"]
    assert set(found) >= {"classes", "splits", "skipped", "test"}
    assert found["classes"][:2] == ["eight", "five"]
    assert (tmp_path / "digits-report" / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert "## Most confused" in (tmp_path / "digits-report" / "report.md").read_text()
    with gunicorn(workers=1, model=out) as server:
        named = served_top1(server.url, digits_folder, found["predictions"])
        zh = served_top1(server.url, digits_folder, found["predictions"][:1], "?lang=zh")
    assert named == [p[2] for p in found["predictions"]]
    served = sum(n == p[1] for n, p in zip(named, found["predictions"], strict=True))
    assert served / len(named) == pytest.approx(found["test"]["top1"])
    assert zh[0] == "八五四九一七六三二零"[found["classes"].index(named[0])]


@pytest.mark.integration
def test_resume_continues_after_the_last_finished_stage(digits_folder, tmp_path):
    out = tmp_path / "repo" / "digits" / "1" / "digits.pt"
    args = [digits_folder, "--name", "digits", "--out", out, "--finetune", "1", *SMALL]
    run = train(*args)
    first = read_report(out.with_name("digits-report"))
    assert first["recipe"]["finetune_epochs"] == 1 and "finetune" in first["seconds"]
    again = train(*args, "--resume", "--force")
    for stage in ("data", "features", "head", "finetune"):
        assert f"{stage}: resumed" in again.stderr, again.stderr
    assert read_report(out.with_name("digits-report"))["test"] == first["test"]
    assert "resumed" not in run.stderr


@pytest.mark.integration
def test_ctrl_c_leaves_nothing_half_written(digits_folder, tmp_path):
    out = tmp_path / "digits.pt"
    stages = tmp_path / "digits-report" / ".stages"
    args = [digits_folder, "--name", "digits", "--out", out, "--finetune", "2", *SMALL]
    command = [sys.executable, "-m", "app.train", *map(str, args)]
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    # The first stage's file is the state this run exposes; interrupt it once it exists.
    while not (stages / "data.pt").exists() and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130 and "--resume continues" in stderr, stderr
    leftovers = [p for p in tmp_path.rglob(".*") if p != stages]
    assert leftovers == [], leftovers
    assert out.exists() == out.with_suffix(".json").exists()
    resumed = train(*args, "--resume", "--force")
    assert "data: resumed" in resumed.stderr
    assert read_manifest(out)["trained"] is True


@pytest.mark.integration
def test_load_rolls_the_new_version_out_as_a_gray_release(digits_folder, tmp_path, gunicorn):
    repo = tmp_path / "repo"
    train(digits_folder, "--name", "digits", "--out", repo / "digits" / "1" / "digits.pt", *SMALL)
    server = gunicorn(workers=1, management=True, model_repository=repo, admin_keys=KEY)
    with server:
        env = {**os.environ, "WANWU_ADMIN_KEY": KEY}
        out = repo / "digits" / "2" / "digits.pt"
        args = ["--seed", "1", "--load", server.management_url, "--share", "25", *SMALL]
        train(digits_folder, "--name", "digits", "--out", out, *args, env=env)
        listed = requests.get(
            f"{server.management_url}/models/digits",
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=30,
        ).json()
        answers = [
            requests.post(
                f"{server.url}/predict",
                data=(digits_folder / "zero" / "0001.png").read_bytes(),
                headers={"Content-Type": "image/png"},
                timeout=60,
            ).json()["model"]["version"]
            for _ in range(8)
        ]
    shares = {str(v["modelVersion"]): v for v in listed}
    assert set(shares) == {"1", "2"}, listed
    assert answers.count("2") == 2 and answers.count("1") == 6, answers


@pytest.mark.integration
def test_the_default_recipe_trains_lite0_features_on_textures(tmp_path, gunicorn):
    folders.textures(tmp_path / "textures", per_class=12)
    out = tmp_path / "textures.pt"
    train(tmp_path / "textures", "--name", "textures", "--out", out)
    found = read_report(tmp_path / "textures-report")
    manifest = read_manifest(out)
    assert manifest["arch"] == "app.export.zoo:efficientnet_lite0"
    assert manifest["weights"]["backbone"]["trained"] is True
    assert manifest["input"]["crop"] == 224 and manifest["input"]["interpolation"] == "bicubic"
    with gunicorn(workers=1, model=out) as server:
        named = served_top1(server.url, tmp_path / "textures", found["predictions"])
    assert named == [p[2] for p in found["predictions"]]
    assert found["test"]["top1"] >= 0.75, found["test"]
