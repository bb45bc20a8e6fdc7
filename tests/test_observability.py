"""Real Gunicorn, two workers: metrics summed across workers, and a graceful drain on SIGTERM."""

from __future__ import annotations

import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from benchkit.images import image_bytes

pytestmark = pytest.mark.integration


def metric(text: str, name: str, labels: str = "") -> float:
    """Return one sample's value from a Prometheus text exposition (0 if absent)."""
    pattern = rf"^{re.escape(name)}{re.escape(labels)} (\S+)$"
    match = re.search(pattern, text, re.M)
    return float(match.group(1)) if match else 0.0


def total(text: str, name: str) -> float:
    """The sum of every sample called `name`, whatever its labels (per model and version)."""
    families = text_string_to_metric_families(text)
    return sum(s.value for f in families for s in f.samples if s.name == name)


def test_scraped_counts_equal_what_was_sent_summed_over_workers(real_model_path, gunicorn):
    image = image_bytes()
    with gunicorn(workers=2, model=real_model_path, max_batch=4) as server:

        def good(i: int) -> int:
            files = [("file", (f"{i}-{n}.jpg", image)) for n in range(1 + i % 2)]
            return requests.post(f"{server.url}/predict", files=files, timeout=60).status_code

        def bad(_: int) -> int:
            return requests.post(
                f"{server.url}/predict?topk=0",
                data=image,
                headers={"Content-Type": "image/jpeg"},
                timeout=60,
            ).status_code

        with ThreadPoolExecutor(8) as pool:
            good_codes = list(pool.map(good, range(20)))
            bad_codes = list(pool.map(bad, range(6)))
        assert good_codes == [200] * 20 and bad_codes == [422] * 6
        pids = {
            requests.get(f"{server.url}/v1/model", timeout=10).json()["worker"]["pid"]
            for _ in range(20)
        }
        text = requests.get(f"{server.url}/metrics", timeout=10).text

    images = sum(1 + i % 2 for i in range(20))
    assert metric(text, "wanwu_requests_total", '{route="/predict",status="200"}') == 20
    assert metric(text, "wanwu_requests_total", '{route="/predict",status="422"}') == 6
    assert metric(text, "wanwu_images_total") == images + 0  # warm-up passes are not counted
    assert total(text, "wanwu_batch_size_sum") == images
    assert total(text, "wanwu_queue_wait_seconds_count") == images
    assert metric(text, "wanwu_request_duration_seconds_count", '{route="/predict"}') == 26
    assert metric(text, "wanwu_queue_depth") == 0
    assert text.count("wanwu_model_info{") == 1  # one series, whatever the worker count
    assert len(pids) >= 1


def test_sigterm_drains_every_accepted_request(real_model_path, gunicorn):
    """SIGTERM once the workers hold all 32 requests (4 images each): every one is answered."""
    files = [("file", (f"{n}.jpg", image_bytes(seed=n))) for n in range(4)]
    server = gunicorn(
        workers=2,
        model=real_model_path,
        max_batch=4,
        queue_max=256,
        http_threads=32,
        timeout_ms=120_000,  # a slow machine answers late, never 504: this test is about draining
    ).start()
    finished: list[float] = []
    lock = threading.Lock()

    def call(_: int) -> int:
        response = requests.post(f"{server.url}/predict", files=files, timeout=120)
        with lock:
            finished.append(time.monotonic())
        return response.status_code

    def taken() -> int:
        """Requests the workers hold or have answered (the scrape itself is in flight too)."""
        text = requests.get(f"{server.url}/metrics", timeout=30).text
        with lock:
            return int(metric(text, "wanwu_requests_in_flight")) - 1 + len(finished)

    try:
        with ThreadPoolExecutor(32) as pool:
            futures = [pool.submit(call, i) for i in range(32)]
            while taken() < 32:  # every connection accepted: none waits in the listen backlog
                time.sleep(0.01)
            signalled = time.monotonic()
            server.signal(signal.SIGTERM)
            codes = [f.result() for f in futures]
        assert server.proc.wait(60) == 0
    finally:
        server.stop()
    assert codes == [200] * 32
    assert sum(t > signalled for t in finished) > 0, "the burst ended before SIGTERM"
    assert "Worker exiting" in server.log() or "Shutting down" in server.log()
