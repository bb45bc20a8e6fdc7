"""Three instances behind nginx (the shipped config): kill one mid-load, lose nothing."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from benchkit.images import image_bytes
from benchkit.nginx import NginxProxy

pytestmark = [pytest.mark.integration, pytest.mark.needs("nginx")]
IMAGE = image_bytes()


def test_killing_an_instance_mid_load_fails_no_request(real_model_path, tmp_path, gunicorn):
    instances = [
        gunicorn(workers=1, model=real_model_path, max_batch=4, threads=1, pin_cpus=0)
        for _ in range(3)
    ]
    for instance in instances:
        instance.start()
    try:
        upstreams = [f"127.0.0.1:{i.port}" for i in instances]
        with NginxProxy(tmp_path, upstreams) as proxy:
            outcomes: list[tuple[float, int | str, str]] = []
            lock = threading.Lock()
            killed_at: list[float] = []

            def call(n: int) -> None:
                try:
                    r = requests.post(
                        f"{proxy.url}/predict",
                        data=IMAGE,
                        timeout=30,
                        headers={"Content-Type": "image/jpeg"},
                    )
                    outcome = (time.monotonic(), r.status_code, "")
                except requests.RequestException as exc:
                    outcome = (time.monotonic(), type(exc).__name__, "")
                with lock:
                    outcomes.append(outcome)
                if n == 60:  # a third of the way in: kill a whole instance, master and worker
                    victim = instances[0]
                    for pid in [*victim.worker_pids(), victim.proc.pid]:
                        os.kill(pid, signal.SIGKILL)
                    killed_at.append(time.monotonic())

            with ThreadPoolExecutor(8) as pool:
                list(pool.map(call, range(180)))
    finally:
        for instance in instances:
            instance.stop()
    statuses = Counter(status for _, status, _ in outcomes)
    assert statuses == {200: 180}, statuses
    after = [o for o in outcomes if o[0] > killed_at[0]]
    assert len(after) > 60, "the load did not go on after the kill"
    tried = [
        re.search(r"upstream=(.*) upstream_status=(.*) id=", line).groups()
        for line in (tmp_path / "access.log").read_text().splitlines()
        if "POST /predict" in line
    ]
    served_by = Counter(addresses.split(", ")[-1] for addresses, _ in tried)
    assert set(served_by) == set(upstreams), served_by  # every instance took traffic
    retried = [statuses for _, statuses in tried if "," in statuses]
    print(f"per instance: {dict(served_by)}; requests retried on another instance: {len(retried)}")
