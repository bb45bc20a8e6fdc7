"""Regenerate app/grpc_proto's Python stubs from its .proto files with grpcio-tools.

The protos are Triton's published `grpc_service.proto` and `model_config.proto`
(triton-inference-server/common 83adf7c), package `inference`: the ones `tritonclient.grpc`'s
own stubs are built from, byte for byte, so both sets of stubs can live in one process.
protoc writes `import model_config_pb2`; the one rewrite below makes it a package import.
tests/test_grpc.py regenerates into a temporary folder and compares with the committed files;
scripts/gen_grpc_stubs.py rewrites the committed ones.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from grpc_tools import protoc

PROTO_DIR = Path(__file__).resolve().parent.parent / "app" / "grpc_proto"
PACKAGE = "app.grpc_proto"
# The generated files (the empty model_config_pb2_grpc.py is not kept).
STUBS = ("grpc_service_pb2.py", "grpc_service_pb2_grpc.py", "model_config_pb2.py")


def generate(out: Path) -> list[Path]:
    """Write the stubs into `out` and return their paths."""
    well_known = resources.files("grpc_tools") / "_proto"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(PROTO_DIR / "grpc_service.proto"),
            str(PROTO_DIR / "model_config.proto"),
        ]
    )
    if code != 0:
        raise RuntimeError(f"grpc_tools.protoc failed with exit code {code}")
    (out / "model_config_pb2_grpc.py").unlink()
    for name in ("grpc_service_pb2.py", "grpc_service_pb2_grpc.py"):
        path = out / name
        path.write_text(
            path.read_text()
            .replace("import model_config_pb2 as", f"from {PACKAGE} import model_config_pb2 as")
            .replace("import grpc_service_pb2 as", f"from {PACKAGE} import grpc_service_pb2 as")
        )
    return [out / name for name in STUBS]
