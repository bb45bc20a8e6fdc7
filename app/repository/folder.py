"""The control folder: the files the workers of one server share to follow model changes.

Policy:
- The master makes it on tmpfs before the fork (`create`), named for its pid; folders left by
  masters that are gone (killed) are removed then. It holds the state (the served plans, and
  the change in progress: its generation and phase), which worker follows, each worker's answer
  to the last step, and a lock so that one change runs at a time.
- Every file is replaced whole (app.artifact.replace_json): a reader sees the old or the new.
  A worker killed before it could leave is not waited for (its pid is not alive).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from app import errors
from app.artifact import replace_json
from app.repository.plans import Plans, plans_from_json

POLL_S = 0.02  # how often a worker looks for a change's next step, and the caller for answers
# How often a worker looks for a new change. Each look wakes a thread that takes the GIL from
# the requests, so between changes it looks rarely: a change's first step reaches the workers
# up to this much later (docs/BENCHMARKS.md, idle wake-ups).
IDLE_POLL_S = 0.25
_PREFIX = "wanwu-control-"  # then the master's pid


@dataclass(frozen=True)
class State:
    """The control folder's state: the served plans, and the change in progress if any."""

    generation: int
    phase: str  # "stage" (a change loads its versions), "switch" or "abort" (it ended)
    plans: Plans
    proposed: Plans | None = None

    @property
    def step(self) -> tuple[int, str]:
        return self.generation, self.phase


class ControlFolder:
    """The files every worker of one server reads and writes to follow changes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, plans: Plans) -> ControlFolder:
        """A fresh folder (in the master, before the fork) serving `plans`; folders left by
        masters that are gone (killed) are removed first."""
        tmpfs = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
        for stale in Path(tmpfs).glob(f"{_PREFIX}*"):
            owner = stale.name.removeprefix(_PREFIX).split("-", 1)[0]
            if owner.isdigit() and not _alive(int(owner)):
                shutil.rmtree(stale, ignore_errors=True)
        folder = cls(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=tmpfs))
        (folder.path / "workers").mkdir()
        (folder.path / "answers").mkdir()
        folder.publish(State(0, "switch", plans))
        return folder

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    # -- the state ----------------------------------------------------------------------------

    def read(self) -> State:
        return self.parse(self.raw())

    def raw(self) -> bytes:
        """The state file's bytes: a poller compares them before it parses anything."""
        return (self.path / "state.json").read_bytes()

    @staticmethod
    def parse(raw: bytes) -> State:
        data = json.loads(raw)
        proposed = data["proposed"]
        return State(
            data["generation"],
            data["phase"],
            plans_from_json(data["plans"]),
            None if proposed is None else plans_from_json(proposed),
        )

    def publish(self, state: State) -> None:
        replace_json(self.path / "state.json", asdict(state))

    # -- the workers --------------------------------------------------------------------------

    def join(self, pid: int) -> None:
        (self.path / "workers" / str(pid)).touch()

    def leave(self, pid: int) -> None:
        for path in (self.path / "workers" / str(pid), self.path / "answers" / f"{pid}.json"):
            path.unlink(missing_ok=True)

    def workers(self) -> list[int]:
        """The live workers that follow changes."""
        # One killed before it could leave is not waited for; the master's child_exit removes it.
        return [int(e.name) for e in (self.path / "workers").iterdir() if _alive(int(e.name))]

    def answer(self, pid: int, step: tuple[int, str], error: str | None) -> None:
        generation, phase = step
        replace_json(
            self.path / "answers" / f"{pid}.json",
            {"generation": generation, "phase": phase, "error": error},
        )

    def answers(self, step: tuple[int, str]) -> dict[int, str | None]:
        """Each worker that answered `step`: its error, or None."""
        found = {}
        for entry in (self.path / "answers").glob("*.json"):
            try:
                data = json.loads(entry.read_text())
            except (OSError, ValueError):
                continue  # left by a worker that is gone
            if (data["generation"], data["phase"]) == step:
                found[int(entry.stem)] = data["error"]
        return found

    @contextmanager
    def exclusive(self, timeout: float) -> Iterator[None]:
        """Hold the one-change-at-a-time lock, or raise Overloaded after `timeout` s."""
        with open(self.path / "lock", "w") as lock:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise errors.Overloaded(
                            "Another model change is in progress; retry when it ends.",
                            retry_after=5,
                        ) from None
                    time.sleep(POLL_S)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
