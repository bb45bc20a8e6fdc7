"""Model files that do what no classifier should, for the trust screen's tests (app.trust).

Each is a working TorchScript classifier of the tiny model's shape that also reaches the file
system, the way an attacker's archive would: every one of them, if it ran, touches `marker`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from app import runtime


class _Classifier(torch.nn.Module):
    """A 1,000-class classifier (global pooling, one linear layer); `marker` is its target."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker
        self.fc = torch.nn.Linear(3, 1000)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


class Reader(_Classifier):
    """Its scores are the bytes of a file (what `torch.from_file` returns)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stolen = torch.from_file(self.marker, False, 1000, dtype=torch.uint8)
        return self.classify(x) + stolen.float()


class Writer(_Classifier):
    """A clean forward, and another method that writes a file, for whoever calls it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(x)

    @torch.jit.export
    def leak(self, x: torch.Tensor) -> torch.Tensor:
        torch.save(x, self.marker)
        return self.classify(x)


class Wrapper(torch.nn.Module):
    """A harmless top module around a submodule that reads a file."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.body = Reader(marker)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Foreign(_Classifier):
    """Reads a file through an operator of a namespace outside aten (torch's debug loader)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stolen = torch.ops.debugprims.load_tensor(
            self.marker, [1000], [1], dtype=torch.float32, device=torch.device("cpu")
        )
        return self.classify(x) + stolen


class OnLoad(torch.nn.Module):
    """Writes a file while torch.jit.load loads it, before any screen of its graphs."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 1000)

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.marker, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        torch.save(torch.zeros(1), state[0])
        self.marker, self.training = state


ROGUES = {
    "reader": Reader,
    "writer": Writer,
    "wrapper": Wrapper,
    "foreign": Foreign,
    "on_load": OnLoad,
}


def save(kind: str, path: Path, marker: Path) -> Path:
    """Script the rogue model `kind` aimed at `marker` and save it at `path`."""
    with runtime.torchscript_api():
        torch.jit.script(ROGUES[kind](str(marker)).eval()).save(str(path))
    return path
