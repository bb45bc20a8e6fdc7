"""python -m app.export: TorchScript artifact + manifest, weights provenance, offline fallback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from torchvision.models import resnet18

from app.artifact import ArtifactError, read_manifest, sha256_file
from tests.conftest import ROOT


def export(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.export", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_manifest_describes_the_real_export(real_model_path):
    manifest = read_manifest(real_model_path)
    assert manifest["name"] == "resnet18" and manifest["num_classes"] == 1000
    assert manifest["input"]["crop"] == 224 and manifest["input"]["resize"] == 256
    assert manifest["artifact_sha256"] == sha256_file(real_model_path)
    assert manifest["torch"] == torch.__version__
    if manifest["trained"]:
        assert manifest["weights"]["sha256"]
    else:
        assert manifest["weights"]["source"] == "random-init(seed=0)"


def test_local_weights_file_is_used_and_recorded(tmp_path):
    torch.manual_seed(1)
    weights = tmp_path / "resnet18-local.pth"
    torch.save(resnet18().state_dict(), weights)
    out = tmp_path / "m.pt"
    result = export("--out", str(out), "--weights", str(weights))
    assert result.returncode == 0, result.stderr
    manifest = read_manifest(out)
    assert manifest["trained"] is True
    assert manifest["weights"] == {
        "source": "file:resnet18-local.pth",
        "sha256": sha256_file(weights),
        "kind": "fine-tune",
    }
    reference = resnet18().eval()
    reference.load_state_dict(torch.load(weights, weights_only=True))
    x = torch.rand(2, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(torch.jit.load(str(out))(x), reference(x))


def test_offline_fallback_is_seeded_and_loud(tmp_path, real_model_path):
    if read_manifest(real_model_path)["trained"]:
        pytest.skip("this machine reached the official weights; no fallback happened")
    out = tmp_path / "offline.pt"
    result = export("--out", str(out))
    assert result.returncode == 0
    assert "UNTRAINED MODEL" in result.stderr
    # Seeded: a second export gives the same weights as the one the suite serves.
    x = torch.rand(1, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(
            torch.jit.load(str(out))(x), torch.jit.load(str(real_model_path))(x)
        )
    assert export("--out", str(out), "--require-trained").returncode == 1


def test_a_tampered_artifact_is_refused(tmp_path, tiny_model_path):
    copy = tmp_path / "tiny.pt"
    copy.write_bytes(tiny_model_path.read_bytes() + b"x")
    manifest = json.loads(tiny_model_path.with_suffix(".json").read_text())
    copy.with_suffix(".json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="re-export"):
        read_manifest(copy)
    with pytest.raises(ArtifactError, match="not found"):
        read_manifest(tmp_path / "missing.pt")


# -- app.export in-process: what it refuses, and that a refusal writes nothing -----------------


def run_export(*args: str) -> int:
    from app.export import cli as exporter

    return exporter.main(list(args))


def fine_tune(tmp_path, classes: int = 10, arch=resnet18):
    """A seeded 'fine-tune': a state_dict whose head has `classes` outputs."""
    torch.manual_seed(3)
    path = tmp_path / f"finetune-{classes}.pth"
    torch.save(arch(num_classes=classes).state_dict(), path)
    return path


def write_lines(path, lines):
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def assert_nothing_written(directory, *names):
    for name in names:
        assert not (directory / name).exists(), f"{name} was written"
    leftovers = [p.name for p in directory.iterdir() if p.name.startswith(".")]
    assert not leftovers, f"staging left behind: {leftovers}"


def test_the_five_documented_architectures_are_valid():
    from app.export import architectures

    assert {
        "resnet18",
        "resnet50",
        "mobilenet_v3_large",
        "efficientnet_b0",
        "convnext_tiny",
    } <= set(architectures())
    assert not {"fasterrcnn_resnet50_fpn", "raft_large", "r3d_18"} & set(architectures())


def test_int8_of_an_untrained_model_is_refused_unless_allowed(tmp_path, caplog):
    """Its agreement with fp32 would pass and mean nothing: refused before any work."""
    (tmp_path / "photos").mkdir()
    args = ["--arch", "resnet18", "--weights", "none", "--precision", "int8"]
    args += ["--calibrate", str(tmp_path / "photos"), "--out", f"{tmp_path}/m.pt2"]
    assert run_export(*args) == 1
    assert (
        "int8 of an UNTRAINED MODEL refused" in caplog.text and "--allow-untrained" in caplog.text
    )
    assert_nothing_written(tmp_path, "m.pt2", "m.json")
    caplog.clear()
    # Allowed, it goes on to the next check (here: a folder without photos).
    assert run_export(*args, "--allow-untrained") == 1
    assert "no images there" in caplog.text and "UNTRAINED MODEL refused" not in caplog.text


def test_an_unknown_arch_is_refused_listing_the_valid_ones(tmp_path, caplog):
    assert run_export("--arch", "resnet19", "--weights", "none", "--out", f"{tmp_path}/m.pt") == 1
    assert "unknown architecture 'resnet19'" in caplog.text
    assert "resnet18, resnet34" in caplog.text and "convnext_tiny" in caplog.text
    assert_nothing_written(tmp_path, "m.pt", "m.json")


def test_a_fine_tune_gets_its_class_count_from_its_head_and_its_labels(tmp_path):
    weights = fine_tune(tmp_path)
    en = write_lines(tmp_path / "en.txt", [f"digit {i}" for i in range(10)] + ["", ""])
    zh = tmp_path / "zh.json"
    zh.write_text(json.dumps({str(i): f"数字{i}" for i in range(10)}), encoding="utf-8")
    out = tmp_path / "digits.pt"
    args = ["--weights", str(weights), "--labels", str(en), "--labels-zh", str(zh)]
    assert run_export(*args, "--out", str(out), "--resize", "40", "--crop", "32") == 0
    manifest = read_manifest(out)
    assert manifest["name"] == "digits" and manifest["arch"] == "resnet18"
    assert manifest["num_classes"] == 10 and manifest["languages"] == ["en", "zh"]
    assert manifest["labels"]["en"][3] == "digit 3" and manifest["labels"]["zh"][9] == "数字9"
    assert manifest["input"] == {
        "resize": 40,
        "crop": 32,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "interpolation": "bilinear",
    }
    assert manifest["weights"]["kind"] == "fine-tune" and manifest["trained"] is True
    reference = resnet18(num_classes=10).eval()
    reference.load_state_dict(torch.load(weights, weights_only=True))
    x = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(torch.jit.load(str(out))(x), reference(x))


def test_a_label_count_mismatch_is_refused_and_writes_nothing(tmp_path, caplog):
    weights = fine_tune(tmp_path)
    labels = write_lines(tmp_path / "nine.txt", [f"c{i}" for i in range(9)])
    out = tmp_path / "m.pt"
    assert run_export("--weights", str(weights), "--labels", str(labels), "--out", str(out)) == 1
    assert "label count mismatch" in caplog.text
    assert "has 9 labels, the model outputs 10 classes" in caplog.text
    assert_nothing_written(tmp_path, "m.pt", "m.json")


def test_weights_that_do_not_fit_the_arch_are_refused(tmp_path, caplog):
    weights = fine_tune(tmp_path, classes=1000)
    out = tmp_path / "m.pt"
    assert run_export("--arch", "resnet34", "--weights", str(weights), "--out", str(out)) == 1
    assert f"the weights in {weights} do not fit resnet34" in caplog.text
    assert "Missing key(s)" in caplog.text
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    assert run_export("--weights", str(garbage), "--out", str(out)) == 1
    assert "cannot read" in caplog.text and "state_dict" in caplog.text
    assert run_export("--weights", str(tmp_path / "absent.pth"), "--out", str(out)) == 1
    assert "not found" in caplog.text
    assert_nothing_written(tmp_path, "m.pt", "m.json")


def test_torchscript_needs_its_preprocessing(tmp_path, tiny_model_path, caplog):
    out = tmp_path / "m.pt"
    assert (
        run_export("--torchscript", str(tiny_model_path), "--crop", "224", "--out", str(out)) == 1
    )
    assert "--torchscript needs the preprocessing" in caplog.text
    assert "missing --resize, --mean, --std" in caplog.text
    assert_nothing_written(tmp_path, "m.pt", "m.json")


def test_a_torchscript_classifier_is_wrapped_with_index_to_name_json(tmp_path, tiny_model_path):
    index_to_name = tmp_path / "index_to_name.json"
    index_to_name.write_text(json.dumps({str(i): [f"n{i:08d}", f"class {i}"] for i in range(1000)}))
    out = tmp_path / "wrapped.pt"
    pre = ["--resize", "256", "--crop", "224", "--mean", "0.5", "--std", "0.25,0.25,0.25"]
    assert run_export("--torchscript", str(tiny_model_path), *pre, "--labels", str(index_to_name),
                      "--out", str(out), "--name", "mine") == 0  # fmt: skip
    manifest = read_manifest(out)
    assert out.read_bytes() == tiny_model_path.read_bytes()  # the user's file, as it was
    assert manifest["format"] == "torchscript" and manifest["arch"] is None
    assert manifest["name"] == "mine" and manifest["weights"]["kind"] == "torchscript"
    assert manifest["input"]["mean"] == [0.5, 0.5, 0.5] and manifest["languages"] == ["en"]
    assert manifest["labels"]["en"][7] == "class 7"


def test_a_failed_save_leaves_the_previous_artifact_alone(tmp_path, monkeypatch, tiny_model_path):
    from app.export import formats

    out = tmp_path / "m.pt"
    pre = ["--resize", "256", "--crop", "224", "--mean", "0.5", "--std", "0.5"]
    assert run_export("--torchscript", str(tiny_model_path), *pre, "--out", str(out)) == 0
    before = out.read_bytes(), out.with_suffix(".json").read_bytes()

    def half_then_fail(path):
        path.write_bytes(b"half an artifact")
        raise OSError("disk full")

    monkeypatch.setattr(formats.shutil, "copyfile", lambda src, dst: half_then_fail(dst))
    with pytest.raises(OSError, match="disk full"):
        run_export("--torchscript", str(tiny_model_path), *pre, "--out", str(out), "--force")
    assert (out.read_bytes(), out.with_suffix(".json").read_bytes()) == before
    assert_nothing_written(tmp_path)


def test_an_existing_artifact_is_replaced_only_with_force(tmp_path, tiny_model_path, caplog):
    out = tmp_path / "m.pt"
    pre = ["--resize", "256", "--crop", "224", "--mean", "0.5", "--std", "0.5"]
    assert run_export("--torchscript", str(tiny_model_path), *pre, "--out", str(out)) == 0
    before = out.with_suffix(".json").read_text()
    assert run_export("--torchscript", str(tiny_model_path), *pre, "--out", str(out),
                      "--name", "other") == 1  # fmt: skip
    assert f"{out} exists and is not replaced" in caplog.text and "--force" in caplog.text
    assert out.with_suffix(".json").read_text() == before
    assert run_export("--torchscript", str(tiny_model_path), *pre, "--out", str(out),
                      "--name", "other", "--force") == 0  # fmt: skip
    assert read_manifest(out)["name"] == "other"
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("fresh", [True, False], ids=["fresh", "replacing"])
def test_an_interrupted_write_leaves_the_pair_as_it_was(tmp_path, monkeypatch, fresh):
    """Ctrl-C (or SIGTERM, which the CLI turns into SystemExit) between the two renames."""
    from app import artifact

    out = tmp_path / "m.pt"
    if not fresh:
        artifact.write_artifact(out, lambda p: p.write_bytes(b"old"), name="old")
    before = sorted((p.name, p.read_bytes()) for p in tmp_path.iterdir())
    real_replace = artifact.os.replace

    def interrupted(src, dst):
        if Path(dst) == out:  # the artifact, after its manifest went into place
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(artifact.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        artifact.write_artifact(out, lambda p: p.write_bytes(b"new"), name="new")
    assert sorted((p.name, p.read_bytes()) for p in tmp_path.iterdir()) == before


def test_official_checksums_are_recognised():
    from torchvision.models import ResNet18_Weights

    from app.export import official_weights

    assert official_weights("resnet18", "f37072fd" + "0" * 56) is ResNet18_Weights.IMAGENET1K_V1
    assert official_weights("resnet18", "0" * 64) is None


def test_a_non_resnet_arch_exports_with_its_own_preprocessing(tmp_path):
    from app.model import Classifier

    out = tmp_path / "effnet.pt"
    assert run_export("--arch", "efficientnet_b0", "--weights", "none", "--out", str(out)) == 0
    classifier = Classifier.load(out)
    assert classifier.arch == "efficientnet_b0" and classifier.trained is False
    assert classifier.input_spec["interpolation"] == "bicubic"  # its weights' transforms
    assert classifier.num_classes == 1000 and classifier.languages == ("en", "zh")
    assert classifier(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)


def test_a_training_checkpoint_with_ddp_prefixes_is_unwrapped(tmp_path):
    torch.manual_seed(4)
    state = resnet18(num_classes=3).state_dict()
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 7, "state_dict": {f"module.{k}": v for k, v in state.items()}}, checkpoint)
    out = tmp_path / "m.pt"
    assert run_export("--weights", str(checkpoint), "--out", str(out)) == 0
    manifest = read_manifest(out)
    assert manifest["num_classes"] == 3 and manifest["labels"]["en"] == ["0", "1", "2"]
    assert manifest["languages"] == ["en"] and manifest["weights"]["kind"] == "fine-tune"


def test_a_file_given_to_the_wrong_option_is_named_with_its_command(
    tmp_path, tiny_model_path, caplog
):
    mar = tmp_path / "pets.mar"
    with zipfile.ZipFile(mar, "w") as archive:
        archive.writestr("MAR-INF/MANIFEST.json", "{}")
    weights = fine_tune(tmp_path)
    script = tmp_path / "mine.pt"  # a user's TorchScript: no manifest beside it
    script.write_bytes(tiny_model_path.read_bytes())
    out = str(tmp_path / "m.pt")
    assert run_export("--weights", str(script), "--out", out) == 1
    assert "it is a TorchScript file: wrap it with" in caplog.text
    assert f"python -m app.export --torchscript {script}" in caplog.text
    assert "weights_only" not in caplog.text  # the right option, not torch's unpickling advice
    assert run_export("--weights", str(mar), "--out", out) == 1
    assert f"python -m app.export --from-mar {mar}" in caplog.text
    pre = ["--resize", "256", "--crop", "224", "--mean", "0.5", "--std", "0.5"]
    assert run_export("--torchscript", str(weights), *pre, "--out", out) == 1
    assert f"--arch ARCH --weights {weights}" in caplog.text
    assert run_export("--weights", str(tiny_model_path), "--out", out) == 1  # an artifact
    assert f"already a wanwu artifact: serve it with `WANWU_MODEL={tiny_model_path}" in caplog.text
    assert_nothing_written(tmp_path, "m.pt", "m.json")
    # WANWU_MODEL given the archive or the weights: the same commands, not "cannot read manifest"
    for path, command in ((mar, "--from-mar"), (weights, "--weights")):
        with pytest.raises(ArtifactError, match=f"not a wanwu artifact; .*{command} {path}"):
            read_manifest(path)


BLOCKING_MODEL = '''
import pathlib, time, torch

class Blocking(torch.nn.Module):
    """Answers a blank image at once; on any other input, says so in a file and waits."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)

    def forward(self, x):
        if bool(x.any()):
            pathlib.Path(__file__).with_name("saving").touch()
            time.sleep(600)
        return self.fc(x.mean((2, 3)))

def build():
    return Blocking()
'''


def test_an_export_terminated_while_saving_leaves_nothing_behind(tmp_path):
    (tmp_path / "blocking_model.py").write_text(BLOCKING_MODEL)
    out = tmp_path / "out" / "m.pt"
    pre = ["--resize", "8", "--crop", "8", "--mean", "0.5", "--std", "0.5"]
    command = [sys.executable, "-m", "app.export", "--arch", "blocking_model:build", *pre]
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    log = tmp_path / "export.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen([*command, "--out", str(out)], cwd=ROOT, env=env, stderr=stderr)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "saving").exists():  # the model is being traced into staging
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the export never reached its save"
            time.sleep(0.05)
        assert [p.name[:6] for p in out.parent.iterdir()] == [".m.pt."]  # staging, nothing else
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        proc.kill()
    assert list(out.parent.iterdir()) == []


def test_a_fine_tune_whose_transforms_differ_from_torchserves_is_warned(tmp_path, caplog):
    from torchvision.models import regnet_y_400mf

    from app.export import ExportRequest, sources

    weights = fine_tune(tmp_path, classes=5, arch=regnet_y_400mf)
    loaded = sources.load(ExportRequest(arch="regnet_y_400mf", weights=str(weights)), tmp_path)
    assert loaded.input["resize"] == 232
    assert "image_classifier used resize 256: pass --resize 256" in caplog.text
    caplog.clear()
    request = ExportRequest(arch="regnet_y_400mf", weights=str(weights), resize=256)
    sources.load(request, tmp_path)
    assert "--resize 256" not in caplog.text
