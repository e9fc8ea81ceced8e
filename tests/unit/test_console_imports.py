"""What the console may import: of the enforcer, only the wire protocol and the data model.

The console and the CLI run on machines (and in users' shells) where the enforcer's heavy
dependencies need not be installed, and `stockade status` must start fast; so importing
any console module must load neither bcc, httpx, aiosqlite nor the Docker SDK, nor any
enforcer module beyond `enforcer.protocol` and `enforcer.models`. Checked in a fresh
interpreter, since this test process has imported half the project already.

Also: no import cycle among the console's own modules (one that works today by the luck
of import order breaks the day someone imports the modules in another order).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONSOLE = REPO / "console"

HEAVY = ("bcc", "httpx", "aiosqlite", "docker")
ENFORCER_ALLOWED = {"enforcer", "enforcer.protocol", "enforcer.models"}

# Imports the app, the CLI and then every module of the package, and reports what got loaded.
PROBE = """
import importlib, json, pkgutil, sys
import console, console.app, console.cli
names = sorted(m.name for m in pkgutil.walk_packages(console.__path__, "console."))
for name in names:
    importlib.import_module(name)
print(json.dumps({"console": names, "loaded": sorted(sys.modules), "file": console.__file__}))
"""


def test_console_imports_only_the_protocol_and_the_data_model_of_the_enforcer() -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # This checkout's console, and all of it (a walk that found nothing would prove nothing).
    assert Path(report["file"]).resolve().parent == CONSOLE
    assert {"console.app", "console.cli", "console.session", "console.screens.main"} <= set(report["console"])
    loaded = report["loaded"]
    heavy = sorted({m.split(".")[0] for m in loaded} & set(HEAVY))
    assert not heavy, f"importing the console loads {', '.join(heavy)}"
    enforcer = sorted(m for m in loaded if m.split(".")[0] == "enforcer" and m not in ENFORCER_ALLOWED)
    assert not enforcer, (f"the console imports {', '.join(enforcer)}; it may import only "
                          f"{', '.join(sorted(ENFORCER_ALLOWED))} (move what it needs there)")


# -- no cycles among console modules ---------------------------------------------------------
def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_time_imports(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is imported: not those in functions,
    nor those under `if TYPE_CHECKING:` (class bodies and try/if/with blocks do run)."""
    out: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            out += import_time_imports(node.orelse)
        else:
            for name in ("body", "orelse", "finalbody"):
                out += import_time_imports(getattr(node, name, None) or [])
            for handler in getattr(node, "handlers", None) or []:
                out += import_time_imports(handler.body)
            for case in getattr(node, "cases", None) or []:
                out += import_time_imports(case.body)
    return out


def console_graph() -> dict[str, set[str]]:
    """console module -> the console modules it imports at import time."""
    files = {module_name(p): p for p in sorted(CONSOLE.rglob("*.py"))}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in import_time_imports(ast.parse(path.read_text(), str(path)).body):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import mod` imports the module pkg.mod; `from mod import name` needs mod.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            graph[name].update(t for t in targets if t in files and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path that ends where it starts, or None."""
    done: set[str] = set()
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> list[str] | None:
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
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


def test_console_modules_import_each_other_without_a_cycle() -> None:
    graph = console_graph()
    assert graph["console.app"] and graph["console.screens.base"], "the graph found no imports: the parser is broken"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle among console modules: " + " -> ".join(cycle or [])
