"""The real import graph (AST of every module, importlib calls included) keeps the layers apart.

    formats   torch-free file contracts     imports nothing of ours
    students  the student networks (torch)  formats
    distill   training                      formats, students
    export    conversion                    formats, students
    runtime   inference on the device       formats; never torch, torchvision, open_clip, timm
    pipeline  the orchestrator              every package of ours; nothing of ours imports it

No stage imports another; what one writes and the next reads is defined in ``formats``, and only
``pipeline`` runs one stage after another. No module imports itself back through others (no
import circle), and none is over 300 lines.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = ("formats", "students", "distill", "export", "runtime", "pipeline")
ALLOWED = {
    "formats": {"formats"},
    "students": {"formats", "students"},
    "distill": {"formats", "students", "distill"},
    "export": {"formats", "students", "export"},
    "runtime": {"formats", "runtime"},
    "pipeline": set(OURS),  # the one package above the stages; no other may import it
}
MAX_LINES = 300
TORCH_STACK = {"torch", "torchvision", "open_clip", "timm", "transformers"}
TORCH_FREE = ("formats", "runtime")
IMPORT_CALLS = {"import_module", "__import__"}


def _loop_values(func: ast.AST, name: str) -> list[str] | None:
    """String constants a loop variable ``name`` runs over in ``func`` (``for name in ("a", "b")``)."""
    for node in ast.walk(func):
        if isinstance(node, ast.For) and isinstance(node.target, ast.Name) and node.target.id == name:
            if isinstance(node.iter, (ast.Tuple, ast.List)) and all(
                    isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.iter.elts):
                return [e.value for e in node.iter.elts]
    return None


def _literal_prefix(arg: ast.AST) -> str | None:
    """The package of ``f"pkg.sub.{name}"``: an f-string whose first part is a literal dotted prefix."""
    if not isinstance(arg, ast.JoinedStr) or not arg.values:
        return None
    first = arg.values[0]
    if not (isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value.endswith(".")):
        return None
    package = first.value[:-1]
    return package if all(part.isidentifier() for part in package.split(".")) else None


def _dynamic_imports(tree: ast.Module, path: Path) -> list[str]:
    """Modules named in importlib.import_module / __import__ calls; an unresolvable name fails the test."""
    found: list[str] = []
    scopes = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))] + [tree]
    for scope in scopes:
        for node in ast.walk(scope):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called not in IMPORT_CALLS:
                continue
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append(arg.value)
            elif (prefix := _literal_prefix(arg)) is not None:
                found.append(prefix)
            elif isinstance(arg, ast.Name) and scope is not tree and (values := _loop_values(scope, arg.id)):
                found += values
            elif scope is tree:
                continue  # calls inside functions were resolved in their own scope
            else:
                raise AssertionError(f"{path}:{node.lineno}: {called}() of a name this test "
                                     f"cannot resolve: name the module literally or loop over literals")
    return found


def imports_of(path: Path, root: Path = REPO) -> set[str]:
    """Every module ``path`` imports: import statements (relative ones resolved) and importlib calls."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = path.relative_to(root).with_suffix("").parts[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            names.add(module)
    names.update(_dynamic_imports(tree, path))
    return names


def modules() -> list[Path]:
    return sorted(p for pkg in OURS for p in (REPO / pkg).rglob("*.py"))


def module_name(path: Path, root: Path = REPO) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _run_time_nodes(tree: ast.Module) -> Iterator[ast.AST]:
    """Every node but the bodies of ``if TYPE_CHECKING:`` (imports for annotations, never run)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack += node.orelse
        else:
            stack += ast.iter_child_nodes(node)


def module_edges(path: Path, known: set[str], root: Path = REPO) -> set[str]:
    """The modules of ``known`` that ``path`` imports anywhere in it (an import back inside a function
    is a circle too, only deferred); ``from pkg import sub`` counts as ``pkg.sub`` when that is a module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = path.relative_to(root).with_suffix("").parts[:-1]
    found: set[str] = set(_dynamic_imports(tree, path))
    for node in _run_time_nodes(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            found.update(f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names)
    return (found & known) - {module_name(path, root)}


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle ``[a, b, ..., a]`` per group of modules that import each other (Tarjan's strongly
    connected components of the import graph)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set(stack[stack.index(v):])
            del stack[stack.index(v):]
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_circle(graph, group) for group in groups]


def _circle(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """The shortest way from the group's first module back to it, inside the group."""
    start = min(group)
    paths, queue = {start: [start]}, [start]
    for v in queue:
        for w in sorted(graph[v] & group):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    raise AssertionError(f"{sorted(group)} is not a circle")


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_layers(path: Path) -> None:
    layer = path.relative_to(REPO).parts[0]
    tops = {name.split(".")[0] for name in imports_of(path)}
    crossing = sorted(t for t in tops if t in OURS and t not in ALLOWED[layer])
    assert not crossing, f"{path.relative_to(REPO)} ({layer}) imports {crossing}: only {sorted(ALLOWED[layer])}"
    if layer in TORCH_FREE:
        heavy = sorted(tops & TORCH_STACK)
        assert not heavy, f"{path.relative_to(REPO)} must stay torch-free but imports {heavy}"


def test_the_graph_reader_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The checker itself: static, relative, from-import and importlib imports are all found."""
    probe = tmp_path / "runtime" / "probe.py"
    probe.parent.mkdir()
    probe.write_text("import os\nfrom . import model\nfrom .backends import base\nimport importlib\n"
                     "def f():\n    importlib.import_module('torch')\n"
                     "def g():\n    for n in ('distill.train', 'numpy'):\n        __import__(n)\n")
    assert imports_of(probe, tmp_path) == {"os", "runtime", "runtime.backends", "importlib", "torch",
                                           "distill.train", "numpy"}
    probe.write_text("import importlib\ndef f(name):\n    return importlib.import_module(f'export.backends.{name}')\n")
    assert imports_of(probe, tmp_path) == {"importlib", "export.backends"}  # the literal prefix: the package
    for unresolvable in ("name", "f'{name}.backends'", "f'export.backends_{name}'"):
        probe.write_text(f"import importlib\ndef f(name):\n    return importlib.import_module({unresolvable})\n")
        with pytest.raises(AssertionError, match="cannot resolve"):
            imports_of(probe, tmp_path)


def test_the_circle_finder_names_every_circle(tmp_path: Path) -> None:
    """The checker itself: ``from . import x`` is the module x, type-only imports are no edge, and
    every group of modules that import each other is named as one circle."""
    (tmp_path / "runtime").mkdir()
    probe = tmp_path / "runtime" / "probe.py"
    probe.write_text("from typing import TYPE_CHECKING\nfrom . import model\nfrom runtime import probe\n"
                     "if TYPE_CHECKING:\n    import runtime.serve\ndef f():\n    import runtime.bench\n")
    known = {"runtime", "runtime.probe", "runtime.model", "runtime.serve", "runtime.bench"}
    assert module_edges(probe, known, tmp_path) == {"runtime.model", "runtime.bench"}
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"f"}, "f": {"e"}, "g": {"a"}}
    assert import_circles(graph) == [["a", "b", "c", "a"], ["e", "f", "e"]]
    assert import_circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle() -> None:
    """No module of ours imports itself back through others (at import time or inside a function)."""
    known = {module_name(p): p for p in modules()}
    graph = {name: module_edges(path, set(known)) for name, path in known.items()}
    circles = import_circles(graph)
    assert not circles, "import circles (each module imports the next): " + "; ".join(" -> ".join(c) for c in circles)


def test_no_module_is_over_300_lines() -> None:
    files = [*modules(), *(REPO / "benchmarks").rglob("*.py")]  # the benchmarks' scripts and the results page too
    long = {str(p.relative_to(REPO)): n for p in files if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by what they do): " + ", ".join(
        f"{file} ({n})" for file, n in sorted(long.items()))


def test_runtime_imports_without_torch_or_other_stages() -> None:
    """What actually loads: importing every runtime entry point pulls in no torch and no other stage."""
    code = ("import sys, runtime, runtime.predict, runtime.bench, runtime.serve, runtime.backends.tensorrt\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'torchvision', 'open_clip', 'distill', 'export', 'students', 'pipeline'))\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"runtime loaded {out.stdout.strip()}"

