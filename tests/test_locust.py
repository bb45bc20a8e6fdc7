"""A short, bounded locust run of the project's load test against real Gunicorn."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from benchkit.server import ROOT, GunicornServer

pytestmark = pytest.mark.integration


def test_locust_mix_runs_without_unexpected_failures(real_model_path, tmp_path):
    with GunicornServer(tmp_path, workers=1, model=real_model_path, max_batch=4) as server:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "locust",
                "--headless",
                "-f",
                "loadtest/locustfile.py",
                "--host",
                server.url,
                "-u",
                "4",
                "-r",
                "4",
                "-t",
                "8s",
                "--only-summary",
                "--csv",
                str(tmp_path / "run"),
                "--exit-code-on-error",
                "1",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    rows = {row["Name"]: row for row in csv.DictReader(open(tmp_path / "run_stats.csv"))}
    total = rows["Aggregated"]
    assert int(total["Request Count"]) > 10, result.stderr[-2000:]
    assert int(total["Failure Count"]) == 0, open(tmp_path / "run_failures.csv").read()
    assert result.returncode == 0, result.stderr[-2000:]
    assert any("[raw]" in name for name in rows) and any("[multipart]" in name for name in rows)
