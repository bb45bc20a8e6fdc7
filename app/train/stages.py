"""Each finished stage's result on disk, so that `--resume` continues after the last one.

Policy: a stage's result is saved in the report folder's `.stages/NAME.pt` with a key of
everything that produced it (its own inputs and the key of the stage before), whole or not
at all (a hidden temporary file renamed into place): Ctrl-C or a crash keeps the stages
finished before it and leaves nothing half-written. With `resume`, a stage whose saved key
equals the current one is read back instead of run; a stage whose inputs changed runs
again, and so does every stage after it (their keys follow from its key).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("wanwu.train")


class Stages:
    """The stages of one training run, saved under `folder`."""

    def __init__(self, folder: Path, resume: bool) -> None:
        self.folder, self.resume, self.key = folder, resume, ""

    def run(self, name: str, inputs: dict[str, Any], compute: Callable[[], Any]) -> Any:
        """`compute()`'s result, or the saved one when resuming and `inputs` are unchanged."""
        text = json.dumps([self.key, name, inputs], sort_keys=True, default=str)
        self.key = hashlib.sha256(text.encode()).hexdigest()
        path = self.folder / f"{name}.pt"
        if self.resume and path.is_file():
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if saved["key"] == self.key:
                log.info("%s: resumed from %s", name, path)
                return saved["value"]
            log.info("%s: its inputs changed since %s was saved, so it runs again", name, path)
        value = compute()
        self.folder.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        try:
            torch.save({"key": self.key, "value": value}, temporary)
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        return value
