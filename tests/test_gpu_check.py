"""scripts/gpu_check.sh's own plumbing, without a GPU: time boxes, failures, outputs."""

from __future__ import annotations

import os
import re
import subprocess

from tests.conftest import ROOT

CHECK = ROOT / "scripts" / "gpu_check.sh"
STEPS = re.findall(r"^step ([\w-]+) ", CHECK.read_text(), re.M)


def check(tmp_path, **env: str) -> subprocess.CompletedProcess[str]:
    out = tmp_path / "out"
    environ = {**os.environ, "OUT": str(out), "GPU_BUNDLE": str(tmp_path / "bundle"), **env}
    return subprocess.run(
        ["bash", str(CHECK)], env=environ, capture_output=True, text=True, timeout=120
    )


def test_every_step_that_fails_is_counted_and_named_and_the_rest_still_run(tmp_path):
    done = check(tmp_path, PYTHON="false")  # a Python that fails every step at once
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert done.returncode == len(STEPS) == 10
    for name in STEPS:
        assert re.search(rf"^{name} +FAILED \(status 1\)", summary, re.M), name
    assert len(list((tmp_path / "out").iterdir())) <= 8  # what a device call brings back


def test_a_step_skipped_by_name_or_left_no_time_does_not_run(tmp_path):
    done = check(tmp_path, PYTHON="false", SKIP="install versions", BUDGET="9")
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert done.returncode == 0, summary
    assert re.search(r"^install +skipped \(SKIP\)", summary, re.M)
    for name in STEPS[2:]:
        assert re.search(rf"^{name} +skipped \(no time left\)", summary, re.M), name
