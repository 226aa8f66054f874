"""The package's structure: layers as folders, no upward import, no circle, no private import across modules.

Read from the source (``ast``), not from ``sys.modules``, so a lazy import inside a function counts as
much as one at the top of a file.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "matmul"
#: Layer of each top-level folder, lowest first; a module may import only its own layer or lower ones.
LAYERS = {"core": 1, "schedules": 2, "measure": 3, "e2e": 4, "report": 4, "cli": 5}
#: Modules of the package root: the public API and the entry point sit above everything.
TOP = 6
#: Longest module, in lines (issue 13: "each file under about 450 lines").
MAX_LINES = 460


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], TOP) if len(parts) > 1 else TOP


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> list[str]:
    """Absolute names of the ``matmul`` modules one ``from ... import ...`` statement reaches."""
    if node.level:
        base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if not target.startswith("matmul"):
        return []
    known = _modules()
    out = [target]
    out += [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
    return out


def imports() -> dict[str, set[str]]:
    """module -> the package modules it imports (anywhere in the file)."""
    known = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                deps.update(d for d in _resolve(module, path, node) if d in known and d != module)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in known and a.name != module)
        graph[module] = deps
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _is_package_of(a: str, b: str) -> bool:
    """``a`` is a package ``__init__`` that contains ``b`` (it may import its own sub-modules)."""
    return b.startswith(a + ".")


def test_every_module_sits_in_a_layer_folder():
    loose = [m for m in _modules() if m.count(".") == 1 and m.split(".")[1] not in LAYERS
             and m not in ("matmul.__main__",)]
    assert loose == [], f"modules outside the layer folders {sorted(LAYERS)}: {loose}"


def test_no_module_imports_a_higher_layer():
    upward = [f"{m} (layer {_layer(m)}) -> {d} (layer {_layer(d)})"
              for m, deps in imports().items() for d in sorted(deps)
              if _layer(d) > _layer(m) and not _is_package_of(m, d)]
    assert upward == []


def test_there_is_no_import_circle():
    graph = {m: {d for d in deps if not _is_package_of(d, m)} for m, deps in imports().items()}
    assert circles(graph) == []


def test_the_checks_catch_an_upward_import_and_a_circle():
    graph = {"matmul.core.a": {"matmul.report.b"}, "matmul.report.b": {"matmul.core.a"}}
    assert circles(graph) == [["matmul.core.a", "matmul.report.b"]]
    assert _layer("matmul.report.b") > _layer("matmul.core.a")


def test_no_module_imports_another_modules_private_name():
    private = []
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("matmul")):
                private += [f"{module}: {a.name}" for a in node.names if a.name.startswith("_")
                            and not a.name.startswith("__")]
    assert private == []


def test_only_the_cli_prints():
    printing = []
    for module, path in _modules().items():
        if _layer(module) in (LAYERS["cli"], TOP) or path.name == "_numpy_alone.py":  # a child process' stdout
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Name) and node.id == "print":
                printing.append(f"{module}:{node.lineno}")
    assert printing == []


@pytest.mark.parametrize("module", sorted(_modules()))
def test_module_is_short_enough_to_read(module):
    lines = len(_modules()[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines; split it"


TOY = '''
"""A toy schedule family: one module, registered on import, as a new family would be."""
from matmul.core.registry import Variant, register
from matmul.schedules.manual import Recipe

_RECIPE = Recipe(j_split="simd", order=("i", "j0", "k", "j1"), parallel="i", vectorize="j1")


def _available(ctx):
    return "the toy family serves M = 16 only" if ctx.shape.M != 16 else None


register(Variant("toy", "toy", _RECIPE.apply, lambda facts: "a toy family for the plug-in test",
                 decisions=lambda ctx: {**_RECIPE.decisions(ctx), "toy_note": "hello"}, available=_available,
                 info_keys=("toy_note",)))
'''


def test_a_new_family_is_one_module_and_reaches_variants_the_bench_grid_and_the_report(tmp_path):
    import json
    import os
    import subprocess
    import sys

    (tmp_path / "toyfamily.py").write_text(TOY)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(PACKAGE.parent)])}
    root = PACKAGE.parent

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=root, env=env, capture_output=True, text=True,
                              timeout=600)

    listing = run("-c", "import toyfamily, sys; from matmul.cli import main; sys.exit(main(['variants']))")
    assert listing.returncode == 0 and any(line.split()[:2] == ["toy", "toy"] for line in listing.stdout.splitlines())
    out = tmp_path / "run.json"
    bench = run("-m", "pytest", "bench/", "--e2e-models", "none", "-p", "toyfamily", "-q", "-rs", "-p", "no:cacheprovider",
                "--variants", "toy", "--kernels", "qkv", "--m-values", "16,32", "--rounds", "2",
                f"--benchmark-json={out}")
    assert bench.returncode == 0, bench.stdout[-3000:] + bench.stderr[-2000:]
    assert "1 passed, 1 skipped" in bench.stdout and "the toy family serves M = 16 only" in bench.stdout
    (case,) = json.loads(out.read_text())["benchmarks"]
    assert case["name"].endswith("[qkv-M16-toy-NN]") and case["extra_info"]["family"] == "toy"
    assert case["extra_info"]["toy_note"] == "hello"
    report = run("-m", "matmul", "report", str(out))  # a process where the toy family is not even registered
    assert report.returncode == 0, report.stderr
    assert any(" toy " in f" {line} " and "qkv" in line for line in report.stdout.splitlines())
