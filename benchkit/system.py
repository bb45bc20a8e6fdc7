"""Debian packages that some tests drive for real (nginx, Chromium, Prometheus), found or installed.

`python -m benchkit.system` (what `make test` runs first) installs the missing ones with apt
when it runs as root on Debian or Ubuntu; otherwise it prints one line naming them and the
command that installs them, and the tests that need them skip with the same words.
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
}
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


def missing_packages() -> list[str]:
    """The packages still to install: those of missing commands, and missing fonts."""
    packages = list(dict.fromkeys(pkg for cmd, pkg in COMMANDS.items() if find(cmd) is None))
    if shutil.which("dpkg"):
        packages += [pkg for pkg in FONTS if not _installed(pkg)]
    return packages


def main() -> int:
    missing = missing_packages()
    if not missing:
        return 0
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"installing Debian packages for the tests: {' '.join(missing)}", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        ):
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode:
                print(done.stdout + done.stderr, file=sys.stderr)
                return done.returncode
        return 0
    print(
        f"missing Debian packages: {' '.join(missing)}; the tests that need them will skip "
        f"(install with: sudo apt-get install {' '.join(missing)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
