#!/usr/bin/env python3
"""The Docker image, built and run in a real engine (`make image-check`; CI runs it).

Installs Debian's docker.io and debootstrap (benchkit.system), starts a dockerd of its own
(benchkit.docker: no bridge, no iptables rule, the host's network left as found), makes a base
image with debootstrap from this machine's Debian mirror, builds the Dockerfile as it is with
the host's pip settings, and runs the image three ways (benchkit.container):

1. as the README says, `docker run IMAGE`: it serves, and names the shared tench photo;
2. hardened (--read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges, the
   image's non-root user) with the metrics folder on a tmpfs, as deploy/k8s runs it;
3. limited (--cpus 1 --memory 2g): one worker, the 2 GiB limit in /metrics and memory under
   load within it; then `docker stop` under load: every request held answered, exit 0.

The engine's data root (base image, build cache) stays in .image-check/ (git-ignored), so a
second run rebuilds only what changed. Prints the figures as markdown; exits 1 on a failure.
"""

from __future__ import annotations

import argparse
import collections
import shlex
import sys
import time
from importlib.metadata import version
from pathlib import Path

from benchkit import docker, system
from benchkit.bench import ROOT, header
from benchkit.container import Container, stop_under_load, under_load
from benchkit.images import image_bytes, sample_photos

GIB = 1024**3
BASE = "wanwu-base:bookworm"
HARDENED = ("--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL")
HARDENED += ("--security-opt", "no-new-privileges")
METRICS_TMPFS = ("--tmpfs", "/metrics-db", "--env", "PROMETHEUS_MULTIPROC_DIR=/metrics-db")
LIMITS = ("--cpus", "1", "--memory", "2g")


class Check:
    """Figures and failures, printed as they come."""

    def __init__(self) -> None:
        self.passed = 0
        self.failures: list[str] = []

    def figure(self, name: str, value: object) -> None:
        print(f"| {name} | {value} |", flush=True)

    def expect(self, ok: bool, what: str) -> None:
        print(f"| {'ok' if ok else 'FAILED'} | {what} |", flush=True)
        if ok:
            self.passed += 1
        else:
            self.failures.append(what)


def build(engine: docker.Engine, args: argparse.Namespace, check: Check) -> None:
    made = time.monotonic()
    if docker.make_base_image(engine, BASE, args.mirror or docker.debian_mirror()):
        check.figure("base image (debootstrap + import), s", f"{time.monotonic() - made:.0f}")
    build_args = {
        "PYTHON_IMAGE": BASE,
        "TORCH_INDEX": args.torch_index,
        "TORCH_VERSION": args.torch_version,
        "TORCHVISION_VERSION": args.torchvision_version,
        "MODEL": args.model,
    }
    with docker.pip_build_args() as pip:
        command = ["build", "--network", "host", "--tag", args.tag]
        for key, value in {**build_args, **pip}.items():
            command += ["--build-arg", f"{key}={value}"]
        print(f"- build: docker {shlex.join(command)} .", flush=True)
        started = time.monotonic()
        engine.docker(*command, str(ROOT), timeout=3600)
    check.figure("build, s", f"{time.monotonic() - started:.0f}")
    engine.docker("image", "prune", "--force")  # earlier builds' images: the cache keeps them
    size = int(engine.docker("image", "inspect", "-f", "{{.Size}}", args.tag).stdout)
    check.figure("image size, GB", f"{size / 1e9:.2f}")


def as_the_readme_says(engine: docker.Engine, tag: str, check: Check) -> None:
    container = Container(engine, tag)
    try:
        check.figure("plain run: ready after, s", f"{container.wait_ready():.0f}")
        check.figure("plain run: memory at rest, MiB", mib(container.metrics()))
        photos = [p for p in sample_photos() if p.name.endswith("_tench.JPEG")]
        if photos:
            label = container.classify(photos[0].read_bytes())["predictions"][0]["label"]
            check.expect(label == "tench", f"the tench photo is named {label!r}")
        else:
            print("- the shared photos are absent: the tench photo is not classified")
    finally:
        container.remove()


def hardened(engine: docker.Engine, tag: str, check: Check) -> None:
    container = Container(engine, tag, *HARDENED, *METRICS_TMPFS)
    try:
        check.figure("hardened run: ready after, s", f"{container.wait_ready():.0f}")
        user = engine.docker("exec", container.id, "id", "-u").stdout.strip()
        check.expect(user != "0", f"hardened run: serves as user {user}")
        predictions = container.classify(image_bytes(seed=1))["predictions"]
        check.expect(len(predictions) > 0, "hardened run: classifies, metrics on a tmpfs")
        check.expect(container.metrics()["wanwu_images_total"] >= 1, "hardened run: counts it")
    finally:
        container.remove()


def limited(engine: docker.Engine, tag: str, check: Check, seconds: float) -> None:
    container = Container(engine, tag, *HARDENED, *LIMITS)
    try:
        check.figure("limited run: ready after, s", f"{container.wait_ready():.0f}")
        metrics = container.metrics()
        workers = metrics["wanwu_workers_configured"]
        check.expect(workers == 1, f"limited run: {workers:.0f} worker(s) for --cpus 1")
        limit = metrics["wanwu_memory_limit_bytes"]
        check.expect(limit == 2 * GIB, f"limited run: memory limit {limit / GIB:.2f} GiB")
        check.figure("limited run: memory at rest, MiB", mib(metrics))
        records, peak = under_load(container, clients=8, seconds=seconds)
        statuses = collections.Counter(r.status for r in records)
        check.figure(f"limited run: {seconds:.0f} s of 8 clients, statuses", dict(statuses))
        check.figure("limited run: memory under load (peak), MiB", f"{peak / 2**20:.0f}")
        check.expect(peak < limit, "limited run: memory under load stays under the limit")
        check.expect(set(statuses) <= {200, 503}, "limited run: every request answered")
        stop = stop_under_load(container)
        check.figure("docker stop under load, s", f"{stop.seconds:.1f}")
        answered = stop.statuses.count(200)
        check.expect(
            answered == len(stop.statuses),
            f"docker stop: {answered} of {len(stop.statuses)} held requests answered 200, "
            f"{stop.answered_after} after the stop began",
        )
        check.expect(stop.exit_code == 0, f"docker stop: exit code {stop.exit_code}")
    finally:
        container.remove()


def mib(metrics: dict[str, float]) -> str:
    return f"{metrics['wanwu_memory_usage_bytes'] / 2**20:.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="efficientnet_lite0", help="the MODEL build arg")
    parser.add_argument("--torch-index", default="", help="TORCH_INDEX (empty: pip's index)")
    parser.add_argument("--torch-version", default=version("torch"))
    parser.add_argument("--torchvision-version", default=version("torchvision"))
    parser.add_argument("--tag", default="wanwu:image-check")
    parser.add_argument("--mirror", help="Debian mirror for the base image (default: apt's)")
    parser.add_argument("--load-seconds", type=float, default=20)
    parser.add_argument(
        "--data-root", default=str(ROOT / ".image-check" / "docker"), help="the engine's store"
    )
    args = parser.parse_args()
    print(header("Docker image check"), flush=True)
    missing = system.require("dockerd", "debootstrap")
    if missing:
        print(missing)
        return 1
    check = Check()
    network = docker.network_state()
    print("\n| step | figure |\n|---|---|", flush=True)
    with docker.Engine(Path(args.data_root)) as engine:
        build(engine, args, check)
        as_the_readme_says(engine, args.tag, check)
        hardened(engine, args.tag, check)
        limited(engine, args.tag, check, args.load_seconds)
    check.expect(not engine.leftovers(), f"nothing of the engine is left: {engine.leftovers()}")
    check.expect(docker.network_state() == network, "the host's network is as it was found")
    for failure in check.failures:
        print(f"FAILED: {failure}")
    print(f"\nimage-check: {check.passed} passed, {len(check.failures)} failed")
    return 1 if check.failures else 0


if __name__ == "__main__":
    sys.exit(main())
