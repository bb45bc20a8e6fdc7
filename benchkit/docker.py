"""A Docker engine of the image check's own, a base image without Docker Hub, pip's folders.

Policy: the host's network is left as found. dockerd runs with `--iptables=false
--ip-forward=false --bridge=none` on its own socket, data root and exec root; builds and
containers use the host's network namespace (`--network host`), so no bridge, NAT rule or
forwarding is needed; `network_state()` lets the caller compare before and after. Everything
the engine keeps (the base image, the build cache) lives in the data root the caller names,
and stopping the engine removes every container it ran.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import psutil

from benchkit import system

# Debian's client, of the daemon's release: BuildKit is built in (a newer client elsewhere on
# the PATH may want a buildx plug-in this machine lacks).
DOCKER = "/usr/bin/docker"
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
# The host's CA bundle goes into the base image: the index the host reaches may sit behind a
# proxy with a private CA, and the venv's pip trusts only its own bundle unless told.
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
PIP_KEYS = ("index-url", "extra-index-url", "find-links", "trusted-host")
# Where pip's local folders are served to a build, when free: the URLs are build arguments,
# and a build argument that changes (another port) misses the build cache from then on.
PIP_PORT = 47361


class Engine:
    """dockerd on a private socket; `docker(...)` runs Debian's client against it."""

    def __init__(self, data_root: Path) -> None:
        self.data_root = data_root
        self.exec_root = Path(tempfile.mkdtemp(prefix="wanwu-dockerd-"))  # short: socket paths
        self.socket = self.exec_root / "docker.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120) -> Engine:
        """Start dockerd and wait until its API answers."""
        self.data_root.mkdir(parents=True, exist_ok=True)
        log = open(self.exec_root / "dockerd.log", "wb")  # noqa: SIM115 (the daemon's lifetime)
        self.proc = subprocess.Popen(
            [system.find("dockerd"), "--data-root", str(self.data_root)]
            + ["--exec-root", str(self.exec_root / "exec"), f"--host=unix://{self.socket}"]
            + ["--pidfile", str(self.exec_root / "dockerd.pid")]
            + ["--iptables=false", "--ip-forward=false", "--bridge=none"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        try:
            while self.docker("version", check=False).returncode:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"dockerd did not start:\n{self.log()[-3000:]}")
                time.sleep(0.2)
        except BaseException:  # never leave a daemon running behind a failed start
            self.stop()
            raise
        return self

    def log(self) -> str:
        return (self.exec_root / "dockerd.log").read_text(errors="replace")

    def docker(
        self, *args: str, check: bool = True, timeout: float | None = 600, **kwargs
    ) -> subprocess.CompletedProcess[str]:
        """Run `docker ARGS` against this engine; raise with its output when it fails."""
        done = subprocess.run(
            [DOCKER, "-H", f"unix://{self.socket}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "DOCKER_BUILDKIT": "1"},
            **kwargs,
        )
        if check and done.returncode:
            # The end of the output: where a build says which step failed, and why.
            raise RuntimeError(f"docker {args[0]}: exit {done.returncode}\n{done.stderr[-8000:]}")
        return done

    def has_image(self, tag: str) -> bool:
        return self.docker("image", "inspect", tag, check=False).returncode == 0

    def _mounts(self) -> list[str]:
        mounts = [m.mountpoint for m in psutil.disk_partitions(all=True)]
        return [m for m in mounts if m.startswith(f"{self.exec_root}/")]

    def leftovers(self) -> list[str]:
        """What of the engine is still there: mounts under its exec root, the exec root."""
        return self._mounts() + ([str(self.exec_root)] if self.exec_root.exists() else [])

    def stop(self) -> None:
        """Remove every container of this engine, stop dockerd (and its containerd), and
        unmount what it leaves mounted (it keeps the host's network namespace mounted under
        its exec root, netns/default)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            containers = self.docker("ps", "-aq", check=False).stdout.split()
            if containers:
                self.docker("rm", "-f", *containers, check=False)
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for mount in reversed(self._mounts()):  # the innermost first
            subprocess.run(["umount", mount], check=False)
        shutil.rmtree(self.exec_root, ignore_errors=True)
        self.proc = None

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def debian_mirror(suite: str = "bookworm") -> str:
    """The Debian mirror this machine's apt uses for `suite` main, as apt itself reads it."""
    targets = subprocess.run(
        ["apt-get", "indextargets", "--format", "$(REPO_URI) $(RELEASE) $(COMPONENT)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    for uri, release, component in (t.split() for t in targets if t.count(" ") == 2):
        if release == suite and component == "main":
            return uri
    raise RuntimeError(f"apt knows no mirror of Debian {suite} main (apt-get update?)")


def make_base_image(engine: Engine, tag: str, mirror: str, suite: str = "bookworm") -> bool:
    """Import a minimal Debian with Python as `tag`, unless the engine holds it already.

    Returns whether it was made now. debootstrap's minbase plus BASE_PACKAGES, the host's CA
    bundle, and a pip configuration that trusts it.
    """
    if engine.has_image(tag):
        return False
    with tempfile.TemporaryDirectory(prefix="wanwu-rootfs-") as rootfs:
        include = ",".join(BASE_PACKAGES)
        subprocess.run(
            [system.find("debootstrap"), "--variant=minbase", f"--include={include}"]
            + [suite, rootfs, mirror],
            capture_output=True,
            check=True,
        )
        shutil.copy(CA_BUNDLE, f"{rootfs}{CA_BUNDLE}")
        Path(f"{rootfs}/etc/pip.conf").write_text(f"[global]\ncert = {CA_BUNDLE}\n")
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        engine.docker("import", "-", tag, stdin=tar.stdout)
        tar.wait()
    return True


def _pip_setting(key: str) -> str:
    """pip's own reading of one setting: its environment variable, else its configuration."""
    value = os.environ.get(f"PIP_{key.upper().replace('-', '_')}")
    if value is None:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", f"global.{key}"],
            capture_output=True,
            text=True,
        )
        value = done.stdout.strip() if done.returncode == 0 else ""
    return value


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass  # pip fetches hundreds of pages; the build's own output says what failed


@contextmanager
def pip_build_args() -> Iterator[dict[str, str]]:
    """The host's pip settings as the Dockerfile's PIP_* build arguments.

    A build step cannot see the host's folders, so each local index or wheel folder is served
    on 127.0.0.1 (the build shares the host's network) for as long as the block runs. An
    index folder's parent is served, since index pages may link to files beside the index
    (`../../files`); a find-links folder is served alone.
    """
    with tempfile.TemporaryDirectory(prefix="wanwu-pip-") as served:
        handler = functools.partial(_Quiet, directory=served)
        try:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", PIP_PORT), handler)
        except OSError:  # taken: any port (the build then rebuilds what follows its ARGs)
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        base = f"http://127.0.0.1:{server.server_address[1]}"

        def reachable(location: str, index: bool) -> str:
            url = urlparse(location)
            if url.scheme not in ("", "file"):
                return location
            path = Path(url2pathname(url.path)).resolve()
            link = Path(served, str(len(os.listdir(served))))
            link.symlink_to(path.parent if index else path)
            return f"{base}/{link.name}/{path.name}/" if index else f"{base}/{link.name}/"

        args = {}
        for key in PIP_KEYS:
            locations = _pip_setting(key).split()
            if key != "trusted-host":
                locations = [reachable(loc, key != "find-links") for loc in locations]
            args[f"PIP_{key.upper().replace('-', '_')}"] = " ".join(locations)
        args["PIP_TRUSTED_HOST"] = " ".join([*args["PIP_TRUSTED_HOST"].split(), "127.0.0.1"])
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield {key: value for key, value in args.items() if value}
        finally:
            server.shutdown()
            server.server_close()


def network_state() -> dict[str, str]:
    """What the engine must leave as found: links, addresses, routes, forwarding, nftables."""
    commands = {
        "links": ["ip", "-o", "link", "show"],
        "addresses": ["ip", "-o", "address", "show"],
        "routes": ["ip", "route", "show", "table", "all"],
        "forwarding": ["sysctl", "-n", "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"],
    }
    if shutil.which("iptables-save"):
        commands["iptables"] = ["iptables-save"]
    state = {}
    for name, command in commands.items():
        done = subprocess.run(command, capture_output=True, text=True)
        # iptables-save's comment lines carry the time they were written.
        state[name] = "\n".join(
            line for line in done.stdout.splitlines() if not line.startswith("#")
        )
    return state
