"""Model changes across the workers of one server, without a moment of downtime.

Policy:
- The master makes a control folder (tmpfs) before the fork: the served plans (which version
  of each model serves, app.repository.plans.Plan), the workers that follow them, their answers,
  and a lock so that one change runs at a time.
- A change (a management call, in whichever worker took it) is staged, then switched:
  1. stage: every live worker loads and warms the versions the new plans need beside the
     served ones, which keep answering; each one answers when it is done, or says why not.
  2. switch: once every worker has staged, each swaps all its routes at once; a version no
     plan uses finishes the requests it holds, then stops.
  If any worker fails (errors.LoadFailed, 400), or one has not answered within
  WANWU_LOAD_TIMEOUT_S (errors.Overloaded, 503 + Retry-After: the same load may succeed on
  a less busy server), every worker drops what it staged: the served plans do not change,
  and the caller gets the reason.
- A worker that starts later (a replacement) serves the last switched plans before it takes
  a connection, loading what the master's preloaded models lack.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from app import errors
from app.artifact import replace_json
from app.repository.plans import Plan, Plans, plans_from_json
from app.repository.registry import Registry

log = logging.getLogger(__name__)

POLL_S = 0.02  # how often a worker looks for a change, and the caller for the answers
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


@dataclass(frozen=True)
class Report:
    """How long a change took: loading and warming everywhere, then switching everywhere."""

    staged_s: float
    switched_s: float


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


def change(
    folder: ControlFolder,
    timeout: float,
    edit: Callable[[dict[str, Plan]], dict[str, Plan]],
    switched: Callable[[Plans], None] = lambda plans: None,
) -> Report:
    """Apply `edit` to the served plans on every worker: stage, then switch (or abort).

    `edit` gets a copy of the served plans and returns the new ones, raising an ApiError for a
    change it refuses. A version that fails to load anywhere raises errors.LoadFailed naming why.
    `switched` gets the new plans once every worker serves them, before the next change starts.
    """
    with folder.exclusive(timeout):
        served = folder.read()
        plans = edit(dict(served.plans))
        generation, began = served.generation + 1, time.monotonic()
        folder.publish(State(generation, "stage", served.plans, plans))
        failures, late = _await(folder, (generation, "stage"), timeout)
        if failures or late:
            folder.publish(State(generation, "abort", served.plans))
            # A late worker drops what it staged when it next reads the state; the rest now.
            _await(folder, (generation, "abort"), timeout, skip=late)
            kept = "The change was not made, and the served versions stay"
            if failures:
                raise errors.LoadFailed(f"{kept}: {failures[0]}")
            raise errors.Overloaded(  # a busy or slow server: the same load may then succeed
                f"{kept}: workers {late} did not load within {timeout:g} s "
                "(WANWU_LOAD_TIMEOUT_S); retry when the service is less busy, or raise it.",
                retry_after=30,
            )
        staged = time.monotonic()
        folder.publish(State(generation, "switch", plans))
        failures, late = _await(folder, (generation, "switch"), timeout)
        if failures or late:
            log.error(
                "model change %d: some workers did not switch: %s; late: %s",
                generation,
                failures,
                late,
            )
        switched(plans)
        return Report(round(staged - began, 3), round(time.monotonic() - staged, 3))


def _await(
    folder: ControlFolder, step: tuple[int, str], timeout: float, skip: Collection[int] = ()
) -> tuple[list[str], list[int]]:
    """Wait up to `timeout` s for every live worker but `skip` to answer `step`; return the
    failures, each saying why, and the workers that had not answered by then."""
    deadline = time.monotonic() + timeout
    while True:
        answers = folder.answers(step)
        workers = [pid for pid in folder.workers() if pid not in skip]
        failures = [f"worker {pid}: {answers[pid]}" for pid in workers if answers.get(pid)]
        late = [pid for pid in workers if pid not in answers]
        if not late or time.monotonic() > deadline:
            return failures, late
        time.sleep(POLL_S)


class Follower:
    """In each worker: serve the last switched plans, then follow every change (a thread)."""

    def __init__(self, folder: ControlFolder, registry: Registry, drain_s: float) -> None:
        self.folder, self.registry, self.drain_s = folder, registry, drain_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="wanwu-control", daemon=True)
        self._seen: tuple[int, str] | None = None  # the last step this worker answered

    def catch_up(self) -> None:
        """Join, then serve what the last switch chose (before this worker takes connections).

        Joining first: a change that starts meanwhile waits for this worker's answer.
        """
        self.folder.join(os.getpid())
        # The thread then answers the step in progress too, which waits for this worker.
        state = self.folder.read()
        try:
            self.registry.retire(self._apply(state.plans), self.drain_s)
        except Exception:  # noqa: BLE001  (a worker serving old versions beats no server)
            log.exception(
                "this worker cannot load what the last model change chose; it serves the "
                "versions loaded at start: restore the version folder, or change the model again"
            )

    def start(self) -> None:
        self._thread.start()

    def stop(self, wait: float = 0.0) -> None:
        """Stop following and leave (the worker is exiting); wait up to `wait` s for what the
        thread is doing (a load, a drain) to end."""
        self._stopping.set()
        self.folder.leave(os.getpid())
        if self._thread.is_alive():
            self._thread.join(wait)

    def _follow(self) -> None:
        last = b""
        while not self._stopping.wait(POLL_S):
            try:
                raw = self.folder.raw()
                if raw == last:
                    continue
                state = self.folder.parse(raw)
            except (OSError, ValueError):
                continue  # the master is removing the folder: the server is stopping
            last = raw
            if state.step == self._seen:
                continue
            self._seen, retired, error = state.step, [], None
            try:
                if state.phase == "stage":
                    self._load(state.proposed or {})
                elif state.phase == "switch":
                    retired = self._apply(state.plans)
                else:
                    retired = self.registry.discard()
            except Exception as exc:  # noqa: BLE001  (reported to the caller, who decides)
                log.warning("model change %d (%s) failed here: %s", *state.step, exc)
                error = str(exc)
            self.folder.answer(os.getpid(), state.step, error)
            self.registry.retire(retired, self.drain_s)

    def _load(self, plans: Plans) -> None:
        for name, version in self.registry.missing(plans):
            began = time.monotonic()
            self.registry.stage(name, version)
            log.info("loaded %s version %s in %.2f s", name, version, time.monotonic() - began)

    def _apply(self, plans: Plans) -> list:
        self._load(plans)
        return self.registry.switch(plans)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
