"""The README's Layout section names every module and folder, so it cannot fall behind."""

from __future__ import annotations

import subprocess

from tests.conftest import ROOT


def layout() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Layout", 1)[1]
    return section.split("```", 2)[1]


def tracked() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_layout_names_every_module_and_folder():
    text = layout()
    files = tracked()
    modules = {
        path.split("/")[1]
        for path in files
        if path.count("/") == 1
        and path.split("/")[0] in ("app", "benchkit")
        and path.endswith(".py")
        and not path.endswith("__init__.py")
    }
    folders = {path.split("/")[0] for path in files if "/" in path and not path.startswith(".")}
    missing = sorted(m for m in modules if m not in text)
    missing += sorted(f"{f}/" for f in folders if f"{f}/" not in text)
    assert not missing, f"README's Layout section does not mention: {', '.join(missing)}"
