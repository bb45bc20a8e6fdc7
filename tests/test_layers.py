"""app/'s layers only point down: no import cycle, imports inside functions included.

docs/ARCHITECTURE.md draws the layers. The walk reads every module's source with `ast`, so an
import placed inside a function to dodge a cycle at load time still counts: it is the same
dependency, only later. `from package import name` depends on `package.name` when that is a
module, else on the package itself (its `__init__`).
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

LONG = 350  # lines; a longer hand-written module says why at its top


def modules(root: Path, package: str) -> dict[str, Path]:
    """Every module under `root` (the folder of `package`) by dotted name."""
    found = {}
    for path in root.rglob("*.py"):
        parts = (package, *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(found: dict[str, Path], package: str) -> dict[str, set[str]]:
    """Each module's imports of other modules of `package`, wherever in the file they are."""
    graph: dict[str, set[str]] = {}
    for name, path in found.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.add(full if full in found else base)
        inside = {owner(t, found) for t in targets if t.split(".")[0] == package}
        graph[name] = inside - {None, name}
    return graph


def owner(dotted: str, found: dict[str, Path]) -> str | None:
    """The module `dotted` names, or the one that defines it (`app.x.Thing` → `app.x`)."""
    while dotted and dotted not in found:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


APP = imports(modules(ROOT / "app", "app"), "app")


def test_the_walk_sees_imports_inside_functions(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def later():\n    from ..a import thing\n")
    (pkg / "c.py").write_text("from pkg import a\n")
    graph = imports(modules(pkg, "pkg"), "pkg")
    assert graph["pkg.sub.b"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.sub.b"]]


def test_app_has_no_import_cycle():
    assert cycles(APP) == []


def test_intake_imports_nothing_from_the_adapters():
    reached = {
        (name, target)
        for name, targets in APP.items()
        if name.startswith("app.intake")
        for target in targets
        if target.startswith("app.adapters")
    }
    assert not reached


def test_only_the_web_app_and_the_server_reach_the_adapters():
    """Below the adapters (core, engine, backends, repository, intake) nothing imports them."""
    allowed = ("app.adapters", "app.web", "app.server", "app.ui")
    below = {
        name: sorted(t for t in targets if t.startswith("app.adapters"))
        for name, targets in APP.items()
        if not name.startswith(allowed)
    }
    assert {name: found for name, found in below.items() if found} == {}


def reachable(start: str) -> set[str]:
    """Every module importing `start` loads, directly or not."""
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(APP[name])
    return seen


def test_serving_never_loads_the_export_command_line():
    """The management API imports the export library; argparse and the CLI stay out."""
    served = reachable("app.server") | reachable("app.web")
    assert "app.export.library" in served
    assert not {name for name in served if name.endswith(".cli") or name.endswith("__main__")}


def test_a_long_module_says_why_at_its_top():
    unexplained = []
    for name, path in modules(ROOT / "app", "app").items():
        if name.startswith("app.grpc_proto"):  # generated by protoc
            continue
        lines = len(path.read_text().splitlines())
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if lines > LONG and "It is long because" not in doc:
            unexplained.append(f"{name} ({lines} lines)")
    assert not unexplained
