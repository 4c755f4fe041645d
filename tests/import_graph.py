"""The import graph of ``bertfast/`` and ``kernels/`` (read with ``ast``, nothing imported): its circles, the
imports that run from a lower layer to a higher one, and the places that define a task.

    python tests/import_graph.py

Layers, lowest first (DESIGN.md): kernels <- core <- heads <- tasks <- backends <- apps <- facade. An import may
point down or stay within its layer; circles are refused in any layer. Module-level imports (run at import) and
function-level ones (run at call) are counted apart, and both must point down. Every module is placed in
``LAYERS``: a new module gets an error that names it until it is.
"""
from __future__ import annotations

import ast
import os
import sys
from dataclasses import dataclass
from typing import Iterable, Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = {"bertfast": "bertfast", "bertfast_kernels": "kernels"}  # import name -> folder under ROOT
LAYER_ORDER = ("kernels", "core", "heads", "tasks", "backends", "apps", "facade")
# module name or package prefix (a name ending in ".") -> its layer; the longest match wins
LAYERS: dict[str, str] = {
    "bertfast_kernels.": "kernels",
    **{f"bertfast.{name}": "core" for name in (
        "config", "ops", "padding", "device", "inputs", "outputs", "atomic", "atomic_recovery", "hub", "checkpoint", "adapters",
        "pretrained", "modeling", "tokenizer", "tokenizer_base", "fast_tokenizer", "auto_tokenizer", "tokenizer_files",
        "encoding", "st_config", "version")},
    "bertfast.models": "core",
    "bertfast.models.": "core",
    "bertfast.heads": "heads",
    "bertfast.heads.": "heads",
    "bertfast.tasks": "tasks",
    # the CPU backend is how a loaded model's linear layers run (from_pretrained(quantize=) calls its one entry,
    # bertfast.cpu.prepare) and it needs only ops and atomic: it sits with the core it serves, not above the heads
    "bertfast.cpu": "core",
    "bertfast.cpu.": "core",
    "bertfast.graphs": "backends",
    "bertfast.export": "backends",
    "bertfast.export.": "backends",
    **{f"bertfast.{name}": "apps" for name in ("pipelines", "training", "serving", "bench", "cli", "__main__")},
    **{f"bertfast.{name}.": "apps" for name in ("pipelines", "training", "serving", "bench", "cli")},
    "bertfast": "facade",  # the package itself: bertfast.X for the user, never imported from inside
}
# the names a task goes by; a module-level table holding two or more of them is a place that defines tasks
TASK_NAMES = frozenset({
    "fill-mask", "next-sentence", "feature-extraction", "sentence-embedding", "sparse-embedding",
    "question-answering", "text-classification", "token-classification", "rerank", "multiple-choice",
    "sentiment-analysis", "ner", "nsp", "embed", "classify", "qa"})


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (a package's __init__ for a name it defines)
    line: int
    module_level: bool  # run at import (False: inside a function)


def module_files() -> dict[str, str]:
    """Every module of the two source folders: dotted name -> file path."""
    found = {}
    for package, folder in SOURCES.items():
        base = os.path.join(ROOT, folder)
        for directory, _, files in os.walk(base):
            for file in files:
                if file.endswith(".py"):
                    parts = os.path.relpath(os.path.join(directory, file[:-3]), base).split(os.sep)
                    if parts[-1] == "__init__":
                        parts = parts[:-1]
                    found[".".join([package, *parts]) if parts != ["."] else package] = os.path.join(directory, file)
    return found


def layer_of(module: str) -> str:
    """The layer of a module, or a ValueError that says where to place it."""
    matches = [key for key in LAYERS if module == key or (key.endswith(".") and module.startswith(key))]
    if not matches:
        raise ValueError(f"module {module} has no layer: add it to LAYERS in tests/import_graph.py "
                         f"(one of {', '.join(LAYER_ORDER)})")
    return LAYERS[max(matches, key=len)]


def _resolve(name: str, modules: dict[str, str]) -> str | None:
    """The module an imported dotted name lands in (its longest known prefix), None outside our packages."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: str, modules: dict[str, str]) -> Iterator[Import]:
    """The imports of one file that land in our packages, absolute and relative."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    is_package = os.path.basename(path) == "__init__.py"
    function_lines = {n.lineno for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                      for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name, modules)
            if target is not None and target != module:
                yield Import(module, target, node.lineno, node.lineno not in function_lines)


def import_graph() -> list[Import]:
    """Every import between our modules, once per (importer, imported, line)."""
    modules = module_files()
    found = {imp: None for module, path in sorted(modules.items()) for imp in imports_of(module, path, modules)}
    return list(found)


def upward(imports: Iterable[Import]) -> list[Import]:
    """The imports from a lower layer to a higher one."""
    return [imp for imp in imports if LAYER_ORDER.index(layer_of(imp.target)) > LAYER_ORDER.index(layer_of(imp.source))]


def circles(imports: Iterable[Import]) -> list[list[str]]:
    """The import circles: each strongly connected group of two or more modules (Tarjan), sorted."""
    edges: dict[str, set[str]] = {}
    for imp in imports:
        edges.setdefault(imp.source, set()).add(imp.target)
        edges.setdefault(imp.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges[node]):
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
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def task_definition_places() -> list[str]:
    """``module:NAME`` of each module-level table that holds two or more task names (a registry of tasks)."""
    places = []
    for module, path in sorted(module_files().items()):
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in tree.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                names = {n.value for n in ast.walk(node.value) if isinstance(n, ast.Constant) and n.value in TASK_NAMES}
                if len(names) >= 2:
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    places += [f"{module}:{t.id}" for t in targets if isinstance(t, ast.Name)]
    return places


def _where(imp: Import) -> str:
    kind = "module-level" if imp.module_level else "function-level"
    return (f"{imp.source} ({layer_of(imp.source)}) -> {imp.target} ({layer_of(imp.target)}), "
            f"line {imp.line}, {kind}")


def main() -> int:
    graph = import_graph()
    for module in module_files():
        layer_of(module)  # every module placed, or the error naming it
    at_import = [imp for imp in graph if imp.module_level]
    loops, loops_at_import, up, places = circles(graph), circles(at_import), upward(graph), task_definition_places()
    print(f"import circles: {len(loops)} ({len(loops_at_import)} of module-level imports alone)")
    for group in loops:
        print("  " + " <-> ".join(group))
    print(f"upward imports: {len(up)} ({sum(imp.module_level for imp in up)} module-level, "
          f"{sum(not imp.module_level for imp in up)} function-level)")
    for imp in up:
        print("  " + _where(imp))
    print(f"places that define a task: {len(places)}")
    for place in places:
        print("  " + place)
    return 0


if __name__ == "__main__":
    sys.exit(main())
