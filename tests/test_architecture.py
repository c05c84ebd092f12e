"""The real import graph (AST of every module, importlib calls included) keeps the layers apart.

    formats   torch-free file contracts     imports nothing of ours
    students  the student networks (torch)  formats
    distill   training                      formats, students
    export    conversion                    formats, students
    runtime   inference on the device       formats; never torch, torchvision, open_clip, timm

No stage imports another; what one writes and the next reads is defined in ``formats``.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = ("formats", "students", "distill", "export", "runtime")
ALLOWED = {
    "formats": {"formats"},
    "students": {"formats", "students"},
    "distill": {"formats", "students", "distill"},
    "export": {"formats", "students", "export"},
    "runtime": {"formats", "runtime"},
}
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
    probe.write_text("import importlib\ndef f(name):\n    return importlib.import_module(name)\n")
    with pytest.raises(AssertionError, match="cannot resolve"):
        imports_of(probe, tmp_path)


def test_runtime_imports_without_torch_or_other_stages() -> None:
    """What actually loads: importing every runtime entry point pulls in no torch and no other stage."""
    code = ("import sys, runtime, runtime.predict, runtime.bench, runtime.serve, runtime.backends.tensorrt\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'torchvision', 'open_clip', 'distill', 'export', 'students'))\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"runtime loaded {out.stdout.strip()}"

