#!/usr/bin/env python3
"""Prepare what scripts/gpu_check.sh needs on the lent GPU machine that its image lacks.

Downloads, for CPython --python on x86-64 manylinux, the wheel of every distribution in
benchkit.bundle.BUNDLE (pinned, one version each, no dependency resolution) into OUT/wheels,
checks that each wheel's own needs are met by the bundle (at its pinned version) or by the
machine's image, and copies the photos the benchmarks send into OUT/images. It prints the
size: the call that carries OUT sends it with the working tree, 64 MiB in all.

    .venv/bin/python -m scripts.gpu_bundle                       # .gpu-bundle/, Python 3.12
    .venv/bin/python -m scripts.gpu_bundle --python 3.11 --out /tmp/gpu-rehearsal/bundle
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from benchkit.bundle import BUNDLE, IMAGE, ROOT, third_party_imports, unmet
from benchkit.images import SAMPLES

# pip matches a manylinux tag exactly: these cover every glibc the pinned wheels are built for.
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 34)] + ["manylinux2014_x86_64"]


def download(python: str, wheels: Path) -> None:
    """Fetch the pinned wheels (nothing else) for CPython `python` on x86-64 Linux, afresh:
    a wheel left from another pin or Python would be a second version, which stops pip."""
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    command += ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    command += ["-d", str(wheels), *(f"{name}=={version}" for name, version in BUNDLE.items())]
    subprocess.run(command, check=True)


def check_wheels(python: str, wheels: Path) -> list[str]:
    """Problems with OUT/wheels: a pin without exactly one wheel, a stray wheel, an unmet need."""
    found: dict[str, list[Path]] = {}
    for path in wheels.glob("*.whl"):
        found.setdefault(canonicalize_name(parse_wheel_filename(path.name)[0]), []).append(path)
    counts = {name: len(found.get(name, [])) for name in BUNDLE}
    problems = [f"{name}: {n} wheels, want 1" for name, n in counts.items() if n != 1]
    problems += [f"{name}: not in the bundle's list (remove it)" for name in found.keys() - BUNDLE]
    environment = {"python_version": python, "sys_platform": "linux", "extra": ""}
    for path in (paths[0] for paths in found.values()):
        with zipfile.ZipFile(path) as wheel:
            meta = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
            metadata = Parser().parsestr(wheel.read(meta).decode())
        for line in metadata.get_all("Requires-Dist") or []:
            need = Requirement(line)
            if need.marker and not need.marker.evaluate(environment):
                continue  # an extra, or another Python or platform
            name = canonicalize_name(need.name)
            if name in BUNDLE and not need.specifier.contains(BUNDLE[name], prereleases=True):
                problems.append(f"{path.name} needs {need}, the bundle pins {BUNDLE[name]}")
            elif name not in BUNDLE and name not in IMAGE:
                problems.append(f"{path.name} needs {need}: in neither the bundle nor the image")
    return problems


def copy_images(source: Path, images: Path) -> int:
    """Copy the photos (the check's request bodies) and return how many there are."""
    images.mkdir(parents=True, exist_ok=True)
    photos = sorted(source.glob("*.JPEG"))
    for photo in photos:
        if not (images / photo.name).is_file():
            shutil.copyfile(photo, images / photo.name)
    return len(photos)


def mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--python", default="3.12", help="the target's CPython version")
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu-bundle")
    parser.add_argument("--images", type=Path, default=SAMPLES, help="photos to send")
    parser.add_argument("--max-mib", type=float, default=48, help="fail above this size")
    args = parser.parse_args()
    missing = unmet(third_party_imports())
    for name, files in sorted(missing.items()):
        print(f"import {name} ({', '.join(sorted(files))}): add it to benchkit/bundle.py BUNDLE")
    download(args.python, args.out / "wheels")
    problems = check_wheels(args.python, args.out / "wheels")
    for problem in problems:
        print(f"bundle: {problem}")
    photos = copy_images(args.images, args.out / "images")
    size = mib(args.out)
    print(
        f"{args.out}: {len(BUNDLE)} wheels for CPython {args.python} "
        f"({mib(args.out / 'wheels'):.1f} MiB), {photos} photos; {size:.1f} MiB in all"
    )
    if size > args.max_mib:
        problems.append(f"{size:.1f} MiB is over --max-mib {args.max_mib:g}")
        print(f"bundle: {problems[-1]}")
    return 1 if missing or problems or not photos else 0


if __name__ == "__main__":
    sys.exit(main())
