"""Start-ups of real Gunicorn that must stop, and leave nothing behind: a snapshot file that is
not this user's own small regular file, and a start-up refused or interrupted."""

from __future__ import annotations

import glob
import json
import os
import re
import signal
from pathlib import Path

import pytest

from app.repository.snapshot import MAX_BYTES
from benchkit.attacks import wait_until
from tests.conftest import add_version

pytestmark = pytest.mark.integration

SNAPSHOT = {"plans": {"alpha": {"default": "1", "canary": None, "percent": 0}}, "unloaded": []}


def shm_folders(pid: int) -> list[str]:
    """The metrics folders the master `pid` made (named for it)."""
    return glob.glob(f"/dev/shm/wanwu-metrics-{pid}-*")


def plant(kind: str, path: Path) -> None:
    """A snapshot file start-up must refuse, as `kind` makes it."""
    text = json.dumps(SNAPSHOT)
    if kind == "fifo":
        os.mkfifo(path)  # opened by a plain read, it would block start-up forever
    elif kind == "symlink":
        (path.parent / "elsewhere.json").write_text(text)
        path.symlink_to(path.parent / "elsewhere.json")
    elif kind == "world-writable":
        path.write_text(text)
        path.chmod(0o666)
    elif kind == "oversized":
        path.write_text(text + " " * MAX_BYTES)
    elif kind == "another-user":
        if os.geteuid() != 0:
            pytest.skip("giving a file to another user needs root")
        path.write_text(text)
        os.chown(path, 65534, 65534)


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("fifo", "not a regular file"),
        ("symlink", "symbolic link"),
        ("world-writable", "writable by other users (mode -rw-rw-rw-)"),
        ("oversized", f"larger than {MAX_BYTES} bytes"),
        ("another-user", "owned by uid 65534"),
    ],
)
def test_a_snapshot_that_is_not_ours_stops_start_up_and_leaves_nothing(
    tmp_path, kind, says, gunicorn
):
    root = tmp_path / "repository"
    add_version(root, "alpha", 1, {"en": ["a", "b", "c"]})
    snapshot = tmp_path / "snapshot.json"
    plant(kind, snapshot)
    server = gunicorn(workers=1, model_repository=root, model_snapshot=snapshot)
    with pytest.raises(RuntimeError, match=f"WANWU_MODEL_SNAPSHOT {snapshot}.*{re.escape(says)}"):
        server.start(timeout=60)
    assert server.proc.returncode not in (None, 0)
    assert shm_folders(server.pid) == []


def test_a_sigterm_early_in_start_up_leaves_nothing(real_model_path, gunicorn):
    server = gunicorn(workers=1, model=real_model_path).launch()
    try:
        wait_until(lambda: shm_folders(server.pid) != [], 60, "the metrics folder")
        server.signal(signal.SIGTERM)
        server.proc.wait(60)
    finally:
        server.stop()
    assert shm_folders(server.pid) == []
