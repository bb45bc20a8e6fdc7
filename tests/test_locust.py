"""A short, bounded locust run of the project's load test against real Gunicorn."""

from __future__ import annotations

import pytest

from loadtest import headless

pytestmark = pytest.mark.integration


def test_locust_mix_runs_without_unexpected_failures(real_model_path, tmp_path, gunicorn):
    with gunicorn(workers=1, model=real_model_path, max_batch=4) as server:
        result = headless.run(server.url, tmp_path)
    rows = headless.stats(tmp_path)
    total = rows["Aggregated"]
    assert int(total["Request Count"]) > 10, result.stderr[-2000:]
    assert int(total["Failure Count"]) == 0, headless.failures(tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert any("[raw]" in name for name in rows) and any("[multipart]" in name for name in rows)
