"""Load generators for the benchmark and reliability scripts: closed and open loop."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests

# A request maker gets a session and a sequence number and returns the response.
MakeRequest = Callable[[requests.Session, int], requests.Response]


@dataclass(frozen=True)
class Record:
    """One request: when it started, how long it took, and what came back."""

    started: float
    latency: float
    status: int | str  # HTTP status, or the exception's name
    retry_after: str = ""


def post_images(url: str, images: list[tuple[str, bytes]], **headers: str) -> MakeRequest:
    """Post image n (round-robin) to `url` as the raw request body."""

    def make(session: requests.Session, n: int) -> requests.Response:
        return session.post(url, data=images[n % len(images)][1], headers=headers, timeout=60)

    return make


def raw_jpeg(url: str, images: list[tuple[str, bytes]]) -> MakeRequest:
    """Post image n (round-robin) to /predict as a raw JPEG body."""
    return post_images(f"{url}/predict", images, **{"Content-Type": "image/jpeg"})


def torchserve(url: str, images: list[tuple[str, bytes]], model: str) -> MakeRequest:
    """Post image n (round-robin) to TorchServe's /predictions/{model}, as its docs do."""
    return post_images(f"{url}/predictions/{model}", images)


def oip(url: str, images: list[tuple[str, bytes]], model: str) -> MakeRequest:
    """Post image n (round-robin) to OIP v2 infer as a raw binary request (the whole body)."""
    headers = {"Inference-Header-Content-Length": "0"}
    return post_images(f"{url}/v2/models/{model}/infer", images, **headers)


def timed(make: MakeRequest, session: requests.Session, n: int) -> Record:
    started = time.monotonic()
    try:
        response = make(session, n)
        return Record(
            started,
            time.monotonic() - started,
            response.status_code,
            response.headers.get("Retry-After", ""),
        )
    except requests.RequestException as exc:
        return Record(started, time.monotonic() - started, type(exc).__name__)


def closed_loop(
    make: MakeRequest,
    clients: int,
    seconds: float,
    processes: int = 1,
    until: threading.Event | None = None,
) -> list[Record]:
    """Each client sends its next request as soon as the last one is answered, for `seconds`
    or (clients of this process only) until `until` is set.

    With `processes` > 1 the clients are spread over that many forked processes: one Python
    process sends at most a few thousand requests a second under its GIL, less than a GPU
    server answers. Their monotonic clocks are the same clock, so records merge as they are.
    """
    if processes <= 1:
        return _clients(make, range(clients), clients, seconds, until)
    if until is not None:
        raise ValueError("`until` stops the clients of this process only: processes=1")
    context = multiprocessing.get_context("fork")  # forked: `make` is a closure, not pickled
    children = []
    for first in range(min(processes, clients)):
        receive, send = context.Pipe(duplex=False)
        share = range(first, clients, processes)
        child = context.Process(
            target=lambda share=share, send=send: send.send(_clients(make, share, clients, seconds))
        )
        child.start()
        children.append((child, receive))
    records = []
    for child, receive in children:
        records += receive.recv()
        child.join()
    return records


def _clients(
    make: MakeRequest,
    offsets: range,
    clients: int,
    seconds: float,
    until: threading.Event | None = None,
) -> list[Record]:
    """Closed-loop clients `offsets` of `clients`, as threads of this process."""
    records: list[Record] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    until = until or threading.Event()

    def client(offset: int) -> None:
        session, n = requests.Session(), offset
        while time.monotonic() < stop_at and not until.is_set():
            record = timed(make, session, n)
            with lock:
                records.append(record)
            n += clients

    threads = [threading.Thread(target=client, args=(i,)) for i in offsets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return records


def open_loop(
    make: MakeRequest, rate: float, seconds: float, max_in_flight: int = 256
) -> list[Record]:
    """Start requests at a fixed rate whatever the answers do (an overload generator)."""
    local = threading.local()

    def send(n: int) -> Record:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return timed(make, local.session, n)

    futures = []
    begin = time.monotonic()
    with ThreadPoolExecutor(max_in_flight) as pool:
        n = 0
        while (due := begin + n / rate) < begin + seconds:
            time.sleep(max(0.0, due - time.monotonic()))
            futures.append(pool.submit(send, n))
            n += 1
    return [f.result() for f in futures]
