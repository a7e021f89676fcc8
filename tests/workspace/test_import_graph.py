"""qvla_core's modules import each other without circles (issue 17: a house a newcomer can walk).

The graph is read from the source with :mod:`ast`, not by importing: every ``import`` and
``from ... import`` of a ``qvla_core`` module counts wherever it stands -- at module level, inside a
function, or under ``if TYPE_CHECKING:``. A function-level import only delays a circle to run time,
and a type-only import is still a file a reader has to open to understand this one; either way the
two modules cannot be read (or moved) one without the other. ``from pkg import name`` is an edge to
``pkg.name`` when that is a module, else to ``pkg``. A package's ``__init__`` is not implied by
importing one of its modules (that would make every package a circle with its children).
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

CORE = REPO / "src" / "qvla_core" / "qvla_core"


def module_name(path: Path, root: Path) -> str:
    """``root/a/b.py`` -> ``<root name>.a.b``; ``root/a/__init__.py`` -> ``<root name>.a``."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (see the module docstring)."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {name: set() for name in files}
    prefix = root.name
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    origin = ".".join([*base, node.module] if node.module else base)
                else:
                    origin = node.module or ""
                targets = [
                    f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in files else origin
                    for alias in node.names
                ]
            for target in targets:
                # `import a.b.c` binds a.b.c; the closest module that exists is what is read.
                module = target
                while module and module not in files:
                    module = module.rpartition(".")[0]
                if module.startswith(prefix) and module != name:
                    graph[name].add(module)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected component of more than one module (Tarjan), as a path
    ``a -> b -> ... -> a`` through the component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_circle(graph, set(c)) for c in components]


def _circle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself (breadth-first)."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no circle through {start} in {sorted(component)}")


def test_qvla_core_has_no_import_circles() -> None:
    graph = import_graph(CORE)
    assert len(graph) > 50 and graph["qvla_core.model.policy"], "the graph was not read"
    found = cycles(graph)
    assert not found, "import circles in qvla_core:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_checker_finds_a_circle_at_any_level(tmp_path: Path) -> None:
    """A function-level import, a TYPE_CHECKING import and a relative import each close a circle."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("", encoding="utf-8")
    (pkg / "sub" / "__init__.py").write_text("", encoding="utf-8")
    (pkg / "a.py").write_text("from pkg.sub import b\n", encoding="utf-8")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .c import x\n", encoding="utf-8")
    (pkg / "sub" / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\nx = 1\n", encoding="utf-8"
    )
    (pkg / "d.py").write_text("import pkg.a\n", encoding="utf-8")  # into the circle, not part of it
    assert cycles(import_graph(pkg)) == [["pkg.a", "pkg.sub.b", "pkg.sub.c", "pkg.a"]]
    (pkg / "sub" / "c.py").write_text("x = 1\n", encoding="utf-8")
    assert cycles(import_graph(pkg)) == []
