"""What a model file may do: a TorchScript program is screened before anything runs it; a .pt2
package, native code, is served only where this installation built it.

Policy (docs/RELIABILITY.md, "Trust"):
- A TorchScript file is a program. `torch.jit.load` runs its `__setstate__` methods while it
  loads, and its methods may call any operator torch registers, some of which read or write
  files. `load_torchscript` is the one way wanwu opens one (the export's `--torchscript` and
  `--from-mar`, WANWU_MODEL, repository and management loads), and it screens twice:
  1. before loading, the archive's serialized code (Python syntax, read with `ast`): no
     `__setstate__` anywhere, no custom class outside ALLOWED_NAMESPACES;
  2. after loading, before any call: every method and forward hook of every submodule, each
     call inlined, may use only operators of ALLOWED_NAMESPACES, none of `file_operators()`,
     and no call the inliner cannot follow.
  A refusal (`Untrusted`) names the operator and the method; nothing is run or written.
- `file_operators()` is derived from torch's own operator schemas, not listed by hand: an
  operator of an allowed namespace with a string argument named for a file, path or folder
  (in torch 2.14: aten::from_file, aten::save). Other namespaces (c10d, symm_mem, profiler,
  debugprims, onednn, ...) reach networks, devices or the process; no classifier needs them.
- A .pt2 package holds a shared library that loading it runs. It cannot be screened, so its
  manifest must carry `built_by`, an HMAC-SHA256 of its SHA-256 under this installation's key
  (WANWU_BUILD_KEY, made on the first export, mode 0600), which the export writes (`seal`);
  WANWU_TRUST_PT2=1 serves unsigned packages too, for packages from a source you trust.
"""

from __future__ import annotations

import argparse
import ast
import functools
import hmac
import os
import re
import secrets
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from app import runtime
from app.settings import Settings

ALLOWED_NAMESPACES = frozenset({"aten", "prim", "quantized"})
# A string argument named like these is a file-system path (from_file's and save's `filename`).
_PATH_ARGUMENT = re.compile(r"(?:^|_)(?:file|filename|fname|path|dir|directory)s?(?:$|_)")
_CALLS = ("prim::CallMethod", "prim::CallFunction")  # what inlining leaves is not followed
_CUSTOM_CLASS = "__torch__.torch.classes."
MAX_CODE_BYTES = 64 << 20  # a classifier's serialized code is a few hundred KB
SIGNATURE = "hmac-sha256:"
_PT2_HINT = "export it here, or set WANWU_TRUST_PT2=1 if you trust its source"


class Untrusted(RuntimeError):
    """A model file does something a classifier never needs, or comes from elsewhere."""


@functools.cache
def file_operators() -> frozenset[str]:
    """The operators of ALLOWED_NAMESPACES that take a file or folder path, from torch's schemas."""
    return frozenset(
        schema.name
        for schema in torch._C._jit_get_all_schemas()
        if schema.name.split("::")[0] in ALLOWED_NAMESPACES
        and any(
            _PATH_ARGUMENT.search(arg.name) and "str" in str(arg.type) for arg in schema.arguments
        )
    )


def load_torchscript(path: str | Path) -> torch.jit.ScriptModule:
    """Screen the file, load it onto the CPU, screen its graphs; raise Untrusted."""
    screen_code(path)
    with runtime.torchscript_api():
        module = torch.jit.load(str(path), map_location="cpu").eval()
    screen_graphs(module, path)
    return module


def screen_code(path: str | Path) -> None:
    """Refuse an archive whose serialized code `torch.jit.load` would run, or that names a
    custom class of a namespace a classifier never needs."""
    with zipfile.ZipFile(path) as archive:
        members = [i for i in archive.infolist() if "/code/" in i.filename]
        if sum(i.file_size for i in members) > MAX_CODE_BYTES:
            raise Untrusted(f"{path} holds over {MAX_CODE_BYTES >> 20} MB of code")
        for info in members:
            if info.filename.endswith(".py"):
                _screen_source(archive.read(info), f"{path}:{info.filename}")


def _screen_source(source: bytes, where: str) -> None:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError) as exc:
        raise Untrusted(f"{where} is not TorchScript's serialized code ({exc})") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "__setstate__":
            raise Untrusted(
                f"{where} defines __setstate__ (line {node.lineno}), which torch.jit.load "
                "runs while it loads: a classifier has no use for it"
            )
        if isinstance(node, ast.Attribute):
            name = ast.unparse(node)
            namespace = name.removeprefix(_CUSTOM_CLASS).split(".")[0]
            if name.startswith(_CUSTOM_CLASS) and namespace not in ALLOWED_NAMESPACES:
                raise Untrusted(f"{where} uses the custom class {name}, outside {_allowed()}")


def screen_graphs(module: torch.jit.ScriptModule, path: str | Path) -> None:
    """Refuse a module any of whose functions, inlined, calls an operator it may not."""
    refused = file_operators()
    for where, graph in _functions(module):
        graph = graph.copy()
        torch._C._jit_pass_inline(graph)
        for node in _nodes(graph.block()):
            kind = node.kind()
            if kind in refused:
                raise Untrusted(f"{path}: {where} calls {kind}, which reaches the file system")
            if kind in _CALLS:
                raise Untrusted(f"{path}: {where} makes a call the screen cannot follow ({kind})")
            if kind.split("::")[0] not in ALLOWED_NAMESPACES:
                raise Untrusted(f"{path}: {where} calls {kind}, outside {_allowed()}")


def _functions(module: torch.jit.ScriptModule) -> Iterator[tuple[str, torch.Graph]]:
    """Every method and forward hook of every submodule, named by where it is."""
    for name, sub in module.named_modules():
        owner = f"{name}." if name else ""
        for method in sub._c._method_names():
            yield f"{owner}{method}", sub._c._get_method(method).graph
        for hook in [*sub._c._get_forward_pre_hooks(), *sub._c._get_forward_hooks()]:
            yield f"{owner}{hook.name}", hook.graph


def _nodes(block: torch.Block) -> Iterator[torch.Node]:
    for node in block.nodes():
        yield node
        for inner in node.blocks():
            yield from _nodes(inner)


def _allowed() -> str:
    return f"the namespaces a classifier needs ({', '.join(sorted(ALLOWED_NAMESPACES))})"


# -- .pt2 provenance -----------------------------------------------------------------------------


def _key(create: bool) -> bytes:
    """This installation's signing key (WANWU_BUILD_KEY), made on first use when `create`."""
    path = Path(Settings.from_env().build_key).expanduser()
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
    try:
        return path.read_bytes()
    except OSError as exc:
        raise Untrusted(f"cannot read WANWU_BUILD_KEY {path}: {exc.strerror}") from None


def _signature(sha256: str, key: bytes) -> str:
    return SIGNATURE + hmac.new(key, sha256.encode(), "sha256").hexdigest()


def seal(manifest: dict[str, Any]) -> dict[str, Any]:
    """A package's manifest being written here, with this installation's signature."""
    return {**manifest, "built_by": _signature(manifest["artifact_sha256"], _key(create=True))}


def check_package(path: str | Path, manifest: dict[str, Any]) -> None:
    """Refuse a .pt2 package this installation did not sign, unless WANWU_TRUST_PT2 is set."""
    if Settings.from_env().trust_pt2:
        return
    signed = manifest.get("built_by")
    try:
        expected = _signature(manifest["artifact_sha256"], _key(create=False))
    except Untrusted as exc:
        raise Untrusted(f"{path} is a .pt2 package and {exc}; {_PT2_HINT}") from None
    if not isinstance(signed, str) or not hmac.compare_digest(signed, expected):
        raise Untrusted(
            f"{path} is a .pt2 package, native code that runs as it loads, and this "
            f"installation did not build it (its manifest's built_by is not signed with "
            f"WANWU_BUILD_KEY); {_PT2_HINT}"
        )


def main(argv: list[str] | None = None) -> int:
    """`python -m app.trust [FILE ...]`: print what is screened, then screen each file."""
    parser = argparse.ArgumentParser(prog="python -m app.trust", description=main.__doc__)
    parser.add_argument("files", nargs="*", type=Path, help="TorchScript files to screen")
    args = parser.parse_args(argv)
    print(f"allowed operator namespaces: {', '.join(sorted(ALLOWED_NAMESPACES))}")
    print(f"refused as reaching files (torch {torch.__version__}'s schemas): ", end="")
    print(", ".join(sorted(file_operators())))
    refused = 0
    for path in args.files:
        try:
            load_torchscript(path)
        except Untrusted as exc:
            print(f"REFUSED {exc}")
            refused += 1
        else:
            print(f"passes  {path}")
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
