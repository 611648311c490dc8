"""Services see requests, VM names, paths and fds: they never reach into the manager,
the driver, the sandbox or the command line, which call them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

SERVICES = sorted((REPO / "hvfs" / "services").rglob("*.py"))
FORBIDDEN = ("hvfs.manager", "hvfs.intercept", "hvfs.sandbox", "hvfs.cli", "hvfs.run", "hvfs._sys")


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: str(p.relative_to(REPO)))
def test_a_service_module_imports_no_caller(path: Path) -> None:
    assert SERVICES, "no service modules found"
    leaks = {name for name in imported(path) if name.startswith(FORBIDDEN)}
    assert leaks == set()
    assert "ctypes" not in imported(path)  # only hvfs/_sys may use it
