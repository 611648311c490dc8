"""The pytest plugin of HVFS (installed with it: the ``pytest11`` entry point ``hvfs``).

Fixtures:

- ``hvfs_vm``: a VM per test (``hvfs.VM``), its audit on, stopped after the test. Its
  keyword arguments come from the ``hvfs_vm_options`` fixture, which a conftest may
  override, and which by default merges the ``@pytest.mark.hvfs_vm(...)`` markers
  (module, class, function: the closest wins). In mount and tmpfs strings,
  ``{tmp_path}``, ``{rootdir}`` and ``{testdir}`` (the test file's directory) are
  replaced; relative paths are the test file's directory's.
- ``hvfs_project``: the project of an hvfs.toml (``@pytest.mark.hvfs_project(FILE)``,
  or the ``hvfs_project_file`` fixture; default: hvfs.toml beside the test file), up and
  ready (hvfs.client.project.ready) before the test, down after.

``@pytest.mark.hvfs_fault("op=open,path=/data/*.db,errno=EIO,nth=3", ...)`` adds fault
rules (``hvfs run --fault`` syntax) to the test's VM or project.

When a test that used them fails, its report gets each VM's output (with the commands
run in it) and the tail of its audit (``--hvfs-audit-tail=N`` lines, 20 by default).

Nothing of hvfs is imported until a test asks for one of these fixtures: a test suite
that does not use them pays nothing for the plugin.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from hvfs.client.project import Project
    from hvfs.client.vm import VM

_USED: pytest.StashKey[list[Any]] = pytest.StashKey()
PLACEHOLDERS = ("{tmp_path}", "{rootdir}", "{testdir}")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hvfs")
    group.addoption("--hvfs-audit-tail", type=int, default=20, metavar="N",
                    help="audit events of a failed test's VMs to show (default 20)")  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    for line in (
        "hvfs_vm(image='host', mounts=[...], **options): how the hvfs_vm fixture starts its VM (hvfs.VM's arguments)",
        "hvfs_fault(*rules, seed=None): fault rules (hvfs run --fault syntax) for the test's VM or project",
        "hvfs_project(file='hvfs.toml', timeout=60): the project the hvfs_project fixture brings up",
    ):
        config.addinivalue_line("markers", line)


def _substitute(text: str, request: pytest.FixtureRequest) -> str:
    if "{" not in text:
        return text
    values = {"rootdir": str(request.config.rootpath), "testdir": str(request.path.parent)}
    if "{tmp_path}" in text:
        values["tmp_path"] = str(request.getfixturevalue("tmp_path"))
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


@pytest.fixture
def hvfs_vm_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The keyword arguments of ``hvfs.VM`` for ``hvfs_vm``: the ``hvfs_vm`` markers'
    (the closest wins), with the audit on and paths from the test file's directory."""
    options: dict[str, Any] = {"audit": True, "cwd": str(request.path.parent)}
    for marker in reversed(list(request.node.iter_markers("hvfs_vm"))):  # farthest first
        if marker.args:
            options["image"] = marker.args[0]
        options.update(marker.kwargs)
    for key in ("mounts", "tmpfs"):
        if key in options:
            options[key] = [_substitute(m, request) if isinstance(m, str) else m for m in options[key]]
    return options


def _faults(request: pytest.FixtureRequest) -> tuple[list[str], int | None]:
    rules: list[str] = []
    seed = None
    for marker in request.node.iter_markers("hvfs_fault"):
        rules += [str(rule) for rule in marker.args]
        seed = marker.kwargs.get("seed", seed)
    return rules, seed


def _used(request: pytest.FixtureRequest, target: Any) -> None:
    request.node.stash.setdefault(_USED, []).append(target)


@pytest.fixture
def hvfs_vm(request: pytest.FixtureRequest, hvfs_vm_options: Mapping[str, Any]) -> Iterator[VM]:
    """A VM for this test (``hvfs.VM``), stopped after it."""
    from hvfs.client.vm import VM

    options = dict(hvfs_vm_options)
    rules, seed = _faults(request)
    if rules:
        options["faults"] = [*options.get("faults", ()), *rules]
    if seed is not None:
        options["fault_seed"] = seed
    vm = VM(**options)
    _used(request, vm)
    try:
        yield vm
    finally:
        vm.stop()


@pytest.fixture
def hvfs_project_file(request: pytest.FixtureRequest) -> str:
    """The hvfs.toml of ``hvfs_project``: the ``hvfs_project`` marker's, else the one beside
    the test file."""
    marker = request.node.get_closest_marker("hvfs_project")
    given = str(marker.args[0]) if marker is not None and marker.args else "hvfs.toml"
    return os.path.join(str(request.path.parent), _substitute(given, request))


@pytest.fixture
def hvfs_project(request: pytest.FixtureRequest, hvfs_project_file: str) -> Iterator[Project]:
    """The project of ``hvfs_project_file``, up and ready (``hvfs.Project``), down after."""
    from hvfs.client.project import Project

    marker = request.node.get_closest_marker("hvfs_project")
    timeout = float(marker.kwargs.get("timeout", 60.0)) if marker is not None else 60.0
    rules, seed = _faults(request)
    project = Project(hvfs_project_file, faults=rules, services={"fault_seed": seed} if seed is not None else None)
    _used(request, project)
    try:
        project.up(timeout=timeout)
        yield project
    finally:
        project.down()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    used = item.stash.get(_USED, [])
    if used and report.failed and report.when in ("setup", "call"):
        tail = int(item.config.getoption("hvfs_audit_tail"))
        for target in used:
            report.sections.extend(_sections(target, tail))
    return report


def _sections(target: Any, tail: int) -> list[tuple[str, str]]:
    """What a failed test's report shows of a VM or project: output, then audit tail."""
    from hvfs.client.project import Project

    sections = []
    if isinstance(target, Project):
        for name, vm in target.vms.items():
            sections.append((f"hvfs VM {name} (project {target.name}): logs", _guarded(vm.logs)))
        label, has_audit = f"project {target.name}", bool(target.config.services.get("audit"))
    else:
        sections.append((f"hvfs VM {target.name}: logs", _guarded(target.logs)))
        label, has_audit = f"VM {target.name}", target.audited
    if has_audit and tail > 0:
        text = _guarded(lambda: "\n".join(target.audit.tail(tail)) or "(no events)")
        sections.append((f"hvfs {label}: audit, last {tail} events", text))
    return sections


def _guarded(read: Any) -> str:
    """What ``read()`` returns, or why it could not: a report must never fail itself."""
    try:
        return str(read()) or "(empty)"
    except Exception as e:
        return f"(unavailable: {e})"
