"""Every setting of the service, read from WANWU_* environment variables and validated once."""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class SettingsError(ValueError):
    """A setting has a value the service cannot run with."""


def usable_cpus() -> int:
    """Count the CPUs this process may run on, honouring affinity and a cgroup CPU quota."""
    cpus = len(os.sched_getaffinity(0))
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()
        if quota != "max":
            cpus = min(cpus, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return cpus


def visible_gpus() -> int:
    """Count GPUs without touching CUDA (safe in the master): device nodes and the env mask."""
    mask = os.environ.get("CUDA_VISIBLE_DEVICES")
    nodes = len(glob.glob("/dev/nvidia[0-9]*"))
    if mask is not None:
        return min(nodes, len([d for d in mask.split(",") if d.strip() and d.strip() != "-1"]))
    return nodes


def uses_gpu(device: str) -> bool:
    """Whether WANWU_DEVICE selects CUDA, decided without any CUDA call."""
    return device.startswith("cuda") or (device == "auto" and visible_gpus() > 0)


def _setting(env: str, default: Any, doc: str, **extra: Any) -> Any:
    """Declare a field with its environment variable and a one-line description."""
    meta = {"env": env, "doc": doc, **extra}
    if callable(default):
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    """The service's configuration; `Settings.from_env()` is the only way it is read."""

    bind: str = _setting("WANWU_BIND", "0.0.0.0:8000", "Address Gunicorn listens on.")
    workers: int = _setting(
        "WANWU_WORKERS",
        0,
        "Worker processes; 0 means one per GPU on CUDA (one for cuda:N), else one per usable CPU.",
    )
    threads: int = _setting(
        "WANWU_THREADS",
        0,
        "Torch intra-op threads per worker; 0 means usable CPUs / workers.",
    )
    http_threads: int = _setting(
        "WANWU_HTTP_THREADS",
        0,
        "Request threads per worker; 0 means 2 x max batch (at least 8).",
    )
    max_batch: int = _setting("WANWU_MAX_BATCH", 8, "Most images in one forward pass.")
    max_wait_ms: float = _setting(
        "WANWU_MAX_WAIT_MS",
        5.0,
        "Longest a partial batch waits for images that are still being decoded.",
    )
    queue_max: int = _setting(
        "WANWU_QUEUE_MAX", 64, "Most images admitted per worker; beyond it 503 + Retry-After."
    )
    timeout_ms: float = _setting(
        "WANWU_TIMEOUT_MS", 10000.0, "Per-request deadline; an expired request gets 504."
    )
    device: str = _setting("WANWU_DEVICE", "auto", "auto, cpu, cuda or cuda:N.")
    precision: str = _setting(
        "WANWU_PRECISION",
        "fp32",
        "fp32, bf16, fp16 (CUDA) or auto; a .pt2 package runs in the precision it was built in.",
    )
    cpu_fusion: bool = _setting(
        "WANWU_CPU_FUSION",
        True,
        "Fuse operators with oneDNN Graph on the CPU: faster small batches, about one more "
        "copy of the weights per batch size in each worker.",
    )
    model: str = _setting(
        "WANWU_MODEL", "models/resnet18.pt", "Model artifact: TorchScript (.pt) or a .pt2 package."
    )
    pin_cpus: bool = _setting(
        "WANWU_PIN_CPUS", True, "Give each worker a disjoint CPU set (sched_setaffinity)."
    )
    max_upload_mb: float = _setting("WANWU_MAX_UPLOAD_MB", 20.0, "Largest request body.")
    max_files: int = _setting("WANWU_MAX_FILES", 16, "Most images in one request.")
    max_pixels: int = _setting(
        "WANWU_MAX_PIXELS", 40_000_000, "Largest image (width x height) accepted."
    )
    api_keys: tuple[str, ...] = _setting(
        "WANWU_API_KEYS",
        (),
        "Comma-separated bearer keys; when set, /predict requires one.",
        secret=True,
    )
    metrics_public: bool = _setting(
        "WANWU_METRICS_PUBLIC", True, "Serve /metrics without an API key."
    )
    log_level: str = _setting("WANWU_LOG_LEVEL", "info", "debug, info, warning or error.")

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def worker_processes(self) -> int:
        """Gunicorn workers to run.

        On the CPU one single-threaded worker per CPU gave the best throughput under load
        (docs/BENCHMARKS.md); on CUDA each worker holds a context and a copy of the model on
        its GPU, so one per GPU.
        """
        if self.workers:
            return self.workers
        if uses_gpu(self.device):
            return 1 if ":" in self.device else max(1, visible_gpus())
        return usable_cpus()

    @property
    def torch_threads(self) -> int:
        """Intra-op threads each worker runs with."""
        return self.threads or max(1, usable_cpus() // self.worker_processes)

    @property
    def request_threads(self) -> int:
        """Gunicorn gthread threads per worker: enough for batches to fill."""
        return self.http_threads or max(8, 2 * self.max_batch)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from the environment; raise SettingsError naming any bad value."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is not None and raw.strip() != "":
                values[f.name] = _parse(f, raw.strip())
        return cls(**values)

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        """List (variable, default, description) for every setting: the README's table."""
        rows = []
        for f in dataclasses.fields(cls):
            if "default_text" in f.metadata:
                default = f.metadata["default_text"]
            elif f.default is dataclasses.MISSING:
                default = str(f.default_factory())  # type: ignore[misc]
            else:
                default = _format(f.default)
            rows.append((f.metadata["env"], default, f.metadata["doc"]))
        return rows

    def public(self) -> dict[str, Any]:
        """Return the settings that may be shown to clients (no secrets)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if not f.metadata.get("secret")
        }


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, tuple):
        return ",".join(value) or "(empty)"
    return str(value)


_PARSERS: dict[Any, Callable[[str], Any]] = {
    "int": int,
    "float": float,
    "str": str,
    "bool": lambda raw: {
        "1": True,
        "true": True,
        "yes": True,
        "0": False,
        "false": False,
        "no": False,
    }[raw.lower()],
    "tuple[str, ...]": lambda raw: tuple(k.strip() for k in raw.split(",") if k.strip()),
}


def _parse(f: dataclasses.Field[Any], raw: str) -> Any:
    try:
        return _PARSERS[f.type](raw)
    except (KeyError, ValueError):
        raise SettingsError(
            f"{f.metadata['env']}={raw!r} is not a valid {f.type} ({f.metadata['doc']})"
        ) from None


_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _validate(s: Settings) -> None:
    checks = [
        (s.workers >= 0, "WANWU_WORKERS must be >= 0 (0 = automatic)"),
        (s.threads >= 0, "WANWU_THREADS must be >= 0 (0 = automatic)"),
        (s.http_threads >= 0, "WANWU_HTTP_THREADS must be >= 0 (0 = automatic)"),
        (1 <= s.max_batch <= 256, "WANWU_MAX_BATCH must be between 1 and 256"),
        (0 <= s.max_wait_ms <= 1000, "WANWU_MAX_WAIT_MS must be between 0 and 1000"),
        (s.queue_max >= s.max_batch, "WANWU_QUEUE_MAX must be >= WANWU_MAX_BATCH"),
        (s.timeout_ms > s.max_wait_ms, "WANWU_TIMEOUT_MS must exceed WANWU_MAX_WAIT_MS"),
        (bool(_DEVICE.match(s.device)), "WANWU_DEVICE must be auto, cpu, cuda or cuda:N"),
        (
            s.precision in ("fp32", "bf16", "fp16", "auto"),
            "WANWU_PRECISION must be fp32, bf16, fp16 or auto",
        ),
        (s.max_upload_mb > 0, "WANWU_MAX_UPLOAD_MB must be > 0"),
        (s.max_files >= 1, "WANWU_MAX_FILES must be >= 1"),
        (s.max_pixels >= 224 * 224, "WANWU_MAX_PIXELS must be >= 50176 (224 x 224)"),
        (
            s.log_level in ("debug", "info", "warning", "error"),
            "WANWU_LOG_LEVEL must be debug, info, warning or error",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise SettingsError(f"{message} (got {_offending(s, message)})")


def _offending(s: Settings, message: str) -> str:
    env = message.split()[0]
    for f in dataclasses.fields(s):
        if f.metadata["env"] == env:
            return repr(getattr(s, f.name))
    return "?"
