"""A model repository: two models served by real Gunicorn, routed by name on every protocol."""

from __future__ import annotations

import base64
import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.grpc as triton
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from app import batcher as batching
from app import errors
from app.artifact import ArtifactError
from app.core.types import Upload
from app.core.verbs import Core
from app.repository import snapshot
from app.repository.control import Follower
from app.repository.folder import ControlFolder
from app.repository.operations import Management
from app.repository.plans import Plan
from app.repository.registry import Registry
from app.repository.scan import scan
from app.settings import SettingsError
from benchkit.attacks import wait_until
from benchkit.grpcload import reserved_port, wait_listening
from benchkit.images import image_bytes
from benchkit.server import GunicornServer
from tests.conftest import add_version, archive, make_settings

ALPHA = {"en": ["a0", "a1", "a2"]}
BETA = {"en": ["b0", "b1", "b2", "b3"]}


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """alpha at version 1; beta at versions 1 and 10 (10 serves: numbers, not text, order)."""
    root = tmp_path_factory.mktemp("repository")
    add_version(root, "alpha", 1, ALPHA)
    add_version(root, "beta", 1, {"en": ["old0", "old1"]})
    add_version(root, "beta", 10, BETA)
    (root / "README.txt").write_text("files beside the model folders are ignored")
    return root


@pytest.fixture(scope="module")
def server(repository: Path, gunicorn):
    with (
        reserved_port() as port,
        gunicorn(
            workers=1,
            model_repository=repository,
            management=True,
            admin_keys="admin",
            grpc_bind=f"127.0.0.1:{port}",
        ) as running,
    ):
        wait_listening(running.worker_pids(), port)
        running.grpc_address = f"127.0.0.1:{port}"
        yield running


def test_scan_serves_the_highest_version(repository):
    found = scan(repository)
    assert {name: version for name, (version, _) in found.items()} == {"alpha": "1", "beta": "10"}
    assert found["beta"][1] == repository / "beta" / "10" / "beta.pt"


@pytest.mark.parametrize(
    ("layout", "says"),
    [
        ({}, "holds no model folder"),
        ({"gamma/latest/gamma.pt": "x"}, "has no version folder"),
        ({"gamma/1/notes.txt": "x"}, "found 0"),
        (
            {
                "gamma/1/a.pt": "x",
                "gamma/1/a.json": "{}",
                "gamma/1/b.pt": "x",
                "gamma/1/b.json": "{}",
            },
            "found 2",
        ),
        ({"bad name/1/a.pt": "x"}, "must be letters"),
    ],
)
def test_a_malformed_repository_stops_start_up_naming_the_path(tmp_path, layout, says):
    for relative, text in layout.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    with pytest.raises(ArtifactError, match=says):
        scan(tmp_path)


def test_a_missing_repository_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match="is not a folder"):
        scan(tmp_path / "absent")


def labels_of(answer: dict) -> set[str]:
    return {p["label"] for p in answer["predictions"]}


def predict(server: GunicornServer, query: str = "") -> requests.Response:
    return requests.post(
        f"{server.url}/predict{query}", data=image_bytes(), headers={"Content-Type": "image/jpeg"}
    )


def test_predict_routes_by_model_and_names_the_version(server):
    default = predict(server).json()  # the first model by name
    assert default["model"] == {"name": "alpha", "version": "1", "trained": True}
    assert labels_of(default) <= set(ALPHA["en"])
    beta = predict(server, "?model=beta&topk=4").json()
    assert beta["model"] == {"name": "beta", "version": "10", "trained": True}
    assert labels_of(beta) == set(BETA["en"])
    assert predict(server, "?model=beta&version=10").status_code == 200

    old = predict(server, "?model=beta&version=1")
    assert old.status_code == 404 and "Served versions: 10." in old.json()["error"]["message"]
    unknown = predict(server, "?model=gamma")
    assert unknown.status_code == 404
    assert "Served models: alpha, beta." in unknown.json()["error"]["message"]


def test_torchserve_routes_by_model_and_its_management_lists_every_model(server):
    jpeg = image_bytes()
    answer = requests.put(f"{server.url}/predictions/beta/10", data=jpeg)
    assert answer.status_code == 200 and set(answer.json()) == set(BETA["en"])
    answer = requests.put(f"{server.url}/predictions/alpha", data=jpeg)
    assert set(answer.json()) == set(ALPHA["en"])
    unknown = requests.put(f"{server.url}/predictions/gamma", data=jpeg)
    assert unknown.status_code == 404
    assert unknown.json()["type"] == "ModelNotFoundException"
    assert "alpha, beta" in unknown.json()["message"]

    admin = {"Authorization": "Bearer admin"}
    listed = requests.get(f"{server.management_url}/models", headers=admin).json()["models"]
    assert listed == [
        {"modelName": "alpha", "modelUrl": "alpha.pt"},
        {"modelName": "beta", "modelUrl": "beta.pt"},
    ]
    [described] = requests.get(f"{server.management_url}/models/beta", headers=admin).json()
    assert described["modelVersion"] == "10" and described["isDefault"]


def test_oip_routes_by_model_and_version(server):
    request = {
        "inputs": [
            {
                "name": "IMAGE",
                "datatype": "BYTES",
                "shape": [1],
                "data": [base64.b64encode(image_bytes()).decode()],
            }
        ]
    }
    answer = requests.post(f"{server.url}/v2/models/beta/versions/10/infer", json=request).json()
    assert (answer["model_name"], answer["model_version"]) == ("beta", "10")
    assert answer["outputs"][0]["shape"] == [1, len(BETA["en"])]
    answer = requests.post(f"{server.url}/v2/models/alpha/infer", json=request).json()
    assert answer["outputs"][0]["shape"] == [1, len(ALPHA["en"])]

    assert requests.get(f"{server.url}/v2/models/alpha").json()["versions"] == ["1"]
    assert requests.get(f"{server.url}/v2/models/beta/ready").json()["ready"] is True
    unknown = requests.post(f"{server.url}/v2/models/gamma/infer", json=request)
    assert unknown.status_code == 404 and "alpha, beta" in unknown.json()["error"]


def test_model_info_describes_the_model_asked_for(server):
    assert requests.get(f"{server.url}/v1/model").json()["name"] == "alpha"
    beta = requests.get(f"{server.url}/v1/model?model=beta&version=10").json()
    assert (beta["name"], beta["version"], beta["classes"]) == ("beta", "10", len(BETA["en"]))
    assert requests.get(f"{server.url}/v1/model?model=gamma").status_code == 404


def test_health_and_the_upload_page_cover_every_model(server):
    health = requests.get(f"{server.url}/healthz").json()
    assert health["model"]["name"] == "alpha"
    assert [(m["name"], m["version"]) for m in health["models"]] == [("alpha", "1"), ("beta", "10")]
    page = requests.get(f"{server.url}/?model=beta").text
    assert 'data-model="beta"' in page and '<option value="alpha">' in page
    assert 'data-model="alpha"' in requests.get(f"{server.url}/").text
    unknown = requests.get(f"{server.url}/?model=gamma")
    assert unknown.status_code == 404 and "alpha, beta" in unknown.json()["error"]["message"]


def test_grpc_routes_by_model_and_version(server):
    client = triton.InferenceServerClient(server.grpc_address)
    try:
        image = triton.InferInput("IMAGE", [1], "BYTES")
        image.set_data_from_numpy(np.array([image_bytes()], dtype=np.object_))
        for name, version, labels in (("alpha", "", ALPHA), ("beta", "10", BETA)):
            answer = client.infer(name, [image], model_version=version)
            assert answer.get_response().model_version == (version or "1")
            assert answer.as_numpy("PROBS").shape == (1, len(labels["en"]))
        with pytest.raises(InferenceServerException, match="Served models: alpha, beta"):
            client.infer("gamma", [image])
        with pytest.raises(InferenceServerException, match="Served versions: 10"):
            client.infer("beta", [image], model_version="1")
    finally:
        client.close()


def test_queue_depth_and_in_flight_are_exported_per_model(server):
    predict(server, "?model=beta").raise_for_status()
    text = requests.get(f"{server.url}/metrics").text
    samples = {
        (s.name, s.labels.get("model"), s.labels.get("version")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    for gauge in ("wanwu_model_queue_depth", "wanwu_model_requests_in_flight"):
        # Each model's series exists from the start (alpha's too, whatever ran before), and
        # every request has been answered: nothing is queued or in flight any more.
        assert samples[(gauge, "alpha", "1")] == 0
        assert samples[(gauge, "beta", "10")] == 0
    assert samples[("wanwu_queue_depth", None, None)] == 0


def _started_registry(root: Path, settings_path: Path) -> Registry:
    # gamma 1 serves (pinned), gamma 2 is the one to load.
    settings = make_settings(
        settings_path, model_repository=str(root), pinned_versions=("gamma=1",)
    )
    registry = Registry.load(settings)
    registry.start()
    assert registry.wait_ready(60)
    return registry


def test_a_gray_release_sends_exactly_every_nth_request(tmp_path, tiny_model_path):
    add_version(tmp_path, "gamma", 1, ALPHA)
    add_version(tmp_path, "gamma", 2, BETA)
    registry = _started_registry(tmp_path, tiny_model_path)
    try:
        registry.stage("gamma", "2")
        assert registry.switch({"gamma": Plan("1", "2", 25)}) == []
        picked = []
        for _ in range(100):
            with registry.lease("gamma") as engine:
                picked.append(engine.classifier.version)
        assert picked.count("2") == 25 and picked[3::4] == ["2"] * 25
        assert registry.find("gamma").classifier.version == "1"  # a description counts nothing
        with registry.lease("gamma", "2") as engine:
            assert engine.classifier.version == "2"
    finally:
        registry.stop(10)


def test_a_retired_version_finishes_the_requests_that_hold_it(tmp_path, tiny_model_path):
    add_version(tmp_path, "gamma", 1, ALPHA)
    add_version(tmp_path, "gamma", 2, BETA)
    registry = _started_registry(tmp_path, tiny_model_path)
    try:
        with registry.lease("gamma") as old:
            registry.stage("gamma", "2")
            retired = registry.switch({"gamma": Plan("2")})
            assert retired == [old] and registry.find("gamma").classifier.version == "2"
            retiring = threading.Thread(target=registry.retire, args=(retired, 60))
            retiring.start()
            retiring.join(0.2)
            assert retiring.is_alive()  # waits for this request
            # The request goes on with the version it holds.
            core = Core(registry, registry.settings)
            answer = core.classify([Upload(image_bytes())], time.monotonic(), old)
            assert len(answer.probs[0]) == len(ALPHA["en"])
        retiring.join(60)
        assert not retiring.is_alive()
        with pytest.raises(batching.Stopped):
            old.batcher.reserve(1, time.monotonic() + 10)
        with pytest.raises(errors.ModelNotFound, match="Served versions: 2"):
            registry.find("gamma", "1")
    finally:
        registry.stop(10)


def test_a_control_folder_left_by_a_killed_master_is_removed_by_the_next(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    live = ControlFolder.create({"m": Plan("1")})
    left = live.path.with_name(f"wanwu-control-{gone.pid}-x")
    left.mkdir()
    try:
        fresh = ControlFolder.create({"m": Plan("2")})
        assert not left.exists() and live.path.exists()  # a live master's stays
        assert fresh.read().plans == {"m": Plan("2")} and fresh.read().step == (0, "switch")
        fresh.remove()
    finally:
        live.remove()


def test_a_snapshot_restores_plans_and_falls_back_where_the_repository_changed(tmp_path):
    root, kept = tmp_path / "repository", tmp_path / "snapshot.json"
    for name in ("alpha", "beta", "gamma", "delta"):
        add_version(root, name, 1, ALPHA)
    add_version(root, "alpha", 2, BETA)
    add_version(root, "gamma", 2, BETA)
    snapshot.write(
        kept,
        {
            "alpha": {"default": "1", "canary": "2", "percent": 10},  # a gray release
            "gamma": {"default": "7", "canary": None, "percent": 0},  # a version gone since
        },
        ["beta"],  # unloaded; delta was added since
    )
    settings = make_settings(tmp_path, model_repository=str(root), model_snapshot=str(kept))
    registry = Registry.load(settings)
    assert registry.plans == {
        "alpha": Plan("1", "2", 10),
        "gamma": Plan("2"),  # its highest, as without a snapshot
        "delta": Plan("1"),
    }
    for bad in ("{}", '{"plans": {"alpha": {"default": 1}}, "unloaded": []}', "[" * 10_000):
        kept.write_text(bad)
        with pytest.raises(ArtifactError, match="is not a snapshot"):
            Registry.load(settings)
    snapshot.write(kept, {}, ["alpha", "beta", "gamma", "delta"])
    with pytest.raises(ArtifactError, match="leaves none of the models"):
        Registry.load(settings)
    with pytest.raises(SettingsError, match="WANWU_MODEL_REPOSITORY"):
        make_settings(tmp_path, model_snapshot=str(kept))


@pytest.fixture
def one_worker(tmp_path):
    """The management calls of a one-worker server, in this process: a started registry
    (alpha and beta at version 1), its control folder and the worker's follower."""
    root = tmp_path / "repository"
    add_version(root, "alpha", 1, ALPHA)
    add_version(root, "beta", 1, ALPHA)
    settings = make_settings(tmp_path, model_repository=str(root), load_timeout_s=1.0)
    registry = Registry.load(settings)
    registry.start()
    assert registry.wait_ready(60)
    folder = ControlFolder.create(registry.plans)
    follower = Follower(folder, registry, drain_s=5)
    follower.catch_up()
    follower.start()
    yield Management(registry, folder, settings), registry, root
    follower.stop(wait=60)  # no model thread may outlive the test
    registry.stop(5)
    folder.remove()


def test_an_archive_that_does_not_load_is_not_left_in_the_repository(one_worker, monkeypatch):
    management, registry, root = one_worker
    archive(root, "--serialized-file", str(root / "alpha" / "1" / "alpha.pt"), name="gamma")

    def fails(name: str, version: str) -> None:
        raise ArtifactError(f"{name} version {version} failed to warm up: out of memory")

    monkeypatch.setattr(registry, "stage", fails)
    with pytest.raises(errors.LoadFailed, match="out of memory"):
        management.register("gamma.mar")
    assert sorted(registry.plans) == ["alpha", "beta"]
    assert not (root / "gamma").exists() and sorted(scan(root)) == ["alpha", "beta"]


def test_a_version_named_with_leading_zeros_is_that_version(one_worker):
    management, registry, _ = one_worker
    with pytest.raises(errors.BadRequest, match="default already"):
        management.share("alpha", "01", 50)
    with pytest.raises(errors.BadRequest, match="is alpha's default"):
        management.unload("alpha", "001")
    assert registry.plans["alpha"] == Plan("1")


def test_a_load_slower_than_the_timeout_is_a_503_and_changes_nothing(one_worker, monkeypatch):
    management, registry, root = one_worker
    add_version(root, "alpha", 2, BETA)
    release, staged = threading.Event(), registry.stage

    def slow(name: str, version: str) -> None:
        release.wait(60)  # past WANWU_LOAD_TIMEOUT_S (1 s here), until the test lets it go
        staged(name, version)

    monkeypatch.setattr(registry, "stage", slow)
    try:
        with pytest.raises(errors.Overloaded, match="WANWU_LOAD_TIMEOUT_S") as refused:
            management.load("alpha", "2")
        assert refused.value.retry_after
    finally:
        release.set()
    assert registry.plans["alpha"] == Plan("1")
    # The late worker, once its load ends, answers the abort and drops what it loaded.
    folder = management.folder
    aborted = (folder.read().generation, "abort")
    wait_until(lambda: os.getpid() in folder.answers(aborted), 60, "the late worker's abort")
    assert registry.missing({"alpha": Plan("2")}) == [("alpha", "2")]


def test_a_name_no_folder_can_have_is_a_404_not_a_file_system_error(one_worker):
    management, registry, _ = one_worker
    with pytest.raises(errors.ModelNotFound, match="repository has no folder"):
        management.load("a" * 300)  # past NAME_MAX: the file system would raise ENAMETOOLONG
    assert sorted(registry.plans) == ["alpha", "beta"]
