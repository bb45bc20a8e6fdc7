"""The served plans kept across restarts (WANWU_MODEL_SNAPSHOT), as TorchServe's snapshots keep
the models registered at runtime.

Policy:
- Off unless WANWU_MODEL_SNAPSHOT names a file; it needs a model repository. After every
  change the management API makes, the plans then served (app.repository.Plan, a gray release
  included) and the repository's models left unloaded are written to it, replacing it at once.
- At start, with the file present, a model it names serves the versions it names instead of
  its pinned or highest one, and a model it lists as unloaded is not loaded. A model folder it
  does not know (added since) serves as without it; a version it names that is gone from the
  repository is logged, and that model serves as without it. A file that is not a snapshot
  stops start-up naming its path. Delete the file to start from the repository alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app import bounds
from app.artifact import ArtifactError, replace_json

# A plan as app.repository.Plan writes it (asdict): the fields and what each must hold.
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
        data = bounds.loads_json(path.read_bytes())
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


def write(path: str | Path, plans: dict[str, dict[str, Any]], unloaded: list[str]) -> None:
    """Replace the snapshot at `path` at once: a reader (a restart) sees the old or the new."""
    replace_json(Path(path), {"plans": plans, "unloaded": unloaded})
