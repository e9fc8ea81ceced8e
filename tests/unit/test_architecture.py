"""The architecture as the imports tell it, checked from the source (ast):

- no import cycle among the modules of enforcer/ or of console/, counting the imports
  inside functions too (a lazy import that only exists to dodge a cycle is still one);
- one composition root: no module of enforcer/ but the entry point imports the daemon,
  and no function takes the daemon (a parameter named `enforcer`) to reach through it;
- the README's folder table names exactly the packages there are.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def run_time_imports(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: at module level and inside functions, but not
    those under `if TYPE_CHECKING:` (annotations only)."""
    out: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(node)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            out += run_time_imports(node.orelse)
        else:
            for name in ("body", "orelse", "finalbody"):
                value = getattr(node, name, None)
                if isinstance(value, list):
                    out += run_time_imports(value)
            for handler in getattr(node, "handlers", None) or []:
                out += run_time_imports(handler.body)
            for case in getattr(node, "cases", None) or []:
                out += run_time_imports(case.body)
    return out


def import_graph(package: str) -> dict[str, set[str]]:
    """module -> the modules of the same package it imports."""
    root = REPO / package
    files = {module_name(p): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in run_time_imports(ast.parse(path.read_text(), str(path)).body):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = pkg.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import mod` imports the module pkg.mod; `from mod import name` needs mod.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            graph[name].update(t for t in targets if t in files and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path that ends where it starts, or None. A package's __init__
    importing its own modules is not a cycle by itself (parent -> child is how packages
    load); an edge child -> its own package __init__ is left out for that reason."""
    done: set[str] = set()
    stack: list[str] = []
    on_stack: set[str] = set()

    def edges(node: str) -> list[str]:
        return sorted(t for t in graph[node] if not node.startswith(t + "."))

    def visit(node: str) -> list[str] | None:
        stack.append(node)
        on_stack.add(node)
        for nxt in edges(node):
            if nxt in on_stack:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in done:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        on_stack.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            found = visit(start)
            if found:
                return found
    return None


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_graph_sees_imports_inside_functions() -> None:
    graph = import_graph("enforcer")
    assert "enforcer.sensors.hub" in graph["enforcer.daemon"], "the daemon imports the hub inside __init__"


def test_enforcer_modules_import_each_other_without_a_cycle() -> None:
    cycle = find_cycle(import_graph("enforcer"))
    assert cycle is None, "import cycle in enforcer/: " + " -> ".join(cycle or [])


def test_console_modules_import_each_other_without_a_cycle() -> None:
    graph = import_graph("console")
    assert graph["console.app"] and graph["console.screens.base"], "the graph found no imports: the parser is broken"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in console/: " + " -> ".join(cycle or [])


def test_only_the_entry_point_imports_the_composition_root() -> None:
    graph = import_graph("enforcer")
    importers = sorted(m for m, targets in graph.items() if "enforcer.daemon" in targets)
    assert importers == ["enforcer.main"]


def test_no_function_takes_the_daemon() -> None:
    offenders = []
    for path in sorted((REPO / "enforcer").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names = [a.arg for a in node.args.args + node.args.kwonlyargs]
                if "enforcer" in names or "daemon" in names:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    assert not offenders, "functions that take the daemon: " + ", ".join(offenders)


def test_the_readme_folder_table_matches_the_packages() -> None:
    text = (REPO / "README.md").read_text()
    listed = set(re.findall(r"^\| `(enforcer/[a-z_]+)/` \|", text, re.M))
    packages = {str(p.parent.relative_to(REPO)) for p in (REPO / "enforcer").glob("*/__init__.py")}
    assert listed == packages, f"README lists {sorted(listed - packages)} that do not exist, " \
                               f"misses {sorted(packages - listed)}"
