"""The package's layering, read from the source: no import cycles between modules (counting imports inside
functions too), and nothing outside ``cli/`` imports the command line."""

from __future__ import annotations

import ast
from pathlib import Path

import atoken_diffusers

PACKAGE = Path(atoken_diffusers.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """{module: package modules it imports}; ``from X import name`` counts X, or X.name when that is a module."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        base = name.split(".") if is_pkg else name.split(".")[:-1]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                root = base[: len(base) - node.level + 1] if node.level else []
                mod = ".".join(root + ([node.module] if node.module else []))
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
            else:
                continue
            edges.update(t for t in targets if t in modules and t != name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle between non-package modules (package ``__init__`` re-exports are facades), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if graph.get(nxt) is None or (PACKAGE.parent / nxt.replace(".", "/") / "__init__.py").exists():
                continue
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles():
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_nothing_below_the_cli_imports_it():
    offenders = {m: sorted(t for t in deps if t.startswith("atoken_diffusers.cli"))
                 for m, deps in import_graph().items() if not m.startswith("atoken_diffusers.cli")}
    assert not {m: d for m, d in offenders.items() if d and m != "atoken_diffusers.__main__"}
