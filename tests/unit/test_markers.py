"""The tiers stay honest: every test module under tests/integration and tests/e2e says which
shared host resource it needs (`docker`, `bpf` or `nftables`), so a shared machine can skip
each with -m. Read from the source with ast (nothing is imported, nothing runs)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
RESOURCES = {"docker", "bpf", "nftables"}


def marks_in(path: Path) -> set[str]:
    """Every `pytest.mark.<name>` the module uses: pytestmark, decorators, pytest.param marks."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and node.value.attr == "mark" and isinstance(node.value.value, ast.Name)
                and node.value.value.id == "pytest"):
            found.add(node.attr)
    return found


MODULES = sorted(p for tier in ("integration", "e2e") for p in (TESTS / tier).glob("test_*.py"))


def test_there_are_integration_and_e2e_modules() -> None:
    assert {p.parent.name for p in MODULES} == {"integration", "e2e"}


@pytest.mark.parametrize("path", MODULES, ids=[f"{p.parent.name}/{p.name}" for p in MODULES])
def test_every_integration_and_e2e_module_carries_a_resource_marker(path: Path) -> None:
    assert marks_in(path) & RESOURCES, (
        f"{path.relative_to(TESTS)} has none of the markers {sorted(RESOURCES)}: mark what it touches, "
        "or move it to tests/unit if it touches none")


def test_the_resource_markers_are_declared() -> None:
    pyproject = (TESTS.parent / "pyproject.toml").read_text()
    for name in RESOURCES:
        assert f'"{name}: ' in pyproject
