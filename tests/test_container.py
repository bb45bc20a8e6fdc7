"""The Docker image's build and start steps, run natively (scripts/image_check.py runs the
image itself in a real engine)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import requests

from app.artifact import read_manifest
from benchkit.server import ROOT

HADOLINT = shutil.which("hadolint") or os.path.join(os.path.dirname(sys.executable), "hadolint")


def test_dockerfile_passes_hadolint():
    result = subprocess.run([HADOLINT, "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def setup_step(step: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "deploy/container_setup.sh", step],
        cwd=ROOT,
        # The venv's python first, as the image's PATH puts /opt/venv/bin first.
        env={
            **os.environ,
            "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_export_step_refuses_random_weights_unless_allowed(tmp_path, real_model_path):
    model = tmp_path / "resnet18.pt"
    if read_manifest(real_model_path)["trained"]:
        pytest.skip("the official weights are reachable here: nothing to refuse")
    refused = setup_step("export", WANWU_MODEL=str(model))
    assert refused.returncode == 1 and "UNTRAINED MODEL" in refused.stderr, refused.stderr
    allowed = setup_step("export", WANWU_MODEL=str(model), ALLOW_UNTRAINED="1")
    assert allowed.returncode == 0, allowed.stderr
    assert read_manifest(model)["trained"] is False


def test_the_installed_package_serves_like_the_image(tmp_path, real_model_path, gunicorn):
    """pip-install the project (as the image does), then start Gunicorn from elsewhere."""
    site = tmp_path / "site"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    for asset in ("templates/index.html", "static/app.js", "static/app.css", "labels_zh.txt"):
        assert (site / "app" / asset).is_file(), f"{asset} is missing from the package"
    workdir = tmp_path / "srv"
    workdir.mkdir()
    shutil.copy(ROOT / "gunicorn.conf.py", workdir)
    # The metrics folder exists, as a mount point does (a tmpfs, an emptyDir), with files of a
    # previous run: emptied, never removed (a mount point cannot be).
    metrics = tmp_path / "metrics"
    (metrics / "old").mkdir(parents=True)
    (metrics / "counter_1.db").write_bytes(b"stale")
    folder = metrics.stat().st_ino
    server = gunicorn(workers=1, model=real_model_path, max_batch=2)
    server.env.update(PYTHONPATH=str(site), PROMETHEUS_MULTIPROC_DIR=str(metrics))
    server.cwd = workdir
    with server:
        assert metrics.stat().st_ino == folder
        assert not (metrics / "old").exists() and not (metrics / "counter_1.db").exists()
        page = requests.get(server.url, timeout=10)
        assert page.status_code == 200 and "/static/app.js" in page.text
        assert requests.get(f"{server.url}/static/app.js", timeout=10).status_code == 200
        assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
