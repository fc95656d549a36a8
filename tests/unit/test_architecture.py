"""The map in docs/architecture.md, checked from the code: layers, private reach, module size, docstrings.

The layering rule is data: `LAYERS` lists the packages from the bottom up. A module may import its own package and
any package of a lower layer, never a package of its own layer or above. Every import counts — at module level,
inside functions, under `TYPE_CHECKING` — because each is a dependency someone has to understand.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).parents[2] / "src" / "finalmile"

LAYERS: list[set[str]] = [
    {"_version", "errors"},
    {"config", "arrow", "tracing"},  # tracing: OpenTelemetry's spans, a no-op unless turned on
    {"sandbox"},  # runs uploaded code with its workspace's reach only: runtimes and jobs use it
    {"schema"},
    {"runtimes"},
    {"registry"},
    {"pipelines"},
    {"logs"},
    {"backends", "monitoring", "jobs", "access"},
    {"rollouts"},  # replays (and rollouts) of a candidate against what was served
    {"verbs"},  # the declared operations every front end is held to
    {"serving"},  # the transport-free data plane, codecs, metrics: it infers through the Backend protocol
    {"streaming"},  # broker sources and sinks feeding the data plane
    {"edge"},  # bundles, and an edge site's link home (log parts up, versions down)
    {"services"},  # the composition root
    {"sdk", "dashboard"},  # the dashboard's pages read the services, as the SDK does
    {"http"},
    {"client"},  # an embedded client starts the API for its jobs' sandboxed children
    {"cli", "__init__"},
    {"__main__"},
]
MAX_LINES = 400


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(SRC.rglob("*.py")):
        if "migrations" in path.parts:
            continue  # Alembic's scripts, loaded by Alembic
        if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
            continue  # protoc's output (serving/grpc/generate.py), not written here
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)
        yield name, path


def _group(module: str) -> str:
    """The longest entry of `LAYERS` that `module` is, or lies under."""
    best = ""
    for layer in LAYERS:
        for group in layer:
            if (module == group or module.startswith(group + ".")) and len(group) > len(best):
                best = group
    assert best, f"finalmile.{module} is in no layer: add its package to LAYERS (and to docs/architecture.md)"
    return best


def _layer(group: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if group in layer)


def _imports(path: Path, module: str) -> Iterator[tuple[int, str]]:
    """(line, imported finalmile module) for every import in the file, lazy and TYPE_CHECKING ones included,
    relative ones resolved; `from package import name` also names `package.name`, which may be a submodule."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("finalmile."):
                    yield node.lineno, alias.name.removeprefix("finalmile.")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            elif node.module and (node.module == "finalmile" or node.module.startswith("finalmile.")):
                target = node.module.removeprefix("finalmile").removeprefix(".")
            else:
                continue
            if not target:  # `from finalmile import X`: the package's public face
                yield node.lineno, "__init__"
                continue
            yield node.lineno, target
            for alias in node.names:  # `from finalmile.serving.codecs import v2`: the submodule too
                yield node.lineno, f"{target}.{alias.name}"


def test_imports_point_down_only() -> None:
    wrong = []
    for module, path in _modules():
        mine = _group(module)
        for line, target in _imports(path, module):
            theirs = _group(target)
            if theirs != mine and _layer(theirs) >= _layer(mine):
                wrong.append(f"{path.relative_to(SRC)}:{line}: {mine} imports {target} ({theirs}, not below it)")
    assert not wrong, "\n".join(wrong)


def test_the_rule_catches_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from finalmile.client import Client\n")
    found = list(_imports(bad, "logs.bad"))
    assert found == [(1, "client"), (1, "client.Client")] and _layer(_group("client")) > _layer(_group("logs.bad"))


def test_no_import_cycle_lazy_imports_included() -> None:
    """No two modules depend on each other, whatever the import's place: at module level, inside a function or
    under TYPE_CHECKING (a lazy import only hides a circle until the day it runs)."""
    graph: dict[str, set[str]] = {}
    names = {m for m, _ in _modules()}
    for module, path in _modules():
        edges = graph.setdefault(module, set())
        for _, target in _imports(path, module):
            while target and target not in names:
                target = target.rpartition(".")[0]
            if target and target != module:
                edges.add(target)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node)


def test_no_module_reads_another_objects_private_attributes() -> None:
    """`obj._thing` only on `self` or `cls`: anything else goes through a public name."""
    found = []
    for _, path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: .{node.attr}")
    assert not found, "\n".join(found)


def test_no_module_is_over_400_lines() -> None:
    long = [f"{p.relative_to(SRC)}: {n}" for _, p in _modules() if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not long, "split these modules: " + ", ".join(long)


def test_every_public_class_says_why_it_exists() -> None:
    missing = []
    for _, path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_") and ast.get_docstring(node) is None:
                missing.append(f"{path.relative_to(SRC)}:{node.lineno}: {node.name}")
    assert not missing, "public classes without a docstring:\n" + "\n".join(missing)


def test_every_user_facing_error_class_lives_in_errors_py() -> None:
    """One hierarchy, one file: a class raised to users is declared in `errors.py`, and raised by its own name."""
    stray = []
    for _, path in _modules():
        if path.name == "errors.py" and path.parent == SRC:
            continue
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(b, ast.Name) and b.id.endswith(("Error", "NotFound", "Failed")) for b in node.bases
            ):
                stray.append(f"{path.relative_to(SRC)}:{node.lineno}: class {node.name}")
            if (
                isinstance(node, ast.Raise)
                and isinstance(node.exc, ast.Call)
                and isinstance(node.exc.func, ast.Name)
                and node.exc.func.id == "FinalmileError"
            ):
                stray.append(f"{path.relative_to(SRC)}:{node.lineno}: raise FinalmileError(...)")
    assert not stray, "\n".join(stray)
