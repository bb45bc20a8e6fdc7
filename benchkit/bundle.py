"""What the GPU check needs on the lent GPU machine, and which of it must travel as wheels.

The lent machine (scripts/gpu_check.sh) has no network and no project venv: its python3 holds
torch and a long list of packages (IMAGE, as its image was read on 2026-11-17), and whatever
else the check imports travels as wheels (BUNDLE, made by scripts/gpu_bundle.py). The check's
Python code is every module of app/, gunicorn.conf.py and, following first-party imports, the
scripts and tests the check runs (ENTRIES). `unmet()` names each third-party import of that
code that neither provides: the list is data, and a new dependency shows up there first.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = frozenset({"app", "benchkit", "scripts", "tests"})

# Distributions that travel, one version each: the runtime packages the image lacks and the
# needs of those (their Requires-Dist), pinned to the versions this project's venv tests.
# Flask's own needs travel too, so that the image's older or newer copies do not decide.
BUNDLE = {
    "flask": "3.1.3",
    "werkzeug": "3.1.9",
    "jinja2": "3.1.6",
    "markupsafe": "3.0.4",
    "itsdangerous": "2.2.0",
    "click": "8.5.1",
    "blinker": "1.9.0",
    "gunicorn": "27.0.1",
    "pillow": "13.0.0",  # pillow-heif 1.8.1 needs a recent Pillow; the image's is not pinned
    "pillow-heif": "1.8.1",
    "simplejpeg": "1.9.0",  # fast-policy JPEG decoding (app/imaging.py); needs numpy only
    "orjson": "3.13.0",  # the app's JSON (app/json_provider.py); no dependencies
    "torchao": "0.18.0",  # builds the int8 package that tests/test_pt2.py's fixture compiles
    "pyjwt": "2.15.1",  # signed bearer tokens (app/tokens.py), with its crypto extra:
    "cryptography": "51.0.1",
    "cffi": "2.1.1",
    "pycparser": "3.12",
    # OIP over gRPC (app/adapters/grpc.py): the image's grpcio and protobuf may be older than
    # the stubs' gencode and grpcio-status's floor, so the tested versions travel.
    "grpcio": "1.85.4",
    "grpcio-status": "1.85.3",
    "googleapis-common-protos": "1.76.0",
    "protobuf": "6.33.6",
}

# Imports behind an option the check never passes, which need neither the image nor a wheel.
OPTIONAL = frozenset({"mlflow"})  # `python -m app.train --mlflow URI`

# The lent machine's image, every Python package it holds as read on 2026-11-17: what need not
# travel (only the names are known; versions beside torch 2.11.0+cu130 were not all read).
IMAGE = frozenset(
    """
    absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
    botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy
    coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython
    diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic
    frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub
    humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt
    jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning
    lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py
    markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
    multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy
    numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
    nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver
    nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink
    nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
    opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint
    packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client
    propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks
    pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout
    pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu
    safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece
    sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels
    sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile
    tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
    torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect
    urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
    """.split()
)

# Import names that are not their distribution's name.
DISTRIBUTION_OF = {
    "PIL": "pillow",
    "cv2": "opencv-python-headless",
    "google": "protobuf",
    "grpc": "grpcio",
    "grpc_status": "grpcio-status",
    "jwt": "pyjwt",
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
}

# What the check runs beside app/ (whose every module counts): the scripts of its steps and
# the test modules its CUDA step collects. Their first-party imports are followed.
ENTRIES = (
    "gunicorn.conf.py",
    "scripts/bench_model.py",
    "scripts/bench_service.py",
    "scripts/bench_decode.py",
    "tests/test_runtime.py",
    "tests/test_gunicorn.py",
    "tests/test_pt2.py",
)


def distribution(import_name: str) -> str:
    """The distribution that provides a top-level import name (normalised, lower case)."""
    return DISTRIBUTION_OF.get(import_name, import_name).lower().replace("_", "-")


def _module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported(tree: ast.AST) -> Iterable[str]:
    """Every absolute module name a file imports, `from a import b` also as `a.b`."""
    for node in ast.walk(tree):  # function-level imports count: they run too
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def third_party_imports(entries: Iterable[str] = ENTRIES) -> dict[str, set[str]]:
    """Top-level third-party import names of the check's code -> the files that import them."""
    todo = [*ROOT.glob("app/**/*.py"), *(ROOT / entry for entry in entries)]
    seen: set[Path] = set()
    found: dict[str, set[str]] = {}
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imported(ast.parse(path.read_text(), str(path))):
            top = name.partition(".")[0]
            if top in FIRST_PARTY:
                if module := _module_file(name):
                    todo.append(module)
            elif top not in sys.stdlib_module_names:
                found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def unmet(imports: dict[str, set[str]]) -> dict[str, set[str]]:
    """The imports that neither the bundle nor the image provides."""
    have = IMAGE | set(BUNDLE) | OPTIONAL
    return {name: files for name, files in imports.items() if distribution(name) not in have}
