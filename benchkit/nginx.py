"""Run nginx from the project's shipped config template in front of test servers."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from string import Template

import requests

from benchkit.server import ROOT, free_port
from benchkit.system import find

TEMPLATE = ROOT / "deploy" / "nginx" / "wanwu.conf.template"


def render(prefix: Path, listen: str, upstreams: list[str], max_body: str = "20m") -> str:
    """Fill the shipped template as docs/SCALING.md says, one server line per upstream."""
    servers = "\n".join(f"        server {u} max_fails=3 fail_timeout=10s;" for u in upstreams)
    return Template(TEMPLATE.read_text()).safe_substitute(
        PREFIX=str(prefix), LISTEN=listen, UPSTREAM_SERVERS=servers, MAX_BODY=max_body
    )


class NginxProxy:
    """nginx in the foreground with its config, pid, logs and temp files under `prefix`."""

    def __init__(self, prefix: Path, upstreams: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.prefix = prefix
        self.config = prefix / "nginx.conf"
        self.config.write_text(render(prefix, f"127.0.0.1:{self.port}", upstreams))

    def __enter__(self) -> NginxProxy:
        self.proc = subprocess.Popen(
            [find("nginx"), "-p", str(self.prefix), "-c", str(self.config), "-g", "daemon off;"],
            stderr=subprocess.STDOUT,
            stdout=open(self.prefix / "stdout.log", "wb"),
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                requests.get(f"{self.url}/healthz", timeout=2)
                return self
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError((self.prefix / "error.log").read_text())

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
