"""The image run as a container of a `benchkit.docker.Engine`: ready per /readyz, metrics,
a classification, and `docker stop` under load.

The container shares the host's network (`--network host`: the engine runs without a bridge),
so it binds free loopback ports through WANWU_BIND and WANWU_GRPC_BIND instead of `-p`.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import requests
from prometheus_client.parser import text_string_to_metric_families

from benchkit.docker import Engine
from benchkit.images import image_bytes
from benchkit.loadgen import Record, closed_loop, raw_jpeg, timed
from benchkit.server import free_port


class Container:
    """One `docker run -d` of an image with extra `docker run` options."""

    def __init__(self, engine: Engine, image: str, *options: str) -> None:
        self.engine = engine
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        binds = [f"WANWU_BIND=127.0.0.1:{self.port}", f"WANWU_GRPC_BIND=127.0.0.1:{free_port()}"]
        self.id = engine.docker(
            "run", "-d", "--network", "host", *(f"--env={bind}" for bind in binds), *options, image
        ).stdout.strip()

    def inspect(self, template: str) -> str:
        return self.engine.docker("inspect", "-f", template, self.id).stdout.strip()

    def logs(self) -> str:
        done = self.engine.docker("logs", self.id, check=False)
        return done.stdout + done.stderr

    def wait_ready(self, timeout: float = 600) -> float:
        """Wait until /readyz counts every worker warm; return the seconds it took."""
        started = time.monotonic()
        while True:
            try:  # a connection waits in the backlog until a worker is warm: a read timeout
                ready = requests.get(f"{self.url}/readyz", timeout=10)
                if ready.ok and ready.json()["workers_ready"] >= ready.json()["workers"]:
                    return time.monotonic() - started
            except requests.RequestException:
                pass
            if self.inspect("{{.State.Running}}") != "true":
                raise RuntimeError(f"the container stopped:\n{self.logs()[-4000:]}")
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"not ready in {timeout:.0f} s:\n{self.logs()[-4000:]}")
            time.sleep(0.5)

    def metrics(self) -> dict[str, float]:
        """The /metrics samples without labels, by name."""
        text = requests.get(f"{self.url}/metrics", timeout=30).text
        return {
            sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if not sample.labels
        }

    def classify(self, photo: bytes) -> dict:
        """POST one JPEG to /predict, as raw body; the JSON answer."""
        response = raw_jpeg(self.url, [("photo.jpg", photo)])(requests.Session(), 0)
        response.raise_for_status()
        return response.json()

    def remove(self) -> None:
        self.engine.docker("rm", "-f", self.id, check=False)


def under_load(container: Container, clients: int, seconds: float) -> tuple[list[Record], float]:
    """Closed-loop load of seeded JPEGs; the records, and the most memory /metrics showed."""
    images = [(f"{n}.jpg", image_bytes(seed=n)) for n in range(8)]
    done = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        load = pool.submit(closed_loop, raw_jpeg(container.url, images), clients, seconds)
        peak = 0.0
        while not load.done():
            peak = max(peak, container.metrics()["wanwu_memory_usage_bytes"])
            done.wait(0.5)
        return load.result(), peak


@dataclass
class Stop:
    """What `docker stop` under load did."""

    seconds: float
    exit_code: int
    statuses: list[int | str]  # of the requests the workers held: HTTP, or the exception
    answered_after: int  # how many of them were answered after it began


def stop_under_load(container: Container, held: int = 16) -> Stop:
    """`docker stop` once the workers hold `held` requests; every one must be answered.

    The requests (4 images each) go out at once; the stop waits until /metrics shows each one
    taken, in flight or answered, so that none is left in the listen backlog, which a closing
    listener drops: those were never the server's to answer.
    """
    files = [("file", (f"{n}.jpg", image_bytes(seed=n))) for n in range(4)]
    url = f"{container.url}/predict"

    def post(session: requests.Session, n: int) -> requests.Response:
        return session.post(url, files=files, timeout=300)

    with ThreadPoolExecutor(held) as pool:
        calls = [pool.submit(timed, post, requests.Session(), n) for n in range(held)]
        # The scrape is in flight too: one less.
        while container.metrics()["wanwu_requests_in_flight"] - 1 + _done(calls) < held:
            time.sleep(0.05)
        began = time.monotonic()
        container.engine.docker("stop", "-t", "60", container.id)
        took = time.monotonic() - began
        records = [c.result() for c in calls]
    return Stop(
        seconds=took,
        exit_code=int(container.inspect("{{.State.ExitCode}}")),
        statuses=[r.status for r in records],
        answered_after=sum(r.started + r.latency > began for r in records),
    )


def _done(calls: list[Future]) -> int:
    return sum(call.done() for call in calls)
