"""The management API against real Gunicorn: its own port and keys, loads without a failed
request, gray release, unload, a broken version, a replaced worker, a TorchServe archive."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import torch
import tritonclient.http as triton_http
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from app.listeners import management_bind
from benchkit.attacks import wait_until
from benchkit.images import image_bytes
from benchkit.server import GunicornServer
from tests.conftest import TinyNet, add_version, archive, make_settings

KEY = "admin-key"
ADMIN = {"Authorization": f"Bearer {KEY}"}
V1 = {"en": ["one-a", "one-b", "one-c"]}
V2 = {"en": ["two-a", "two-b", "two-c", "two-d"]}
JPEG = image_bytes()


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """alpha and beta, each at version 1."""
    root = tmp_path / "repository"
    add_version(root, "alpha", 1, V1)
    add_version(root, "beta", 1, V1)
    return root


@pytest.fixture
def serve(gunicorn, repository: Path):
    """Return a factory for servers of the repository with the management API and its key."""

    def factory(**settings: object) -> GunicornServer:
        return gunicorn(
            workers=2, management=True, model_repository=repository, admin_keys=KEY, **settings
        )

    return factory


def predict(
    server: GunicornServer, query: str = "", session: object = requests
) -> requests.Response:
    headers = {"Content-Type": "image/jpeg"}
    return session.post(f"{server.url}/predict{query}", data=JPEG, headers=headers, timeout=60)


def answered(response: requests.Response) -> tuple[str, set[str]]:
    """The version that answered and the labels it gave."""
    body = response.json()
    return body["model"]["version"], {p["label"] for p in body["predictions"]}


def manage(server: GunicornServer, method: str, path: str, **kwargs: object) -> requests.Response:
    return requests.request(
        method, f"{server.management_url}{path}", headers=ADMIN, timeout=120, **kwargs
    )


def test_management_has_its_own_port_and_keys(serve):
    with serve(api_keys="inference-key") as server:
        url = server.management_url
        for headers in ({}, {"Authorization": "Bearer inference-key"}, {"Authorization": KEY}):
            refused = requests.get(f"{url}/models", headers=headers, timeout=10)
            assert refused.status_code == 401, refused.text
            assert "WANWU_ADMIN_KEYS" in refused.json()["message"]
        listed = manage(server, "GET", "/models").json()["models"]
        assert [m["modelName"] for m in listed] == ["alpha", "beta"]
        # Absent from the inference port, even with the admin key; nothing else on this one.
        inference = {"Authorization": "Bearer inference-key", **ADMIN}
        for method, path in (("GET", "/models"), ("POST", "/v2/repository/index")):
            absent = requests.request(method, f"{server.url}{path}", headers=inference, timeout=10)
            assert absent.status_code == 404 and "WANWU_MANAGEMENT_BIND" in absent.text
        assert manage(server, "POST", "/predict", data=JPEG).status_code == 404
        assert manage(server, "GET", "/metrics").status_code == 404


def test_without_admin_keys_there_is_no_management_listener(tiny_model_path):
    assert management_bind(make_settings(tiny_model_path)) is None
    with_keys = make_settings(tiny_model_path, admin_keys=("k",))
    assert management_bind(with_keys) == "127.0.0.1:8081"


def test_a_new_version_loads_under_load_without_a_failed_request(repository, serve):
    """8 clients classify while version 2 is dropped in and loaded: none fails, and every
    request sent after the load answers from version 2, with version 2's labels."""
    with serve() as server:
        results: list[tuple[str, int, str, set[str]]] = []  # (phase, status, version, labels)
        phase, lock = ["before"], threading.Lock()
        warmed = threading.Barrier(9)
        stop = threading.Event()
        after = Counter()

        def client() -> None:
            session, sent = requests.Session(), 0
            while not stop.is_set():
                started_in = phase[0]
                try:
                    response = predict(server, "?model=alpha", session)
                except requests.RequestException:  # a dropped connection fails the test too
                    status, version, labels = 0, "", set()
                else:
                    status = response.status_code
                    version, labels = answered(response) if response.ok else ("", set())
                with lock:
                    results.append((started_in, status, version, labels))
                    after[threading.get_ident()] += started_in == "after"
                sent += 1
                if sent == 3:
                    warmed.wait(60)

        threads = [threading.Thread(target=client) for _ in range(8)]
        for thread in threads:
            thread.start()
        warmed.wait(60)  # every client is sending
        add_version(repository, "alpha", 2, V2)
        loaded = manage(server, "POST", "/v2/repository/models/alpha/load")
        phase[0] = "after"
        assert loaded.status_code == 200, loaded.text
        while min(after[t.ident] for t in threads) < 5:  # each sent 5 after it
            assert all(t.is_alive() for t in threads)
            threads[0].join(0.05)
        stop.set()
        for thread in threads:
            thread.join(60)

    assert [r for r in results if r[1] != 200] == []
    assert {r[2] for r in results if r[0] == "after"} == {"2"}
    assert {r[2] for r in results if r[0] == "before"} >= {"1"}
    for _, _, version, labels in results:
        assert labels <= set((V1 if version == "1" else V2)["en"])


def test_a_gray_release_sends_its_share_and_says_so(repository, serve):
    add_version(repository, "beta", 2, V2)
    with serve(pinned_versions="beta=1") as server:
        assert answered(predict(server, "?model=beta"))[0] == "1"  # pinned, not the highest
        shared = manage(server, "PUT", "/models/beta/2/share", params={"percent": "10"})
        assert shared.status_code == 200, shared.text
        before = _model_requests(server)
        session = requests.Session()
        versions = Counter(
            answered(predict(server, "?model=beta", session))[0] for _ in range(1000)
        )
        # Every 10th request of each worker: exact within one per worker.
        assert 98 <= versions["2"] <= 102 and versions["1"] + versions["2"] == 1000, versions
        counted = _model_requests(server)
        assert counted[("beta", "2")] - before.get(("beta", "2"), 0) == versions["2"]
        shares = _metric(server, "wanwu_model_traffic_share")
        assert shares[("beta", "2")] == pytest.approx(0.1)
        assert shares[("beta", "1")] == pytest.approx(0.9)
        described = {d["modelVersion"]: d for d in manage(server, "GET", "/models/beta").json()}
        assert described["1"]["isDefault"] and described["2"]["trafficShare"] == 0.1
        # A client may pin either version while both serve.
        assert answered(predict(server, "?model=beta&version=2"))[0] == "2"
        assert (
            manage(server, "PUT", "/models/beta/2/share", params={"percent": "100"}).status_code
            == 400
        )

        ended = manage(server, "PUT", "/models/beta/2/share", params={"percent": "0"})
        assert ended.status_code == 200
        assert {answered(predict(server, "?model=beta"))[0] for _ in range(20)} == {"1"}
        assert predict(server, "?model=beta&version=2").status_code == 404

        promoted = manage(server, "PUT", "/models/beta/2/set-default")
        assert promoted.status_code == 200 and promoted.json()["staged_s"] >= 0
        assert {answered(predict(server, "?model=beta"))[0] for _ in range(20)} == {"2"}
        assert "Served versions: 2" in predict(server, "?model=beta&version=1").text
        # Version 1 serves no more: its series go (once it has finished what it held).
        deadline = time.monotonic() + 60
        while ("beta", "1") in _metric(server, "wanwu_model_traffic_share"):
            assert time.monotonic() < deadline, "version 1's traffic share stayed"
            time.sleep(0.05)
        for name in ("wanwu_model_requests_total", "wanwu_inference_seconds_count"):
            series = _metric(server, name)
            assert ("beta", "2") in series and ("beta", "1") not in series, name


def test_a_snapshot_serves_the_changed_versions_again_after_a_restart(repository, tmp_path, serve):
    add_version(repository, "alpha", 2, V2)
    kept = tmp_path / "snapshot.json"
    with serve(model_snapshot=kept) as server:
        assert answered(predict(server, "?model=alpha"))[0] == "2"  # the highest
        assert manage(server, "PUT", "/models/alpha/1/set-default").status_code == 200
        assert manage(server, "DELETE", "/models/beta").status_code == 200
        assert not (repository / "gamma").exists()
    add_version(repository, "gamma", 1, V1)  # while it was stopped
    with serve(model_snapshot=kept) as server:
        assert {answered(predict(server, "?model=alpha"))[0] for _ in range(10)} == {"1"}
        assert predict(server, "?model=beta").status_code == 404
        assert answered(predict(server, "?model=gamma"))[0] == "1"
        listed = manage(server, "GET", "/models").json()["models"]
        assert [m["modelName"] for m in listed] == ["alpha", "gamma"]


def _metric(server: GunicornServer, name: str) -> dict[tuple[str, str], float]:
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    return {
        (s.labels["model"], s.labels["version"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def _model_requests(server: GunicornServer) -> dict[tuple[str, str], float]:
    return _metric(server, "wanwu_model_requests_total")


def test_unload_answers_404_and_load_brings_the_model_back(repository, serve):
    with serve() as server:
        assert manage(server, "POST", "/v2/repository/models/alpha/unload").json() == {}
        gone = predict(server, "?model=alpha")
        assert gone.status_code == 404 and "Served models: beta" in gone.text
        index = manage(server, "POST", "/v2/repository/index").json()
        assert {(e["name"], e["state"]) for e in index} == {
            ("alpha", "UNAVAILABLE"),
            ("beta", "READY"),
        }
        # The last model stays; so does a default version on its own.
        last = manage(server, "DELETE", "/models/beta")
        assert last.status_code == 400 and "last model" in last.json()["message"]
        alone = manage(server, "DELETE", "/models/beta/1")
        assert alone.status_code == 400 and "set-default" in alone.json()["message"]

        assert manage(server, "POST", "/models", params={"url": "alpha"}).status_code == 200
        assert answered(predict(server, "?model=alpha"))[0] == "1"
        # A model added later is served by name; the default model stays the one it was.
        add_version(repository, "aardvark", 1, V2)
        assert manage(server, "POST", "/models", params={"url": "aardvark"}).status_code == 200
        assert predict(server).json()["model"]["name"] == "alpha"
        assert answered(predict(server, "?model=aardvark"))[1] <= set(V2["en"])
        assert manage(server, "DELETE", "/models/alpha").status_code == 200
        assert predict(server, "?model=alpha").status_code == 404
        unknown = manage(server, "POST", "/v2/repository/models/gamma/load")
        assert unknown.status_code == 404 and "error" in unknown.json()


def test_a_broken_version_leaves_the_served_one(repository, serve):
    with serve() as server:
        broken = add_version(repository, "alpha", 2, V2)
        broken.write_bytes(b"not a TorchScript archive")
        failed = manage(server, "POST", "/v2/repository/models/alpha/load")
        assert failed.status_code == 400, failed.text
        assert "served versions stay" in failed.json()["error"]
        assert answered(predict(server, "?model=alpha"))[0] == "1"
        empty = repository / "alpha" / "3"
        empty.mkdir()
        refused = manage(server, "PUT", "/models/alpha/3/set-default")
        assert refused.status_code == 400 and "exactly one" in refused.json()["message"]
        assert {answered(predict(server, "?model=alpha"))[0] for _ in range(10)} == {"1"}


def test_a_replacement_worker_serves_the_switched_version(repository, serve):
    with serve() as server:
        add_version(repository, "alpha", 2, V2)
        add_version(repository, "beta", 2, V2)
        # Two changes at once: one waits for the other, both are made.
        with ThreadPoolExecutor(2) as pool:
            calls = [
                pool.submit(manage, server, "PUT", f"/models/{name}/2/set-default")
                for name in ("alpha", "beta")
            ]
            assert [call.result().status_code for call in calls] == [200, 200]
        assert answered(predict(server, "?model=beta"))[0] == "2"
        victim = server.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while victim in server.worker_pids() or len(server.worker_pids()) < 2:
            assert time.monotonic() < deadline, "Gunicorn did not replace the killed worker"
            time.sleep(0.05)
        server.wait_ready()
        versions = {
            answered(predict(server, "?model=alpha", requests.Session()))[0] for _ in range(40)
        }
        assert versions == {"2"}
        assert "retired alpha version 1" in server.log()
        # A reload (HUP) re-reads gunicorn.conf.py; new workers keep both listeners apart.
        old = set(server.worker_pids())
        server.signal(signal.SIGHUP)
        wait_until(
            lambda: not old & set(server.worker_pids()) and len(server.worker_pids()) == 2,
            120,
            "new workers in place of the old after HUP",
        )
        server.wait_ready()
        assert manage(server, "GET", "/models").status_code == 200
        assert requests.get(f"{server.url}/models", headers=ADMIN, timeout=10).status_code == 404
        assert answered(predict(server, "?model=alpha"))[0] == "2"  # the change outlives it


def test_a_torchserve_archive_in_the_repository_registers_as_a_version(
    repository, tmp_path, tiny_model_path, serve
):
    archive(repository, "--serialized-file", str(tiny_model_path), name="resnet-18")
    with serve() as server:
        registered = manage(
            server, "POST", "/models", params={"url": "resnet-18.mar", "initial_workers": "1"}
        )
        assert registered.status_code == 200, registered.text
        assert registered.json()["status"].startswith('Model "resnet-18" Version: 1 registered')
        answer = requests.put(f"{server.url}/predictions/resnet-18", data=JPEG, timeout=60)
        assert answer.status_code == 200 and len(answer.json()) == 5
        assert (repository / "resnet-18" / "1" / "resnet-18.pt").is_file()
        # A state dict is no model: refused, and the repository is left as it was.
        torch.save(TinyNet().state_dict(), tmp_path / "weights.pth")
        archive(repository, "--serialized-file", str(tmp_path / "weights.pth"), name="eager")
        before = sorted(p.name for p in repository.rglob("*"))
        refused = manage(server, "POST", "/models", params={"url": "eager.mar"})
        assert refused.status_code == 400 and "not a TorchScript file" in refused.json()["message"]
        assert sorted(p.name for p in repository.rglob("*")) == before
        assert not list(repository.glob(".import-*"))  # the staging folder is gone
        for url in ("../outside.mar", "https://example.com/x.mar"):
            refused = manage(server, "POST", "/models", params={"url": url})
            assert refused.status_code in (400, 404) and "message" in refused.json()
        odd = manage(server, "POST", "/models", params={"url": "alpha", "batch_size": "4"})
        assert odd.status_code == 400 and "WANWU_MAX_BATCH" in odd.json()["message"]


def test_tritonclient_manages_the_repository(serve):
    """Triton's own HTTP client, pointed at the management port, with the admin key."""
    with serve() as server:
        manager = triton_http.InferenceServerClient(server.management_url.removeprefix("http://"))
        inference = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
        index = manager.get_model_repository_index(headers=ADMIN)
        assert {(e["name"], e["version"], e["state"]) for e in index} == {
            ("alpha", "1", "READY"),
            ("beta", "1", "READY"),
        }
        manager.unload_model("alpha", headers=ADMIN)
        assert not inference.is_model_ready("alpha")
        manager.load_model("alpha", headers=ADMIN)
        assert inference.is_model_ready("alpha")
        with pytest.raises(InferenceServerException, match="401"):
            manager.get_model_repository_index()
        with pytest.raises(InferenceServerException, match="404"):
            inference.get_model_repository_index(headers=ADMIN)
