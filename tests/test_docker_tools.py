"""The image check's tools that need no engine: pip's folders served to a build, the host's
network state, the Debian mirror (scripts/image_check.py runs the engine itself)."""

from __future__ import annotations

import shutil
from urllib.parse import urljoin

import pytest
import requests

from benchkit import docker


def test_local_pip_folders_are_served_on_loopback_and_urls_kept(tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "demo-1.0-py3-none-any.whl").write_bytes(b"wheel")
    index = tmp_path / "pypi"
    (index / "simple" / "demo").mkdir(parents=True)
    (index / "files").mkdir()
    (index / "files" / "demo-2.0.tar.gz").write_bytes(b"sdist")
    page = '<a href="../../files/demo-2.0.tar.gz#sha256=00">demo-2.0.tar.gz</a>'
    (index / "simple" / "demo" / "index.html").write_text(page)
    monkeypatch.setenv("PIP_INDEX_URL", "https://pypi.example/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", f"file://{index}/simple {index}/simple")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setenv("PIP_TRUSTED_HOST", "pypi.example")

    with docker.pip_build_args() as args:
        assert args["PIP_INDEX_URL"] == "https://pypi.example/simple"  # remote: as it is
        assert args["PIP_TRUSTED_HOST"] == "pypi.example 127.0.0.1"
        [links] = args["PIP_FIND_LINKS"].split()
        assert links.startswith("http://127.0.0.1:")
        assert "demo-1.0-py3-none-any.whl" in requests.get(links, timeout=10).text
        for extra in args["PIP_EXTRA_INDEX_URL"].split():  # a file:// URL and a bare path
            assert extra.startswith("http://127.0.0.1:") and extra.endswith("/simple/")
            project = urljoin(extra, "demo/")
            assert requests.get(project, timeout=10).text == page
            assert requests.get(urljoin(project, "../../files/demo-2.0.tar.gz")).content == b"sdist"
        assert requests.get(urljoin(links, "/etc/passwd"), timeout=10).status_code == 404
    with pytest.raises(requests.ConnectionError):
        requests.get(links, timeout=10)  # served only while the block runs


def test_the_network_state_reads_the_same_twice():
    if not shutil.which("ip"):
        pytest.skip("ip not found: install Debian's iproute2")
    first = docker.network_state()
    assert first["links"] and "lo" in first["links"]
    assert docker.network_state() == first


def test_the_debian_mirror_is_apts():
    if not shutil.which("apt-get"):
        pytest.skip("apt-get not found: not Debian or Ubuntu")
    try:
        mirror = docker.debian_mirror()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    assert mirror.startswith(("http://", "https://", "file:/"))
