"""The GPU check's bundle: every third-party import of the code it runs travels or is there."""

from __future__ import annotations

import re

from benchkit import bundle
from tests.conftest import ROOT


def test_every_import_of_the_check_is_bundled_or_on_the_gpu_image():
    imports = bundle.third_party_imports()
    # The walk reaches what the check needs: the service, its server and the CUDA tests' tools.
    assert {"flask", "gunicorn", "pillow_heif", "torch", "torchao", "pytest"} <= imports.keys()
    assert not bundle.unmet(imports), "add these to benchkit/bundle.py's BUNDLE"


def test_an_import_the_gpu_image_lacks_is_named_with_the_files_that_import_it():
    imports = {"tritonclient": {"app/x.py"}, "PIL": {"app/imaging.py"}, "grpc": {"app/rpc.py"}}
    assert bundle.unmet(imports) == {"tritonclient": {"app/x.py"}}  # neither bundled nor there


def test_the_walk_follows_first_party_imports_into_the_files_they_name():
    imports = bundle.third_party_imports(["scripts/bench_service.py"])
    assert "benchkit/measure.py" in imports["psutil"]  # reached through benchkit.measure


def test_the_walk_starts_from_exactly_the_scripts_and_tests_the_check_runs():
    script = (ROOT / "scripts" / "gpu_check.sh").read_text()
    runs = {f"scripts/{name}.py" for name in re.findall(r"\"\$PY\" -m scripts\.(\w+)", script)}
    runs |= set(re.findall(r"tests/test_\w+\.py", script))
    assert runs == {e for e in bundle.ENTRIES if e.startswith(("scripts/", "tests/"))}
    for name in bundle.BUNDLE:  # pins are distribution names, as pip and wheel names have them
        assert name == bundle.distribution(name)
