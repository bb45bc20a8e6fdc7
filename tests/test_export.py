"""The export script: TorchScript artifact + manifest, weights provenance, offline fallback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torchvision.models import resnet18

from app.artifact import ArtifactError, read_manifest, sha256_file
from tests.conftest import ROOT


def export(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "scripts/export_model.py", *args],
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
