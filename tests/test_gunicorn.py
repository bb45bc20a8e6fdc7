"""Real Gunicorn, preloaded real ResNet-18 export, two forked workers: the end-to-end contract."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import torch
from PIL import Image
from torchvision.models import ResNet18_Weights

from benchkit.images import image_bytes, sample_photos
from benchkit.server import GunicornServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(real_model_path, gunicorn):
    with gunicorn(
        workers=2,
        model=real_model_path,
        max_batch=4,
        max_wait_ms=10,
    ) as srv:
        yield srv


def corpus() -> list[tuple[str, bytes]]:
    """Real photos where ../shared has them, plus generated pictures, so the test always runs."""
    photos = [(p.name, p.read_bytes()) for p in sample_photos()[::12]]
    return photos + [(f"gen{s}.png", image_bytes("PNG", seed=s)) for s in range(4)]


def reference_probs(model_path: Path, data: bytes) -> torch.Tensor:
    """The torchvision reference pipeline on the same artifact, one image at a time."""
    import io

    model = torch.jit.load(str(model_path)).eval()
    x = ResNet18_Weights.IMAGENET1K_V1.transforms()(Image.open(io.BytesIO(data)).convert("RGB"))
    with torch.inference_mode():
        return torch.softmax(model(x[None]), dim=1)[0]


def assert_matches_reference(predictions: list[dict], probs: torch.Tensor) -> None:
    """Same top-k as the reference: scores agree, and no better class was left out."""
    kth_best = float(probs.topk(len(predictions)).values[-1])
    for p in predictions:
        assert abs(float(probs[p["index"]]) - p["score"]) < 1e-4
        assert p["score"] >= kth_best - 1e-4


def worker_infos(server: GunicornServer) -> dict[int, dict]:
    """Each worker's /v1/model "worker" section, by pid."""

    def worker_info(_: int) -> dict:
        return requests.get(f"{server.url}/v1/model", timeout=10).json()["worker"]

    # Concurrent requests, so that the kernel hands connections to every worker.
    with ThreadPoolExecutor(8) as pool:
        return {info["pid"]: info for info in pool.map(worker_info, range(200))}


def test_concurrent_requests_match_the_reference_pipeline(server, real_model_path):
    items = corpus() * 2
    references = {name: reference_probs(real_model_path, data) for name, data in corpus()}

    def call(item: tuple[str, bytes]) -> tuple[str, dict]:
        name, data = item
        response = requests.post(f"{server.url}/predict", files={"file": (name, data)}, timeout=60)
        assert response.status_code == 200, response.text
        return name, response.json()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(call, items))
    for name, body in answers:
        assert len(body["predictions"]) == 3
        assert_matches_reference(body["predictions"], references[name])
    assert max(body["timing_ms"]["inference"] for _, body in answers) > 0


def test_raw_body_and_batch_of_files(server, real_model_path):
    (name_a, a), (name_b, b) = corpus()[:2]
    raw = requests.post(
        f"{server.url}/predict?topk=5", data=a, headers={"Content-Type": "image/jpeg"}, timeout=60
    )
    assert raw.status_code == 200
    assert_matches_reference(raw.json()["predictions"], reference_probs(real_model_path, a))
    many = requests.post(
        f"{server.url}/predict", files=[("file", (name_a, a)), ("file", (name_b, b))], timeout=60
    )
    results = many.json()["results"]
    assert [r["filename"] for r in results] == [name_a, name_b]
    assert_matches_reference(results[1]["predictions"], reference_probs(real_model_path, b))


def test_every_worker_runs_its_pinned_thread_count(server):
    seen = worker_infos(server)
    assert len(seen) == server.workers, "requests never reached both workers"
    assert all(w["torch_threads"] == 1 for w in seen.values())
    cpus = [tuple(w["cpus"]) for w in seen.values()]
    assert len(set(cpus)) == len(cpus), f"workers share CPUs: {cpus}"


def test_workers_share_the_masters_weights(server):
    """No worker copies the frozen weights: their pages stay copy-on-write shared.

    (Fused CPU kernels keep pre-packed weights of their own, per worker and batch size:
    a documented cache beside these, which WANWU_CPU_FUSION=0 turns off.)
    """
    corpus_item = corpus()[0][1]
    for _ in range(8):  # serve first: inference must not dirty the weight pages
        requests.post(f"{server.url}/predict", data=corpus_item, timeout=60)

    seen = {pid: info["memory"] for pid, info in worker_infos(server).items()}
    assert len(seen) == server.workers
    for pid, mem in seen.items():
        assert mem["weights_bytes"] > 40e6, mem  # ResNet-18's folded fp32 weights
        assert mem["weights_shared_fraction"] > 0.95, (pid, mem)


def test_untrained_model_is_labelled(server, real_model_path):
    import json

    trained = json.loads(real_model_path.with_suffix(".json").read_text())["trained"]
    assert requests.get(f"{server.url}/healthz", timeout=10).json()["model"]["trained"] is trained
    if not trained:
        assert "UNTRAINED MODEL" in server.log()
        assert "Untrained model" in requests.get(server.url, timeout=10).text


def test_a_worker_takes_connections_only_once_warm(real_model_path, gunicorn):
    """A request that reaches the socket while the worker warms up waits; it never gets 503."""
    server = gunicorn(workers=1, model=real_model_path, max_batch=8).launch()
    try:
        deadline = time.monotonic() + 120
        while True:  # the socket listens from the start: the request waits in its backlog
            assert server.proc.poll() is None and time.monotonic() < deadline, server.log()
            sent_while_cold = "warmed up batch sizes" not in server.log()
            try:
                first = requests.get(f"{server.url}/readyz", timeout=60)
                break
            except requests.ConnectionError:
                time.sleep(0.01)
        assert sent_while_cold, "the worker was warm before the first request: nothing tested"
        assert first.status_code == 200, first.text
    finally:
        server.stop()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_workers_initialise_cuda_after_fork_and_match_the_reference(real_model_path, gunicorn):
    """On a GPU: the master never opens the GPU (a CUDA context does not survive fork); the
    worker does, serves on it in fp32, and answers like the reference pipeline."""
    with gunicorn(workers=1, model=real_model_path, device="cuda") as srv:
        assert requests.get(f"{srv.url}/v1/model", timeout=10).json()["device"].startswith("cuda")
        items = corpus()
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(
                    lambda item: requests.post(
                        f"{srv.url}/predict", files={"file": item}, timeout=60
                    ).json(),
                    items,
                )
            )
        for (_, data), body in zip(items, answers, strict=True):
            assert_matches_reference(body["predictions"], reference_probs(real_model_path, data))
        gpu_files = {pid: opened_gpu_files(pid) for pid in [srv.proc.pid, *srv.worker_pids()]}
    assert not gpu_files.pop(srv.proc.pid), "the master opened the GPU before fork"
    assert all(gpu_files.values()), "a worker serves on CUDA without having opened the GPU"


def opened_gpu_files(pid: int) -> list[str]:
    """The NVIDIA device files process `pid` holds open (CUDA initialisation opens them)."""
    fds = Path(f"/proc/{pid}/fd")
    targets = []
    for fd in fds.iterdir():
        try:
            targets.append(os.readlink(fd))
        except OSError:
            continue  # closed meanwhile
    return [t for t in targets if t.startswith("/dev/nvidia")]
