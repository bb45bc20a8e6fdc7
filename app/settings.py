"""Every setting of the service, read from WANWU_* environment variables and validated once.

It is long because each setting is declared here once (default, help, rule) and the README's
table is generated from these declarations, so the list stays in one place.
"""

from __future__ import annotations

import dataclasses
import difflib
import glob
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from app import cgroup


class SettingsError(ValueError):
    """A setting has a value the service cannot run with."""


def usable_cpus() -> int:
    """Count the CPUs this process may run on, honouring affinity and a cgroup CPU quota
    (v2 or v1; a fraction of a CPU rounds down, to at least one)."""
    cpus = len(os.sched_getaffinity(0))
    quota = cgroup.cpu_quota()
    return cpus if quota is None else min(cpus, max(1, int(quota)))


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


DEFAULT_MODEL = "models/resnet18.pt"
# The public-key token algorithms pyjwt verifies (with `cryptography`): never `none` or HMAC.
JWT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384")
JWT_ALGORITHMS += ("ES512", "EdDSA")
MB = 1024 * 1024
MIN_KEY_LENGTH = 16


@dataclass(frozen=True)
class Rule:
    """A condition a setting's value must meet, and the words an error message uses for it."""

    holds: Callable[[Any], bool]
    says: str


def _port(bind: str) -> int | None:
    """The TCP port of a HOST:PORT address; None for fd://N, empty or portless."""
    try:
        return urlsplit(f"//{bind}").port
    except ValueError:
        return None


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def at_least(low: float, note: str = "") -> Rule:
    return Rule(lambda v: v >= low, f">= {low}{note}")


def above(low: float) -> Rule:
    return Rule(lambda v: v > low, f"> {low}")


def between(low: float, high: float) -> Rule:
    return Rule(lambda v: low <= v <= high, f"between {low} and {high}")


def one_of(*choices: str) -> Rule:
    return Rule(lambda v: v in choices, f"one of {', '.join(choices)}")


def matching(pattern: str, says: str) -> Rule:
    return Rule(lambda v: re.fullmatch(pattern, v) is not None, says)


def _setting(
    env: str, default: Any, doc: str, rule: Rule | None = None, secret: bool = False
) -> Any:
    """Declare a setting once: its variable, default, description and the rule it must meet."""
    meta = {"env": env, "doc": doc, "rule": rule, "secret": secret}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    """The service's configuration; `Settings.from_env()` is the only way it is read."""

    bind: str = _setting("WANWU_BIND", "0.0.0.0:8000", "Address Gunicorn listens on.")
    grpc_bind: str = _setting(
        "WANWU_GRPC_BIND",
        "",
        "Address of OIP v2 over gRPC, served by every worker (SO_REUSEPORT); empty: off.",
    )
    workers: int = _setting(
        "WANWU_WORKERS",
        0,
        "Worker processes; 0 means one per GPU on CUDA (one for cuda:N), else one per usable CPU.",
        at_least(0),
    )
    threads: int = _setting(
        "WANWU_THREADS",
        0,
        "Torch intra-op threads per worker; 0 means usable CPUs / workers.",
        at_least(0),
    )
    http_threads: int = _setting(
        "WANWU_HTTP_THREADS",
        0,
        "Request threads per worker; 0 means 2 x max batch (at least 8).",
        at_least(0),
    )
    max_batch: int = _setting(
        "WANWU_MAX_BATCH", 8, "Most images in one forward pass.", between(1, 256)
    )
    max_wait_ms: float = _setting(
        "WANWU_MAX_WAIT_MS",
        5.0,
        "Longest a partial batch waits for images that are still being decoded.",
        between(0, 1000),
    )
    queue_max: int = _setting(
        "WANWU_QUEUE_MAX",
        64,
        "Most images admitted per worker (at least WANWU_MAX_BATCH); beyond it 503 + Retry-After.",
        at_least(1),
    )
    explain_queue_max: int = _setting(
        "WANWU_EXPLAIN_QUEUE_MAX",
        4,
        "Most images a worker explains at once, from admission to answer (WANWU_QUEUE_MAX if "
        "lower); beyond it 503 + Retry-After, so explanations cannot crowd predictions out.",
        at_least(1),
    )
    timeout_ms: float = _setting(
        "WANWU_TIMEOUT_MS",
        10000.0,
        "Per-request deadline (more than WANWU_MAX_WAIT_MS); an expired request gets 504.",
        above(0),
    )
    device: str = _setting(
        "WANWU_DEVICE",
        "auto",
        "Where the model runs: auto (CUDA when a GPU is visible), cpu, cuda or cuda:N.",
        matching(r"auto|cpu|cuda(:\d+)?", "auto, cpu, cuda or cuda:N"),
    )
    precision: str = _setting(
        "WANWU_PRECISION",
        "auto",
        "Inference precision: fp32, bf16, fp16 (CUDA) or auto (bf16 on a CPU with AVX512-BF16 "
        "or AMX, fp16 on CUDA, else fp32); a .pt2 package runs in the precision it was built in.",
        one_of("fp32", "bf16", "fp16", "auto"),
    )
    cpu_fusion: bool = _setting(
        "WANWU_CPU_FUSION",
        True,
        "Fuse operators with oneDNN Graph on the CPU: faster small batches, about one more "
        "copy of the weights per batch size in each worker.",
    )
    model: str = _setting(
        "WANWU_MODEL", DEFAULT_MODEL, "Model artifact: TorchScript (.pt) or a .pt2 package."
    )
    build_key: str = _setting(
        "WANWU_BUILD_KEY",
        "~/.config/wanwu/build.key",
        "File of this installation's secret key (made by the first .pt2 export, mode 0600): "
        "the export signs each .pt2 package with it, and only packages so signed are served.",
    )
    trust_pt2: bool = _setting(
        "WANWU_TRUST_PT2",
        False,
        "Serve .pt2 packages this installation did not build (native code: only from a source "
        "you trust).",
    )
    model_repository: str = _setting(
        "WANWU_MODEL_REPOSITORY",
        "",
        "Folder of models (a folder each, a numbered folder per version, the highest serving); "
        "when set, WANWU_MODEL is not read.",
    )
    pinned_versions: tuple[str, ...] = _setting(
        "WANWU_PINNED_VERSIONS",
        (),
        "Comma-separated NAME=VERSION: the version a repository model serves at start and on a "
        "load without a version, instead of its highest.",
        Rule(
            lambda v: all(re.fullmatch(r"[^=]+=[0-9]+", p) for p in v),
            "NAME=VERSION pairs (e.g. resnet=3), comma-separated",
        ),
    )
    model_snapshot: str = _setting(
        "WANWU_MODEL_SNAPSHOT",
        "",
        "File where every management change writes the served versions, so that a restart "
        "serves them again (a repository's pinned or highest otherwise); unset: not kept.",
    )
    management_bind: str = _setting(
        "WANWU_MANAGEMENT_BIND",
        "127.0.0.1:8081",
        "Address of the management API (TorchServe's management calls, OIP's repository "
        "extension); it listens only when WANWU_ADMIN_KEYS is set, never on WANWU_BIND.",
    )
    admin_keys: tuple[str, ...] = _setting(
        "WANWU_ADMIN_KEYS",
        (),
        "Comma-separated bearer keys of the management API (not WANWU_API_KEYS'); unset: no "
        "management API.",
        secret=True,
    )
    load_timeout_s: float = _setting(
        "WANWU_LOAD_TIMEOUT_S",
        300.0,
        "Longest a management load waits for every worker to load and warm a version; past "
        "it the load is undone and the served versions stay.",
        above(0),
    )
    pin_cpus: bool = _setting(
        "WANWU_PIN_CPUS", True, "Give each worker a disjoint CPU set (sched_setaffinity)."
    )
    max_upload_mb: float = _setting("WANWU_MAX_UPLOAD_MB", 20.0, "Largest request body.", above(0))
    header_timeout_s: float = _setting(
        "WANWU_HEADER_TIMEOUT_S",
        10.0,
        "Time a client has to send a request's headers, from connecting (or from the first byte "
        "on a kept-alive connection); then the connection is closed.",
        above(0),
    )
    body_timeout_s: float = _setting(
        "WANWU_BODY_TIMEOUT_S",
        10.0,
        "Time a client has to send a request body, plus its length at WANWU_BODY_MIN_KBPS; "
        "then 408.",
        above(0),
    )
    body_min_kbps: float = _setting(
        "WANWU_BODY_MIN_KBPS", 64.0, "Slowest upload (KiB/s) a body deadline allows for.", above(0)
    )
    buffer_mb: float = _setting(
        "WANWU_BUFFER_MB",
        128.0,
        "Most request bytes a worker holds (being received or served; at least "
        "WANWU_MAX_UPLOAD_MB); a body that would pass it gets 503 + Retry-After before it is read.",
        above(0),
    )
    max_connections: int = _setting(
        "WANWU_MAX_CONNECTIONS",
        1024,
        "Open connections per worker; past it the longest idle one, or the new one, is closed.",
        at_least(1),
    )
    max_connections_per_address: int = _setting(
        "WANWU_MAX_CONNECTIONS_PER_ADDRESS",
        64,
        "Open connections per worker from one client address (0 = no cap); past it the new "
        "one is closed.",
        at_least(0, " (0 = no cap)"),
    )
    trust_proxy: tuple[str, ...] = _setting(
        "WANWU_TRUST_PROXY",
        ("127.0.0.1", "::1"),
        "Comma-separated addresses or networks of proxies in front (none: no proxy): their "
        "X-Forwarded-For names the client, whose requests in progress are capped per address "
        "instead of the proxy's connections.",
        Rule(
            lambda v: v == ("none",) or all(_is_network(p) for p in v),
            "IP addresses or networks (e.g. 10.0.0.0/8), or none",
        ),
    )
    max_files: int = _setting("WANWU_MAX_FILES", 16, "Most images in one request.", at_least(1))
    max_pixels: int = _setting(
        "WANWU_MAX_PIXELS",
        40_000_000,
        "Largest image (width x height) accepted.",
        at_least(224 * 224, " (224 x 224)"),
    )
    decode: str = _setting(
        "WANWU_DECODE",
        "fast",
        "fast decodes large photos scaled down (JPEG DCT scaling, else box reduction) to at "
        "least twice the resize target and resizes 8-bit pixels with torch's vectorised "
        "kernels (within 2 levels of torchvision); exact decodes every pixel and resizes "
        "with Pillow, bit-exact to torchvision.",
        one_of("fast", "exact"),
    )
    api_keys: tuple[str, ...] = _setting(
        "WANWU_API_KEYS",
        (),
        "Comma-separated bearer keys; when set, /predict requires one.",
        secret=True,
    )
    jwt_public_key: str = _setting(
        "WANWU_JWT_PUBLIC_KEY",
        "",
        "PEM file of the public key signed bearer tokens (JWT) are checked with; tokens are "
        "then accepted wherever API keys are.",
    )
    jwt_jwks: str = _setting(
        "WANWU_JWT_JWKS",
        "",
        "JWKS file (read at start-up, never fetched) of token keys, chosen by `kid`; instead of "
        "WANWU_JWT_PUBLIC_KEY.",
    )
    jwt_audience: str = _setting(
        "WANWU_JWT_AUDIENCE",
        "",
        "The `aud` a token must name (required with a token key).",
    )
    jwt_issuer: str = _setting(
        "WANWU_JWT_ISSUER", "", "The `iss` a token must carry (empty: any issuer)."
    )
    jwt_algorithms: tuple[str, ...] = _setting(
        "WANWU_JWT_ALGORITHMS",
        ("RS256", "ES256"),
        "Comma-separated token signature algorithms accepted (public-key ones only).",
        Rule(lambda v: bool(v) and set(v) <= set(JWT_ALGORITHMS), f"some of {JWT_ALGORITHMS}"),
    )
    rate_limit: str = _setting(
        "WANWU_RATE_LIMIT",
        "",
        "Calls each caller (API key, token subject, else client address) may make, as "
        "N/second, N/minute, N/hour or N/day, exact across workers; past it 429 + Retry-After "
        "(empty: no limit).",
        matching(r"|[1-9][0-9]*/(second|minute|hour|day)", "N/second|minute|hour|day, or empty"),
    )
    metrics_public: bool = _setting(
        "WANWU_METRICS_PUBLIC", True, "Serve /metrics without an API key."
    )
    log_level: str = _setting(
        "WANWU_LOG_LEVEL",
        "info",
        "Log level: debug, info, warning or error.",
        one_of("debug", "info", "warning", "error"),
    )

    def __post_init__(self) -> None:
        # The CPUs are counted once, where the settings are read (the Gunicorn master): a
        # worker, pinned to its own CPUs, would otherwise count its share as the machine's.
        object.__setattr__(self, "_cpus", usable_cpus())
        for f in dataclasses.fields(self):
            rule, value = f.metadata["rule"], getattr(self, f.name)
            if rule is not None and not rule.holds(value):
                got = ",".join(value) if isinstance(value, tuple) else value  # as it was set
                raise SettingsError(f"{f.metadata['env']} must be {rule.says} (got {got!r})")
        # Rules that relate two settings.
        if self.queue_max < self.max_batch:
            raise SettingsError(
                f"WANWU_QUEUE_MAX must be >= WANWU_MAX_BATCH ({self.max_batch}) "
                f"(got {self.queue_max})"
            )
        if self.buffer_mb < self.max_upload_mb:
            raise SettingsError(
                f"WANWU_BUFFER_MB must be >= WANWU_MAX_UPLOAD_MB ({self.max_upload_mb:g}), or no "
                f"upload of that size fits (got {self.buffer_mb:g})"
            )
        if self.jwt_public_key and self.jwt_jwks:
            raise SettingsError("Set WANWU_JWT_PUBLIC_KEY or WANWU_JWT_JWKS, not both")
        if (self.jwt_public_key or self.jwt_jwks) and not self.jwt_audience:
            raise SettingsError(
                "WANWU_JWT_AUDIENCE must name this service when a token key is set: without "
                "it a token issued for another service would be accepted"
            )
        if self.admin_keys and self.management_bind == self.bind:
            raise SettingsError(
                "WANWU_MANAGEMENT_BIND must differ from WANWU_BIND: the management API is "
                f"never answered on the inference port (both are {self.bind!r})"
            )
        grpc_port = _port(self.grpc_bind)
        if self.admin_keys and grpc_port is not None and grpc_port == _port(self.management_bind):
            raise SettingsError(
                f"WANWU_MANAGEMENT_BIND must use another port than WANWU_GRPC_BIND (both "
                f"{grpc_port}; 8081 is KServe's gRPC port and TorchServe's management port): "
                "move the management API, e.g. WANWU_MANAGEMENT_BIND=127.0.0.1:8085"
            )
        if self.admin_keys and (
            self.bind.startswith("fd://") != self.management_bind.startswith("fd://")
        ):
            raise SettingsError(
                "WANWU_BIND and WANWU_MANAGEMENT_BIND must both be fd://N or neither: given a "
                f"file descriptor, Gunicorn opens no address (got {self.bind!r} and "
                f"{self.management_bind!r})"
            )
        if self.model_snapshot and not self.model_repository:
            raise SettingsError(
                "WANWU_MODEL_SNAPSHOT keeps a model repository's changes: set "
                "WANWU_MODEL_REPOSITORY too (WANWU_MODEL serves one fixed model)"
            )
        if self.timeout_ms <= self.max_wait_ms:
            raise SettingsError(
                f"WANWU_TIMEOUT_MS must exceed WANWU_MAX_WAIT_MS ({self.max_wait_ms:g}) "
                f"(got {self.timeout_ms:g})"
            )

    @property
    def pins(self) -> dict[str, str]:
        """WANWU_PINNED_VERSIONS as {model: version}."""
        pairs = (p.split("=", 1) for p in self.pinned_versions)
        return {name.strip(): str(int(version)) for name, version in pairs}

    @property
    def max_upload_bytes(self) -> int:
        """WANWU_MAX_UPLOAD_MB in bytes."""
        return int(self.max_upload_mb * MB)

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
        return self._cpus

    @property
    def torch_threads(self) -> int:
        """Intra-op threads each worker runs with."""
        return self.threads or max(1, self._cpus // self.worker_processes)

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
            if f.metadata["secret"] and raw is not None and not values.get(f.name):
                # A template's empty secret ("", ",") must not open the service silently.
                raise SettingsError(
                    f"{f.metadata['env']}={raw!r} holds no key: give at least one, or unset it"
                )
        return cls(**values)

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        """List (variable, default, description) for every setting: the README's table."""
        return [
            (f.metadata["env"], _format(f.default), f.metadata["doc"])
            for f in dataclasses.fields(cls)
        ]

    @classmethod
    def markdown_table(cls) -> str:
        """The README's settings table, generated from the declarations above."""
        rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
        rows += [f"| `{env}` | `{default}` | {doc} |" for env, default, doc in cls.describe()]
        return "\n".join(rows)

    def public(self) -> dict[str, Any]:
        """Return the settings that may be shown to clients (no secrets)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if not f.metadata.get("secret")
        }


# WANWU_* variables that are not service settings: the tools' own, and the metrics directory
# bookkeeping app.boot keeps across a reload.
TOOL_VARIABLES = frozenset(
    {
        "WANWU_LOADTEST_IMAGES",
        "WANWU_ADMIN_KEY",  # the key `python -m app.train --load` sends (WANWU_ADMIN_KEYS')
        "WANWU_TEST_MODEL",
        "WANWU_METRICS_DIR_OWNER",
        "WANWU_METRICS_DIR_CREATED",
    }
)


def short_keys(settings: Settings) -> list[str]:
    """One warning per bearer key shorter than MIN_KEY_LENGTH (a key is a password)."""
    return [
        f"{f.metadata['env']} holds a key of {len(key)} characters; use {MIN_KEY_LENGTH} or "
        "more (e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`)"
        for f in dataclasses.fields(settings)
        if f.metadata["secret"]
        for key in getattr(settings, f.name)
        if len(key) < MIN_KEY_LENGTH
    ]


def refuse_unknown_variables(environ: Mapping[str, str] | None = None) -> None:
    """Raise SettingsError naming each WANWU_* variable that is no setting, with the closest
    that is.

    A misspelt setting is refused rather than ignored: ignored, its default would serve, and a
    misspelt WANWU_MODEL_REPOSITORY would serve the default model, untrained where it was
    exported offline, beside a warning few read.
    """
    environ = os.environ if environ is None else environ
    known = [f.metadata["env"] for f in dataclasses.fields(Settings)]
    problems = []
    for name in sorted(environ):
        if not name.startswith("WANWU_") or name in known or name in TOOL_VARIABLES:
            continue
        # Compare what follows the shared prefix, or every name would look alike.
        close = difflib.get_close_matches(name[6:], [k[6:] for k in known], n=1, cutoff=0.6)
        hint = f"did you mean WANWU_{close[0]}?" if close else "the README's Settings lists them"
        problems.append(f"{name} is not a wanwu setting ({hint}): rename or unset it")
    if problems:
        raise SettingsError("; ".join(problems))


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, tuple):
        return ",".join(value) or "(empty)"
    return str(value) or "(empty)"


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


if __name__ == "__main__":
    print(Settings.markdown_table())
