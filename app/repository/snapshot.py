"""The served plans kept across restarts (WANWU_MODEL_SNAPSHOT), as TorchServe's snapshots keep
the models registered at runtime.

Policy:
- Off unless WANWU_MODEL_SNAPSHOT names a file; it needs a model repository. After every
  change the management API makes, the plans then served (app.repository.plans.Plan, a gray release
  included) and the repository's models left unloaded are written to it, replacing it at once.
- At start, with the file present, a model it names serves the versions it names instead of
  its pinned or highest one, and a model it lists as unloaded is not loaded. A model folder it
  does not know (added since) serves as without it; a version it names that is gone from the
  repository is logged, and that model serves as without it. A file that is not a snapshot
  stops start-up naming its path. Delete the file to start from the repository alone.
- The file decides what serves, so it must be this user's own: a regular file (not a link, a
  FIFO or a device), owned by the service's user, writable by no one else, at most MAX_BYTES;
  anything else stops start-up naming it. It is written afresh, owner-only
  (app.artifact.replace_json).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app import bounds
from app.artifact import ArtifactError, replace_json

MAX_BYTES = 1 << 20  # a plan per model is under 100 bytes
# A plan as app.repository.plans.Plan writes it (asdict): the fields and what each must hold.
_PLAN = {
    "default": lambda v: isinstance(v, str),
    "canary": lambda v: v is None or isinstance(v, str),
    "percent": lambda v: type(v) is int and 0 <= v < 100,
}


@dataclass(frozen=True)
class Snapshot:
    """What the last change left served (each model's plan, as its fields), and which
    models of the repository it left unloaded."""

    plans: dict[str, dict[str, Any]]
    unloaded: tuple[str, ...] = ()


def read(path: str | Path) -> Snapshot | None:
    """The snapshot at `path`; None when there is none yet."""
    path = Path(path)
    try:
        data = bounds.loads_json(_own_bytes(path))
        plans, unloaded = data["plans"], data["unloaded"]
        if not all(
            isinstance(plan, dict)
            and plan.keys() == _PLAN.keys()
            and all(holds(plan[k]) for k, holds in _PLAN.items())
            for plan in plans.values()
        ) or not (isinstance(unloaded, list) and all(isinstance(n, str) for n in unloaded)):
            raise ValueError("a plan or name of an unexpected shape")
        return Snapshot(plans, tuple(unloaded))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ArtifactError(
            f"WANWU_MODEL_SNAPSHOT {path} is not a snapshot wanwu wrote ({exc}): fix or delete "
            "it to start from the repository"
        ) from None


def _own_bytes(path: Path) -> bytes:
    """The file's bytes, once it is shown to be a small regular file only this user writes.

    Opened without following a link or waiting on a FIFO, then checked on what was opened.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_uid != os.geteuid():
            raise ValueError(f"owned by uid {info.st_uid}, not this user ({os.geteuid()})")
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise ValueError(f"writable by other users (mode {stat.filemode(info.st_mode)})")
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise ValueError(f"larger than {MAX_BYTES} bytes")
    return data


def write(path: str | Path, plans: dict[str, dict[str, Any]], unloaded: list[str]) -> None:
    """Replace the snapshot at `path` at once: a reader (a restart) sees the old or the new."""
    replace_json(Path(path), {"plans": plans, "unloaded": unloaded})
