"""Model changes across the workers of one server, without a moment of downtime.

Policy:
- The master makes a control folder (app.repository.folder) before the fork: the served plans
  (which version of each model serves), the workers that follow them, their answers, and a
  lock so that one change runs at a time.
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

import logging
import os
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from app import errors
from app.repository.folder import IDLE_POLL_S, POLL_S, ControlFolder, State
from app.repository.plans import Plan, Plans
from app.repository.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Report:
    """How long a change took: loading and warming everywhere, then switching everywhere."""

    staged_s: float
    switched_s: float


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
        while not self._stopping.wait(POLL_S if self._changing() else IDLE_POLL_S):
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

    def _changing(self) -> bool:
        """Whether this worker staged a change whose switch or abort is yet to come."""
        return self._seen is not None and self._seen[1] == "stage"

    def _load(self, plans: Plans) -> None:
        for name, version in self.registry.missing(plans):
            began = time.monotonic()
            self.registry.stage(name, version)
            log.info("loaded %s version %s in %.2f s", name, version, time.monotonic() - began)

    def _apply(self, plans: Plans) -> list:
        self._load(plans)
        return self.registry.switch(plans)
