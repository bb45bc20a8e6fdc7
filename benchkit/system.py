"""Debian packages that some tests drive for real (nginx, Chromium, Prometheus, wrk), found or
installed.

`python -m benchkit.system` (what `make test` runs first) installs the missing ones with apt
when it runs as root on Debian or Ubuntu; otherwise it prints one line naming them and the
command that installs them, and the tests that need them skip with the same words. The image
check (scripts/image_check.py) asks for its own, the Docker engine and debootstrap, the same
way (`require`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

# Command the tests run -> the Debian package that provides it.
COMMANDS = {
    "nginx": "nginx",
    "chromium": "chromium",
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "dockerd": "docker.io",
    "debootstrap": "debootstrap",
    "wrk": "wrk",
}
# What the test suite drives; the image check's commands are installed when it runs.
FOR_TESTS = ("nginx", "chromium", "prometheus", "promtool", "wrk")
# Packages with no command to look for: a CJK font, so screenshots show Chinese labels.
FONTS = ("fonts-wqy-zenhei",)
# Debian installs nginx under /usr/sbin, which an unprivileged user's PATH often omits.
_EXTRA_DIRS = ("/usr/sbin", "/sbin")


def find(command: str) -> str | None:
    """Return the path of `command`, searching PATH and then the sbin directories."""
    return shutil.which(command) or shutil.which(command, path=os.pathsep.join(_EXTRA_DIRS))


def why_missing(command: str) -> str:
    """The one line a skipped test gives when `command` is not installed."""
    package = COMMANDS[command]
    return (
        f"{command} not found: install Debian's {package} "
        f"(sudo apt-get install {package}, or run `make test` as root)"
    )


def _installed(package: str) -> bool:
    return subprocess.run(["dpkg", "-s", package], capture_output=True).returncode == 0


def missing_packages(commands: tuple[str, ...] = FOR_TESTS, fonts=FONTS) -> list[str]:
    """The packages still to install: those of missing commands, and missing fonts."""
    packages = list(dict.fromkeys(COMMANDS[cmd] for cmd in commands if find(cmd) is None))
    if shutil.which("dpkg"):
        packages += [pkg for pkg in fonts if not _installed(pkg)]
    return packages


def _install(packages: list[str], why: str) -> bool:
    """Install `packages` with apt if this runs as root where apt exists; whether it did."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    print(f"installing Debian packages for {why}: {' '.join(packages)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command)}: {done.stdout + done.stderr}")
    return True


def require(*commands: str) -> str:
    """Install the packages of `commands` if they are missing and this may; the line that
    names what is still missing, or "" when every command is there."""
    missing = missing_packages(commands, fonts=())
    if missing:
        _install(missing, " ".join(commands))
    return "; ".join(why_missing(cmd) for cmd in commands if find(cmd) is None)


def main() -> int:
    missing = missing_packages()
    if not missing:
        return 0
    try:
        if _install(missing, "the tests"):
            return 0
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(
        f"missing Debian packages: {' '.join(missing)}; the tests that need them will skip "
        f"(install with: sudo apt-get install {' '.join(missing)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
