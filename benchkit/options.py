"""The benchmark scripts' command line: one preamble, each shared flag declared once.

A script names the shared flags it takes, each with its own default, then adds its own:

    parser = options.parser(__doc__, server=True, concurrency="1,16", seconds=20)
    parser.add_argument("--client-processes", type=int, default=1)

`server=True` adds --model, --images and --set NAME=VALUE (a WANWU_* setting of the server
the script starts; `start_server` and `server_settings` read them). Comma lists
(--concurrency, --threads) arrive as lists of ints, their defaults included.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from app.settings import DEFAULT_MODEL, Settings
from benchkit.server import ROOT, GunicornServer


def ints(text: str) -> list[int]:
    """A comma-separated list of integers: "1,8,32"."""
    return [int(x) for x in text.split(",")]


# The flags several scripts share: type and help here, the default in each script.
FLAGS: dict[str, dict[str, object]] = {
    "model": {"type": Path, "help": "the exported artifact"},
    "images": {"type": Path, "help": "directory of photos (default ../shared/imagenet-samples)"},
    "workers": {"type": int, "help": "Gunicorn workers"},
    "threads": {"type": ints, "help": "comma-separated torch thread counts"},
    "clients": {"type": int, "help": "closed-loop clients"},
    "concurrency": {"type": ints, "help": "comma-separated client counts, one run each"},
    "seconds": {"type": float, "help": "seconds of load per run"},
    "rounds": {"type": int, "help": "interleaved rounds of the measurement"},
    "reps": {"type": int, "help": "timed passes per cell"},
}


def parser(doc: str | None, server: bool = False, **defaults: object) -> argparse.ArgumentParser:
    """An argument parser described by the script's docstring, with the shared flags named in
    `defaults` (each with its default) and, for `server`, --model, --images and --set."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    if server:
        defaults = {"model": ROOT / DEFAULT_MODEL, "images": None, **defaults}
    for name, default in defaults.items():
        parser.add_argument(f"--{name}", default=default, **FLAGS[name])
    if server:
        parser.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="a WANWU_* setting for the server, e.g. --set MAX_BATCH=8",
        )
    return parser


def _overrides(items: list[str]) -> dict[str, str]:
    pairs = dict(item.split("=", 1) for item in items)
    return {k.upper().removeprefix("WANWU_"): v for k, v in pairs.items()}


def server_settings(items: list[str]) -> Settings:
    """The settings a server started with these --set items runs with."""
    overrides = _overrides(items)
    return Settings.from_env({**os.environ, **{f"WANWU_{k}": v for k, v in overrides.items()}})


def start_server(model: Path, items: list[str]) -> GunicornServer:
    """Real Gunicorn from gunicorn.conf.py with these --set items (a context manager)."""
    settings = server_settings(items)
    overrides = {k.lower(): v for k, v in _overrides(items).items()}
    overrides.setdefault("threads", str(settings.torch_threads))
    overrides.pop("workers", None)
    log_dir = Path(os.environ.get("TMPDIR", "/tmp"))
    return GunicornServer(log_dir, workers=settings.worker_processes, model=model, **overrides)
