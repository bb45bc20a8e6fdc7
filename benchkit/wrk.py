"""Closed-loop load from wrk (C, one thread), for servers that a Python load generator on the
same CPUs would slow down.

Python's `requests` spends over a millisecond of CPU per request (bench_service's load
generator column: 8 % of 2 CPUs at 120 requests/s); on a 2-CPU machine that is CPU the
server under test no longer has. wrk (`apt install wrk`) keeps a connection per client, each
sending its next request when the last one is answered, as `loadgen.closed_loop` does; the
Lua side (wrk_post.lua) posts the photos round-robin as raw bodies and reports the run as
JSON. Latency percentiles are wrk's; only answers below 400 count as served (wrk counts
the rest, and socket errors, apart).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from benchkit import system
from benchkit.measure import Row

SCRIPT = Path(__file__).with_name("wrk_post.lua")


def measure(
    url: str, images: list[tuple[str, bytes]], clients: int, seconds: float, content_type: str
) -> tuple[Row, float]:
    """Closed-loop load from `clients` connections for `seconds`, each POSTing the images
    round-robin to `url`: the row (no per-request records) and the mean latency in ms."""
    missing = system.require("wrk")
    if missing:
        raise SystemExit(missing)
    with tempfile.TemporaryDirectory(prefix="wanwu-wrk-") as folder:
        paths = []
        for n, (_, data) in enumerate(images):
            path = Path(folder) / str(n)
            path.write_bytes(data)
            paths.append(str(path))
        command = [
            "wrk",
            "--threads=1",
            f"--connections={clients}",
            f"--duration={max(1, round(seconds))}s",
            "--timeout=60s",
            f"--script={SCRIPT}",
            url,
            "--",
            *paths,
        ]
        env = {**os.environ, "WRK_CONTENT_TYPE": content_type}
        out = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout
    run = json.loads(out.strip().splitlines()[-1])
    elapsed = run["duration_us"] / 1e6
    errors = ", ".join(
        f"{what} x{n}"
        for what, n in (("status >= 400", run["non_2xx"]), ("socket", run["socket_errors"]))
        if n
    )
    p50, p90, p99 = (run[f"p{q}_us"] / 1000 for q in (50, 90, 99))
    row = Row(
        clients,
        elapsed,
        (run["requests"] - run["non_2xx"]) / elapsed,
        p50,
        p90,
        p99,
        errors or "0",
        (),
    )
    return row, run["mean_us"] / 1000
