"""Boot real Gunicorn from gunicorn.conf.py on a loopback socket, for integration tests.

The socket is bound and listening here, before Gunicorn starts, and handed to it as an
inherited file descriptor (`WANWU_BIND=fd://N`): no port is probed free and then raced for,
and a client may connect at once (it waits in the backlog until a worker is warm).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from benchkit.loadgen import MakeRequest, raw_jpeg

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A loopback port free now, for servers that cannot inherit a bound socket (nginx)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GunicornServer:
    """One Gunicorn master with its workers (a `benchkit.measure.Target`); logs go to a file."""

    def __init__(
        self, log_dir: Path, workers: int = 2, management: bool = False, **settings: object
    ) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=2048)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # The management API's listener, the same way (it answers with WANWU_ADMIN_KEYS set).
        self.management = socket.create_server(("127.0.0.1", 0)) if management else None
        if self.management is not None:
            settings["management_bind"] = f"fd://{self.management.fileno()}"
            self.management_url = f"http://127.0.0.1:{self.management.getsockname()[1]}"
        self.workers = workers
        self.log_path = log_dir / f"gunicorn-{self.port}.log"
        self.env = {
            **os.environ,
            "WANWU_BIND": f"fd://{self.listener.fileno()}",
            "WANWU_WORKERS": str(workers),
            "WANWU_THREADS": "1",
            **{f"WANWU_{k.upper()}": str(v) for k, v in settings.items()},
        }
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.cwd = ROOT
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120) -> GunicornServer:
        """Start and wait until every worker has warmed up."""
        self.launch()
        try:
            return self.wait_ready(timeout)
        except BaseException:  # never leave a server running behind a failed start
            self.stop()
            raise

    def wait_ready(self, timeout: float = 120) -> GunicornServer:
        """Wait until `/readyz` counts every worker warm (the service's own signal)."""
        deadline = time.monotonic() + timeout
        while (ready := self.workers_ready()) < self.workers:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"gunicorn did not become ready ({ready}/{self.workers} workers):\n"
                    f"{self.log()[-4000:]}"
                )
            time.sleep(0.1)
        return self

    def workers_ready(self) -> int:
        """Warm workers as `/readyz` counts them; 0 while nothing answers yet."""
        try:
            response = requests.get(f"{self.url}/readyz", timeout=10)
        except requests.RequestException:  # not listening yet, or too busy to answer in time
            return 0
        return response.json().get("workers_ready", 0) if response.ok else 0

    def launch(self) -> GunicornServer:
        """Start the master without waiting for anything; it takes over the socket."""
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
            cwd=self.cwd,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            pass_fds=[s.fileno() for s in (self.listener, self.management) if s is not None],
        )
        # Only Gunicorn holds them now: once it exits, the ports refuse connections.
        self.listener.close()
        if self.management is not None:
            self.management.close()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def pid(self) -> int:
        """The Gunicorn master's process id."""
        return self.proc.pid

    def make(self, images: list[tuple[str, bytes]]) -> MakeRequest:
        """Send image n (round-robin) to /predict as a raw JPEG body."""
        return raw_jpeg(self.url, images)

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM the master (graceful) and wait; kill if it hangs."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> GunicornServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
