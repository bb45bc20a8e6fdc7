#!/usr/bin/env python3
"""wanwu beside TorchServe 0.12 and LitServe, serving the same TorchScript artifact.

Each peer runs from its own virtualenv under --venvs (created on first use: a minute or two,
from PyPI and this machine's torch wheels), never from the project's. All three get the
same photos, closed-loop load at each --concurrency, fp32, batching on (max batch 8, ~5 ms
wait), and all CPU threads of the machine. Requests use each server's natural format:
raw JPEG bodies for wanwu and TorchServe, multipart for LitServe; the wanwu-torchserve row
sends TorchServe's exact requests (POST /predictions/resnet18) to wanwu. Prints a markdown table
and writes throughput and latency plots.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import requests

from app.artifact import read_manifest
from app.labels import names
from app.settings import DEFAULT_MODEL, usable_cpus
from benchkit import options
from benchkit.bench import ROOT, header, load_images
from benchkit.loadgen import MakeRequest, torchserve
from benchkit.measure import ProcessTarget, Target, measure, settle, wait_until_up
from benchkit.server import GunicornServer, free_port

CORES = usable_cpus()
TORCH = ["torch==2.14.1", "torchvision==0.29.1"]
PACKAGES = {
    "torchserve": [
        *TORCH,
        "torchserve==0.12.0",
        "torch-model-archiver==0.12.0",
        "pyyaml",
        "captum",
    ],
    "litserve": [*TORCH, "litserve", "pillow", "python-multipart"],
}
MAX_BATCH, WAIT_MS = 8, 5
WORKERS, THREADS = 1, CORES  # every server gets the same; --workers changes both


def venv(root: Path, peer: str) -> Path:
    """Return the peer's virtualenv bin folder, creating it on first use."""
    path = root / peer
    if not (path / ".ready").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(path)], check=True)
        subprocess.run(
            [str(path / "bin/python"), "-m", "pip", "install", "-q", *PACKAGES[peer]], check=True
        )
        (path / ".ready").touch()
    return path / "bin"


class TorchServe:
    """TorchServe with the image_classifier handler and server-side batching (a Target)."""

    def __init__(self, bin_dir: Path, work: Path, model: Path) -> None:
        self.bin, self.work = bin_dir, work / "torchserve"
        shutil.rmtree(self.work, ignore_errors=True)
        (self.work / "store").mkdir(parents=True)
        labels = {str(i): name for i, name in enumerate(names("en"))}
        (self.work / "index_to_name.json").write_text(json.dumps(labels))
        subprocess.run(
            [
                str(bin_dir / "torch-model-archiver"),
                "--model-name",
                "resnet18",
                "--version",
                "1.0",
                "--serialized-file",
                str(model),
                "--handler",
                "image_classifier",
                "--extra-files",
                str(self.work / "index_to_name.json"),
                "--export-path",
                str(self.work / "store"),
            ],
            check=True,
        )
        self.port, self.admin = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (self.work / "config.properties").write_text(
            "\n".join(
                [
                    f"inference_address=http://127.0.0.1:{self.port}",
                    f"management_address=http://127.0.0.1:{self.admin}",
                    f"metrics_address=http://127.0.0.1:{free_port()}",
                    "disable_token_authorization=true",
                    "enable_envvars_config=false",
                    f"default_workers_per_model={WORKERS}",
                    "number_of_netty_threads=2",
                    f"model_store={self.work / 'store'}",
                    "install_py_dep_per_model=false",
                    "job_queue_size=100",
                    "enable_model_api=true",
                ]
            )
        )

    def __enter__(self) -> TorchServe:
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(THREADS),
            "PATH": f"{self.bin}:{os.environ['PATH']}",
        }
        self.proc = subprocess.Popen(
            [
                str(self.bin / "torchserve"),
                "--start",
                "--foreground",
                "--ncs",
                "--ts-config",
                str(self.work / "config.properties"),
                "--disable-token-auth",
            ],
            cwd=self.work,
            env=env,
            stdout=open(self.work / "ts.log", "wb"),
            stderr=subprocess.STDOUT,
        )
        wait_until_up(f"http://127.0.0.1:{self.admin}/models")
        response = requests.post(
            f"http://127.0.0.1:{self.admin}/models",
            timeout=300,
            params={
                "url": "resnet18.mar",
                "batch_size": MAX_BATCH,
                "max_batch_delay": WAIT_MS,
                "initial_workers": WORKERS,
                "synchronous": "true",
            },
        )
        response.raise_for_status()
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def make(self, images: list[tuple[str, bytes]]) -> MakeRequest:
        return torchserve(self.url, images, "resnet18")

    def __exit__(self, *exc: object) -> None:
        subprocess.run(
            [str(self.bin / "torchserve"), "--stop"],
            capture_output=True,
            env={**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}"},
        )
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class LitServe(ProcessTarget):
    """scripts/peers/litserve_app.py in the LitServe virtualenv."""

    health_path = "/health"

    def __init__(self, bin_dir: Path, work: Path, model: Path) -> None:
        super().__init__(log=work / "litserve.log")
        self.command = [
            str(bin_dir / "python"),
            str(ROOT / "scripts/peers/litserve_app.py"),
            str(model),
            str(self.port),
            str(THREADS),
            str(MAX_BATCH),
            str(WORKERS),
        ]

    def make(self, images: list[tuple[str, bytes]]) -> MakeRequest:
        def send(session: requests.Session, n: int) -> requests.Response:
            name, data = images[n % len(images)]
            return session.post(f"{self.url}/predict", files={"content": (name, data)}, timeout=60)

        return send


class WanwuViaTorchServe(GunicornServer):
    """wanwu sent TorchServe's own requests: POST /predictions/{model}, a raw JPEG body."""

    def make(self, images: list[tuple[str, bytes]]) -> MakeRequest:
        return torchserve(self.url, images, read_manifest(self.env["WANWU_MODEL"])["name"])


def wanwu(
    work: Path, model: Path, fuse: bool = True, via_torchserve: bool = False
) -> GunicornServer:
    """This project, with its defaults plus the common batching settings."""
    return (WanwuViaTorchServe if via_torchserve else GunicornServer)(
        work,
        workers=WORKERS,
        model=model,
        threads=THREADS,
        max_batch=MAX_BATCH,
        max_wait_ms=WAIT_MS,
        cpu_fusion=int(fuse),
        precision="fp32",  # as the peers run it; `auto` picks bf16 on a CPU with native bf16
    )


def main() -> int:
    parser = options.parser(
        __doc__, concurrency="1,8,32", seconds=20, images=None, model=ROOT / DEFAULT_MODEL
    )
    # wanwu-unfused: WANWU_CPU_FUSION=0, to show how much of the difference fusion makes.
    # wanwu-torchserve: wanwu through its TorchServe route, with TorchServe's own requests.
    parser.add_argument(
        "--peers", default="wanwu,wanwu-torchserve,wanwu-unfused,torchserve,litserve"
    )
    parser.add_argument("--venvs", type=Path, default=Path.home() / ".cache/wanwu-peers")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "peers")
    parser.add_argument(
        "--workers", type=int, default=1, help="model workers per server (threads: CPUs / workers)"
    )
    args = parser.parse_args()
    global WORKERS, THREADS
    WORKERS, THREADS = args.workers, max(1, CORES // args.workers)
    args.out.mkdir(parents=True, exist_ok=True)
    images = load_images(args.images)
    levels = args.concurrency
    print(header("Peers (scripts/bench_peers.py)"))
    print(
        f"- fp32, max batch {MAX_BATCH}, wait {WAIT_MS} ms, {WORKERS} worker(s) x {THREADS} "
        "torch threads each, "
        f"{args.seconds:g} s per level, {len(images)} photos\n"
    )
    print("| server | clients | req/s | p50 ms | p90 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    results: dict[str, list[tuple[int, float, float, float]]] = {}
    for peer in args.peers.split(","):
        server: Target
        if peer.startswith("wanwu"):
            server = wanwu(
                args.out,
                args.model,
                fuse=peer != "wanwu-unfused",
                via_torchserve=peer == "wanwu-torchserve",
            )
        else:
            server = {"torchserve": TorchServe, "litserve": LitServe}[peer](
                venv(args.venvs, peer), args.out, args.model
            )
        with server:
            make = server.make(images)
            settle(make)
            for clients in levels:
                row = measure(make, clients, args.seconds)
                results.setdefault(peer, []).append((clients, row.rate, row.p50, row.p99))
                print(
                    f"| {peer} | {clients} | {row.rate:.1f} | {row.p50:.0f} | {row.p90:.0f} | "
                    f"{row.p99:.0f} | {row.errors} |",
                    flush=True,
                )
    plot(results, args.out)
    return 0


def plot(results: dict[str, list[tuple[int, float, float, float]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    for n, (peer, rows) in enumerate(results.items()):
        clients, color = [r[0] for r in rows], f"C{n}"
        left.plot(clients, [r[1] for r in rows], marker="o", color=color, label=peer)
        right.plot(clients, [r[3] for r in rows], marker="o", color=color, label=f"{peer} p99")
        right.plot(
            clients,
            [r[2] for r in rows],
            marker=".",
            linestyle=":",
            color=color,
            label=f"{peer} p50",
        )
    left.set(xscale="log", xlabel="concurrent clients", ylabel="requests/s", title="Throughput")
    right.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="ms", title="Latency")
    left.legend()
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "peers.png", dpi=110)
    print(f"\nplot: {out / 'peers.png'}")


if __name__ == "__main__":
    sys.exit(main())
