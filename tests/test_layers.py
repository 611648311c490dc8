"""The layers do not leak: checked on the source, module by module."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "hvfs"
# Below every layer, as the kernel's constants: the stand-ins for modules imported on first
# use and the loggers made so (a manager's start defers logging), and the patterns compiled
# on first use, importing nothing of hvfs.
BASE = ("hvfs.deferred", "hvfs.patterns")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "hvfs":  # from hvfs import api: the module api
                names.update(f"hvfs.{alias.name}" for alias in node.names)
    return names


def _modules(under: str) -> list[Path]:
    return sorted((PACKAGE / under).rglob("*.py"))


def test_the_manager_never_imports_the_driver_or_the_sandbox() -> None:
    for module in _modules("manager"):
        bad = {n for n in _imports(module) if n.startswith(("hvfs.intercept", "hvfs.sandbox"))}
        assert not bad, (module, bad)


def test_the_manager_never_imports_a_service() -> None:
    """The manager owns the hook contracts (hvfs.api.hooks); services implement them and
    are assembled by the front ends (hvfs.hypervisor), never known by the manager."""
    for module in _modules("manager"):
        bad = {n for n in _imports(module) if n.startswith(("hvfs.services", "hvfs.hypervisor"))}
        assert not bad, (module, bad)


def test_the_api_imports_nothing_above_it() -> None:
    """Requests, responses, events and hooks: what the driver, the manager and the
    services share, so it depends on none of them (the kernel's constants aside)."""
    modules = _modules("api")
    assert modules
    for module in modules:
        hvfs = {n for n in _imports(module) if n == "hvfs" or n.startswith("hvfs.")}
        # hvfs._sys.abi is the kernel's constants, defined once, and imports nothing;
        # hvfs._native, the compiled counterparts of Python code (the audit's writer), neither.
        allowed = ("hvfs", "hvfs._sys.abi", "hvfs._native", *BASE)
        bad = {n for n in hvfs if n not in allowed and not n.startswith("hvfs.api")}
        assert not bad, (module, bad)


def test_the_compiled_parts_import_nothing_of_hvfs() -> None:
    """hvfs._native sits below every layer (the api's audit writer, the driver's hot path):
    it may import no other part of hvfs but the base (BASE)."""
    for module in _modules("_native"):
        hvfs = {n for n in _imports(module) if (n == "hvfs" or n.startswith("hvfs.")) and n not in BASE}
        assert not hvfs, (module, hvfs)


def test_the_base_imports_nothing_of_hvfs() -> None:
    for name in BASE:
        module = PACKAGE / (name.removeprefix("hvfs.").replace(".", "/") + ".py")
        hvfs = {n for n in _imports(module) if n == "hvfs" or n.startswith("hvfs.")}
        assert not hvfs, (module, hvfs)


def test_the_driver_never_imports_the_manager() -> None:
    for module in _modules("intercept"):
        bad = {n for n in _imports(module) if n.startswith(("hvfs.manager", "hvfs.sandbox"))}
        assert not bad, (module, bad)


# What every source may import: the contract and the schema of options. The registry
# alone imports every kind; no source imports it.
SOURCE_CONTRACT = {"hvfs.manager.sources.base", "hvfs.manager.sources.schema"}


def test_sources_never_import_each_other() -> None:
    registry = PACKAGE / "manager" / "sources" / "registry.py"
    modules = [m for m in _modules("manager/sources") if m != registry and m.name != "__init__.py"]
    assert len(modules) >= 7, modules  # the contract, the schema and the kinds: host, memory, overlay, image, ...
    for module in modules:
        imported = _imports(module)
        others = {n for n in imported if n.startswith("hvfs.manager.sources") and n not in SOURCE_CONTRACT}
        assert not others, (module, others)


def test_every_source_module_is_a_registered_kind() -> None:
    """Adding a kind is one module and one line of the registry: a module that is not in
    the registry is a kind no front end can reach."""
    from hvfs.manager.sources import registry

    registered = {kind.make.__module__ for kind in registry.KINDS.values()}
    modules = {
        f"hvfs.manager.sources.{m.stem}"
        for m in _modules("manager/sources")
        if m.stem not in ("__init__", "registry") and f"hvfs.manager.sources.{m.stem}" not in SOURCE_CONTRACT
    }
    assert modules == registered


def test_only_the_sys_package_uses_ctypes() -> None:
    for module in PACKAGE.rglob("*.py"):
        if "_sys" in module.parts:
            continue
        assert "ctypes" not in _imports(module), module


def test_modules_stay_small() -> None:
    for module in PACKAGE.rglob("*.py"):
        assert len(module.read_text().splitlines()) <= 500, module


def test_services_never_import_their_callers() -> None:
    """Services see requests, VM names, paths and fds: they never reach into the manager,
    the driver, the sandbox or the command line, which call them."""
    callers = ("hvfs.manager", "hvfs.intercept", "hvfs.sandbox", "hvfs.cli", "hvfs.run", "hvfs._sys",
               "hvfs.hypervisor", "hvfs.project", "hvfs.runtime", "hvfs.spec")  # fmt: skip
    services = _modules("services")
    assert services
    for module in services:
        leaks = {n for n in _imports(module) if n.startswith(callers)}
        assert not leaks, (module, leaks)


def test_the_api_depends_on_no_other_part() -> None:
    """Drivers and managers meet in the API: it imports neither, nor sources or services."""
    for module in _modules("api"):
        below = ("hvfs.api", "hvfs._sys", "hvfs._native", *BASE)
        bad = {n for n in _imports(module) if n.startswith("hvfs.") and not n.startswith(below)}
        assert not bad, (module, bad)


def test_only_tests_use_the_testing_fakes() -> None:
    for module in PACKAGE.rglob("*.py"):
        if "testing" in module.relative_to(PACKAGE).parts:
            continue
        assert not {n for n in _imports(module) if n.startswith("hvfs.testing")}, module


def test_the_driver_and_the_manager_load_no_front_end() -> None:
    """What serves requests loads no option parser, no state directory, no CLI: a driver
    or manager in another process (the Docker runtime's) must not need them."""
    import subprocess
    import sys

    probe = (
        "import sys, hvfs.intercept.driver, hvfs.intercept.backend, hvfs.manager.manager, hvfs.api.socket_transport\n"
        "print(sorted(m for m in sys.modules if m in ('argparse', 'hvfs.spec', 'hvfs.state', 'hvfs.cli')"
        " or m.startswith(('hvfs.hypervisor', 'hvfs.project', 'hvfs.services'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    assert loaded.stdout.strip() == "[]", loaded.stdout
