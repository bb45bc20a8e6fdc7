#!/usr/bin/env python3
"""A request thread's CPU per raw-body `POST /predict`: the path outside Flask, Flask's
route, and the image decode alone, interleaved in one process.

Builds the app over --model as a worker does (multiprocess metrics in a folder of their own,
the access log written as the server writes it, to /dev/null here), then sends the photos as
WSGI calls from this thread, in rounds that take turns: through the app as served
(app/adapters/raw_predict.py answers), through Flask alone, and only decoding (decode,
resize and crop as the service does). Each figure is this thread's CPU time per request
(`time.thread_time`): the model's own thread is not in it, whatever the model, so the
differences are what each layer costs. Decoding alone runs with warm caches, back to back;
in a request it follows the model's pass and costs more, so "outside decode" is an upper
bound. No sockets: Gunicorn's part is not in these figures (scripts/request_cost.py measures
a whole server).
"""

from __future__ import annotations

import cProfile
import logging
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

from werkzeug.test import EnvironBuilder

from benchkit import options
from benchkit.bench import header, load_images


def main() -> int:
    parser = options.parser(__doc__, server=True, rounds=5, reps=100)
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="then profile N more requests on the served path (cProfile on this thread's "
        "CPU clock) and print the functions that took the most",
    )
    args = parser.parse_args()
    # As a worker's: prometheus_client reads the folder when it is first imported.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="wanwu-metrics-")
    from app import imaging, runtime
    from app.artifact import read_manifest
    from app.listeners import LISTENER
    from app.web import create_app

    settings = options.server_settings([f"MODEL={args.model}", *args.set])
    stderr, sys.stderr = sys.stderr, open(os.devnull, "w")  # noqa: SIM115  (the log's stream)
    runtime.configure_logging("info")
    sys.stderr = stderr
    logging.getLogger("wanwu").setLevel(logging.WARNING)  # the access log stays at INFO
    app = create_app(settings)
    core = app.extensions["wanwu.core"]
    for engine in core.registry.served():
        engine.start()
        engine.batcher.ready.wait(120)
    images = [data for _, data in load_images(args.images)]
    spec = read_manifest(args.model)["input"]

    def environ(data: bytes) -> dict:
        built = EnvironBuilder("/predict", method="POST", data=data, content_type="image/jpeg")
        return {**built.get_environ(), LISTENER: "inference"}

    def call(wsgi: Callable) -> Callable[[dict], None]:
        def send(env: dict) -> None:
            statuses = []
            b"".join(wsgi(env, lambda status, headers: statuses.append(status)))
            if not statuses[0].startswith("200"):
                raise SystemExit(f"/predict answered {statuses[0]}")

        return send

    def decode(data: bytes) -> None:
        imaging.load_pixels(data, spec, settings.max_pixels, settings.decode)

    # Each path: what it is given (made before the clock starts), and what it does with it.
    paths = {
        "outside Flask (as served)": (environ, call(app.wsgi_app)),
        "Flask's route": (environ, call(app.wsgi_app.flask)),
        "decode, resize and crop only": (bytes, decode),
    }
    per_round: dict[str, list[float]] = {name: [] for name in paths}
    for given, send in paths.values():  # warm every path: first calls allocate
        for data in images[:10]:
            send(given(data))
    for _ in range(args.rounds):
        for name, (given, send) in paths.items():
            inputs = [given(images[n % len(images)]) for n in range(args.reps)]
            started = time.thread_time()
            for item in inputs:
                send(item)
            per_round[name].append((time.thread_time() - started) * 1000 / args.reps)
    profile = cProfile.Profile(time.thread_time)
    given, send = paths["outside Flask (as served)"]
    inputs = [given(images[n % len(images)]) for n in range(args.profile)]
    profile.runcall(lambda: [send(item) for item in inputs])
    for engine in core.registry.served():
        engine.stop(timeout=30)

    print(header("A request thread's CPU per raw /predict (scripts/request_path.py)"))
    print(
        f"\nmodel {args.model.name}, decode={settings.decode}; {args.rounds} rounds of "
        f"{args.reps} requests per path; this thread's CPU ms per request\n"
    )
    print("| path | median | rounds |")
    print("|---|---:|---|")
    medians = {name: statistics.median(times) for name, times in per_round.items()}
    for name, times in per_round.items():
        print(f"| {name} | {medians[name]:.3f} | {', '.join(f'{t:.3f}' for t in times)} |")
    served, flask, decoded = per_round.values()
    saved = [b - a for a, b in zip(served, flask, strict=True)]
    print(
        f"\nFlask's route minus the served path, round by round (the machine drifts between "
        f"rounds, not within one): {', '.join(f'{d:.3f}' for d in saved)}; median "
        f"{statistics.median(saved):.3f} ms"
    )
    print(
        "outside decode, medians: "
        + ", ".join(
            f"{name} {medians[name] - statistics.median(decoded):.3f} ms"
            for name in list(paths)[:2]
        )
    )
    if args.profile:
        print(f"\nthe served path, {args.profile} requests, by own CPU time (cProfile):\n")
        pstats.Stats(profile, stream=sys.stdout).sort_stats("tottime").print_stats(20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
