"""TorchServe archives through the management API of real Gunicorn: a bomb is refused while it
inflates, and the same archive registered twice is one version."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest
import requests

from app.export.library import export
from app.export.mar import MAX_RATIO
from app.export.request import ExportError, ExportRequest
from tests.conftest import add_version, archive

pytestmark = pytest.mark.integration

KEY = "admin-key-for-archives"
PADDING = 32 << 20  # zeros deflate about a thousandfold: far past MAX_RATIO


def bomb(folder: Path, tiny_model_path: Path) -> Path:
    """A .mar whose TorchScript model carries 32 MiB of zeros: a few dozen KB compressed."""
    model = folder / "model.pt"
    shutil.copy(tiny_model_path, model)
    with zipfile.ZipFile(model, "a") as inner:
        inner.writestr(f"{inner.namelist()[0].split('/')[0]}/extra/padding", bytes(PADDING))
    mar = archive(folder, "--serialized-file", "model.pt", name="bomb")
    with zipfile.ZipFile(mar) as outer:
        info = outer.getinfo("model.pt")
    assert info.file_size > MAX_RATIO * info.compress_size  # what a bomb declares, or hides
    return mar


def test_a_bomb_stops_the_export_while_it_inflates(tmp_path, tiny_model_path):
    mar = bomb(tmp_path, tiny_model_path)
    with pytest.raises(ExportError, match="an archive bomb, not a model"):
        export(ExportRequest(from_mar=mar, out=tmp_path / "out" / "bomb.pt"))
    assert not (tmp_path / "out").exists()


def test_the_management_api_refuses_bombs_and_does_not_repeat_versions(
    tmp_path, tiny_model_path, gunicorn
):
    root = tmp_path / "repository"
    add_version(root, "alpha", 1, {"en": ["a", "b", "c"]})
    bomb(root, tiny_model_path)
    archive(root, "--serialized-file", str(tiny_model_path), name="plain")
    admin = {"Authorization": f"Bearer {KEY}"}
    with gunicorn(workers=1, management=True, model_repository=root, admin_keys=KEY) as server:

        def register(url: str) -> requests.Response:
            return requests.post(
                f"{server.management_url}/models", params={"url": url}, headers=admin, timeout=120
            )

        before = sorted(p.name for p in root.rglob("*"))
        refused = register("bomb.mar")
        assert refused.status_code == 400 and "archive bomb" in refused.json()["message"]
        assert sorted(p.name for p in root.rglob("*")) == before
        for _ in range(2):
            registered = register("plain.mar")
            assert registered.status_code == 200, registered.text
            assert 'Model "plain" Version: 1 registered' in registered.json()["status"]
        assert sorted(p.name for p in (root / "plain").iterdir()) == ["1"]
