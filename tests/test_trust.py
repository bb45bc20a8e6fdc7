"""The trust screen (app.trust): rogue TorchScript refused by every route before it runs, and
.pt2 packages served only when this installation built them."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
import torch

from app import backends, trust
from app.artifact import PT2_FORMAT, read_manifest, write_manifest
from app.export.library import export
from app.export.request import ExportError, ExportRequest
from app.model import Classifier
from benchkit import rogue
from benchkit.images import image_bytes
from tests.conftest import add_version, archive

KEY = "admin-key-for-trust"
V1 = {"en": ["a", "b", "c"]}


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """The file a rogue model would create or read; it must never be touched."""
    return tmp_path / "marker"


def artifact_like(source: Path, path: Path) -> Path:
    """Give the model file at `path` a manifest copied from `source`'s, as an export would."""
    fields = {k: v for k, v in read_manifest(source).items() if k != "artifact_sha256"}
    fields.pop("manifest_version")
    write_manifest(path, **fields)
    return path


def test_file_operators_come_from_torchs_own_schemas():
    found = trust.file_operators()
    assert {"aten::from_file", "aten::save"} <= found
    schemas = {s.name: s for s in torch._C._jit_get_all_schemas()}
    for name in found:  # each takes a path: a string argument named for a file
        assert any("str" in str(a.type) and "file" in a.name for a in schemas[name].arguments)


@pytest.mark.parametrize(
    ("kind", "names"),
    [
        ("reader", "forward calls aten::from_file"),
        ("writer", "leak calls aten::save"),
        ("wrapper", "forward calls aten::from_file"),
        ("foreign", "forward calls debugprims::load_tensor, outside the namespaces"),
        ("on_load", "defines __setstate__"),
    ],
)
def test_each_rogue_model_is_refused_naming_what_it_does(tmp_path, marker, kind, names):
    path = rogue.save(kind, tmp_path / f"{kind}.pt", marker)
    with pytest.raises(trust.Untrusted, match=names):
        trust.load_torchscript(path)
    assert not marker.exists()


def test_the_screen_is_what_stops_a_load_time_program(tmp_path, marker):
    path = rogue.save("on_load", tmp_path / "on_load.pt", marker)
    torch.jit.load(str(path))  # without the screen, loading alone writes the file
    assert marker.exists()


def test_real_classifiers_pass(tiny_model_path, real_model_path):
    for path in (tiny_model_path, real_model_path):
        assert Classifier.load(path).format == "torchscript"


def test_the_export_refuses_a_rogue_file_and_writes_nothing(tmp_path, marker):
    path = rogue.save("reader", tmp_path / "rogue.pt", marker)
    out = tmp_path / "out" / "model.pt"
    with pytest.raises(ExportError, match="aten::from_file.*nothing was exported"):
        export(ExportRequest(torchscript=path, out=out))
    assert not out.parent.exists() or not list(out.parent.iterdir())
    assert not marker.exists()


def test_the_export_refuses_a_rogue_archive(tmp_path, marker):
    rogue.save("writer", tmp_path / "model.pt", marker)
    mar = archive(tmp_path, "--serialized-file", "model.pt", name="rogue")
    with pytest.raises(ExportError, match="leak calls aten::save"):
        export(ExportRequest(from_mar=mar, out=tmp_path / "rogue-out.pt"))
    assert not (tmp_path / "rogue-out.pt").exists() and not marker.exists()


def test_a_rogue_wanwu_model_stops_start_up(tmp_path, marker, tiny_model_path, gunicorn):
    path = artifact_like(tiny_model_path, rogue.save("reader", tmp_path / "rogue.pt", marker))
    server = gunicorn(workers=1, model=path)
    with pytest.raises(RuntimeError, match="aten::from_file, which reaches the file system"):
        server.start(timeout=60)
    assert server.proc.returncode not in (None, 0) and not marker.exists()


def test_management_refuses_rogue_archives_and_versions(
    tmp_path, marker, tiny_model_path, gunicorn
):
    root = tmp_path / "repository"
    add_version(root, "alpha", 1, V1)
    rogue.save("wrapper", tmp_path / "model.pt", marker)
    archive(root, "--serialized-file", str(tmp_path / "model.pt"), name="rogue")
    with gunicorn(workers=1, management=True, model_repository=root, admin_keys=KEY) as server:
        version = root / "alpha" / "2"  # added while version 1 serves
        version.mkdir()
        artifact_like(tiny_model_path, rogue.save("foreign", version / "alpha.pt", marker))
        manage = server.management_url
        admin = {"Authorization": f"Bearer {KEY}"}
        before = sorted(p.name for p in root.rglob("*"))
        refused = requests.post(
            f"{manage}/models", params={"url": "rogue.mar"}, headers=admin, timeout=120
        )
        assert refused.status_code == 400 and "aten::from_file" in refused.json()["message"]
        assert sorted(p.name for p in root.rglob("*")) == before
        loaded = requests.post(
            f"{manage}/v2/repository/models/alpha/load", headers=admin, timeout=120
        )
        assert loaded.status_code == 400 and "debugprims::load_tensor" in loaded.json()["error"]
        answer = requests.post(
            f"{server.url}/predict?model=alpha",
            data=image_bytes(),
            headers={"Content-Type": "image/jpeg"},
            timeout=60,
        )
        assert answer.json()["model"]["version"] == "1"
    assert not marker.exists()


def package(tmp_path: Path, **changes: object) -> tuple[Path, dict]:
    """A file with a .pt2 manifest written here (signed), then `changes` made to it."""
    path = tmp_path / "model.pt2"
    path.write_bytes(b"not a real package: opening it would fail differently")
    manifest = write_manifest(path, format=PT2_FORMAT, precision="fp32", device="cpu")
    return path, {**manifest, **changes}


def test_a_package_built_here_is_signed_and_others_are_refused(tmp_path, monkeypatch):
    path, manifest = package(tmp_path)
    assert manifest["built_by"].startswith(trust.SIGNATURE)
    trust.check_package(path, manifest)  # signed by this installation's key
    for forged in ({"built_by": None}, {"artifact_sha256": "0" * 64}):
        with pytest.raises(trust.Untrusted, match="this installation did not build it"):
            backends.load(path, {**manifest, **forged})  # refused before it is opened
    monkeypatch.setenv("WANWU_TRUST_PT2", "1")
    trust.check_package(path, {**manifest, "built_by": None})


def test_without_the_key_no_package_is_served(tmp_path, monkeypatch):
    path, manifest = package(tmp_path)
    monkeypatch.setenv("WANWU_BUILD_KEY", str(tmp_path / "elsewhere.key"))
    with pytest.raises(trust.Untrusted, match="cannot read WANWU_BUILD_KEY"):
        trust.check_package(path, manifest)
