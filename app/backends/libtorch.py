"""TorchScript as Triton's `pytorch_libtorch` runs it: named tensors in and out.

Triton's naming rules: inputs named `<anything>__<index>` (`INPUT__0`) are the forward()
arguments in index order, other names must be forward()'s argument names; outputs named
`<anything>__<index>` pick that element of a tuple result, and a single output takes the result
whatever its name.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from app import trust
from app.artifact import ArtifactError

INDEXED = re.compile(r".+__(\d+)")


class LibtorchBackend:
    """A scripted module called with the config's inputs; `run` answers its outputs by name."""

    format = "torchscript"
    runtime = "torchscript"
    platform = "pytorch_libtorch"
    runner = "torchscript"
    images, tensors = False, True
    explains = False  # a module exported elsewhere has no explain method

    def __init__(self, module: torch.jit.ScriptModule, inputs: list[str], outputs: list[str]):
        self.module = module
        self.outputs = outputs
        arguments = [a.name for a in module.forward.schema.arguments[1:]]  # after self
        self._order = _order(inputs, arguments)
        self._device = torch.device("cpu")

    @classmethod
    def load_tensors(
        cls, path: str | Path, inputs: list[str], outputs: list[str]
    ) -> LibtorchBackend:
        """Load onto the CPU without running it (safe before fork), once app.trust's screen
        passed."""
        try:
            module = trust.load_torchscript(path)
        except trust.Untrusted:
            raise  # named for what it does, not as a broken file
        except (RuntimeError, ValueError, zipfile.BadZipFile) as exc:
            raise ArtifactError(f"{path}: not a TorchScript module: {exc}") from None
        return cls(module, inputs, outputs)

    def prepare(self, device: torch.device, precision: str, fuse: bool) -> None:
        """Move the module to `device` (it runs in the types its config names)."""
        self.module = self.module.to(device)
        self._device = device

    @torch.inference_mode()
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Call forward() with the inputs in argument order; name its outputs."""
        args = [torch.from_numpy(feeds[name]).to(self._device) for name in self._order]
        result = self.module(*args)
        results = result if isinstance(result, tuple | list) else (result,)
        named = {}
        for position, name in enumerate(self.outputs):
            match = INDEXED.fullmatch(name)
            index = int(match.group(1)) if match else position
            named[name] = results[index].detach().cpu().numpy()
        return named


def _order(inputs: list[str], arguments: list[str]) -> list[str]:
    """The config's input names in forward()'s argument order."""
    if len(inputs) != len(arguments):
        raise ArtifactError(
            f"the config has {len(inputs)} inputs, forward() takes {len(arguments)} ({arguments})"
        )
    if all(INDEXED.fullmatch(name) for name in inputs):
        return sorted(inputs, key=lambda name: int(INDEXED.fullmatch(name).group(1)))  # type: ignore[union-attr]
    unknown = [name for name in inputs if name not in arguments]
    if unknown:
        raise ArtifactError(
            f"input {unknown[0]!r} is not an argument of forward() ({', '.join(arguments)}): "
            "name inputs for them, or INPUT__0, INPUT__1, ..."
        )
    return sorted(inputs, key=arguments.index)
