"""Shared fixtures: a tiny seeded model for fast tests, the real export where it matters."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from app.artifact import write_manifest
from app.engine import Engine
from app.model import Classifier
from app.settings import DEFAULT_MODEL, Settings
from app.web import create_app
from benchkit import digits, system
from benchkit.server import GunicornServer

ROOT = Path(__file__).resolve().parent.parent
# Answers are compared with fp32 references on every CPU, and `auto`, the default, serves bf16
# on some CPUs only; test_runtime.py checks what `auto` picks. Servers inherit the variable.
os.environ.setdefault("WANWU_PRECISION", "fp32")
REAL_MODEL = ROOT / os.environ.get("WANWU_TEST_MODEL", DEFAULT_MODEL)
INPUT_SPEC = {
    "resize": 256,
    "crop": 224,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "interpolation": "bilinear",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip a test marked `needs("nginx")` where nginx is missing, saying how to install it."""
    for item in items:
        for marker in item.iter_markers("needs"):
            if system.find(marker.args[0]) is None:
                item.add_marker(pytest.mark.skip(reason=system.why_missing(marker.args[0])))


class TinyNet(torch.nn.Module):
    """A seeded stand-in for ResNet-18: same input and output shapes, microseconds per image."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, kernel_size=16, stride=16)
        self.fc = torch.nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(self.conv(x), 1), 1))


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny seeded TorchScript model whose manifest has the first format (labels by name)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny") / "tiny.pt"
    torch.jit.script(TinyNet().eval()).save(str(path))
    write_tiny_manifest(path, "torchscript-script")
    return path


def write_tiny_manifest(path: Path, format: str, **fields: object) -> None:
    """The manifest of a seeded tiny model at `path`, in the first format (labels by name)."""
    write_manifest(
        path,
        name=path.stem,
        format=format,
        weights={"source": "random-init(seed=0)"},
        trained=False,
        input=INPUT_SPEC,
        labels="imagenet-1k",
        num_classes=1000,
        **fields,
    )


def save_tiny_model(path: Path, labels: dict[str, list[str]], trained: bool = True) -> Path:
    """A tiny seeded model with these labels embedded in its manifest, as app.export writes."""
    torch.manual_seed(0)
    torch.jit.script(TinyNet(len(labels["en"])).eval()).save(str(path))
    write_manifest(
        path,
        name=path.stem,
        arch=None,
        format="torchscript",
        weights={"source": "test", "sha256": None, "kind": "fine-tune"},
        trained=trained,
        input=INPUT_SPEC,
        num_classes=len(labels["en"]),
        languages=list(labels),
        labels=labels,
    )
    return path


def add_version(root: Path, name: str, version: int, labels: dict[str, list[str]]) -> Path:
    """Export a tiny model into root/name/version/, as `python -m app.export` lays it out."""
    folder = root / name / str(version)
    folder.mkdir(parents=True)
    return save_tiny_model(folder / f"{name}.pt", labels)


def archive(folder: Path, *args: str, name: str = "resnet-18") -> Path:
    """Run torch-model-archiver as TorchServe's docs do; return the archive it wrote."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "model_archiver.model_packaging",
            "--model-name",
            name,
            "--version",
            "1.0",
            "--handler",
            "image_classifier",
            "--export-path",
            str(folder),
            *args,
        ],
        cwd=folder,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return next(folder.glob(f"{name}.*"))


@pytest.fixture(scope="session")
def real_model_path() -> Path:
    """The real ResNet-18 export (`make test` creates it first)."""
    if not REAL_MODEL.is_file():
        pytest.fail(f"{REAL_MODEL} is missing: run `make test`, which exports it")
    return REAL_MODEL


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory: pytest.TempPathFactory):
    """Return a factory for real Gunicorn servers (benchkit.server.GunicornServer, not yet
    started), logging into one folder per test module; stops any still running after it."""
    log_dir = tmp_path_factory.mktemp("gunicorn")
    servers: list[GunicornServer] = []

    def factory(**options: object) -> GunicornServer:
        servers.append(GunicornServer(log_dir, **options))
        return servers[-1]

    yield factory
    for server in servers:
        if server.proc is not None:  # launched: stop() also closes its log
            server.stop()


@dataclass
class DigitsModel:
    """The digits classifier, trained and exported in this session, and its held-out part."""

    path: Path  # the artifact app.export wrote (manifest beside it)
    images: list[bytes]  # held-out PNGs, as a user would upload them
    labels: list[int]  # their digits
    reference: torch.Tensor  # the trained model's own fp32 probabilities, one row per image


@pytest.fixture(scope="session")
def digits_model(tmp_path_factory: pytest.TempPathFactory) -> DigitsModel:
    """Train the digits classifier (about a minute of CPU) and export it with `app.export`."""
    from PIL import Image

    data = digits.split()
    net = digits.train(data)
    path = digits.export(net, tmp_path_factory.mktemp("digits") / "digits.pt")
    images = data.test_png()
    # The reference decodes the PNGs like any reader and preprocesses with torchvision.
    decoded = [Image.open(io.BytesIO(png)).convert("RGB") for png in images]
    return DigitsModel(path, images, data.test_labels, digits.predict(net, decoded))


def make_settings(model: Path, **overrides: object) -> Settings:
    """Settings for an in-process app: small batches, short waits, no pinning."""
    values = {
        "model": str(model),
        "workers": 1,
        "threads": 1,
        "pin_cpus": False,
        "max_batch": 4,
        "max_wait_ms": 5.0,
        "queue_max": 16,
        "precision": "fp32",
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def start_app(tiny_model_path: Path):
    """Return a factory for started apps over the tiny model; stops their batchers after."""
    engines: list[Engine] = []

    def factory(model: Path | None = None, **overrides: object):
        settings = make_settings(model or tiny_model_path, **overrides)
        engine = Engine(Classifier.load(settings.model), settings)
        engine.start()
        engine.batcher.ready.wait(30)
        engines.append(engine)
        app = create_app(settings, engine)
        app.testing = True
        return app

    yield factory
    for engine in engines:
        engine.stop(timeout=10)


@pytest.fixture
def client(start_app):
    """A Flask test client of an app over the tiny model, ready to serve."""
    return start_app().test_client()
