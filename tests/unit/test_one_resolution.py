"""One resolution per mutation (hvfs.manager.trail): a served mutation resolves its path
once, in the handler, and the change set and the audit's paths name what that very
resolution found. A real Manager over a directory of this machine; the kernel's openat2
is counted, not replaced."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hvfs import api
from hvfs.manager.manager import Manager
from hvfs.manager.vm import VmContext

WRITE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC


@pytest.fixture
def served_vm(tmp_path: Path) -> Iterator[tuple[Manager, VmContext, Path]]:
    (tmp_path / "sub").mkdir()
    (tmp_path / "old").write_text("x")
    (tmp_path / "link").symlink_to("sub")
    root = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    manager = Manager()
    vm = VmContext("vm", os.dup(root), root)
    manager.add_vm(vm)
    yield manager, vm, tmp_path
    vm.close()


def _caller() -> api.Caller:
    return api.Caller(vm="vm", pid=os.getpid())


def _serve(manager: Manager, request: api.Request) -> api.Response:
    response = manager.handle_request(request)
    if isinstance(response, api.Fd):
        os.close(response.fd)
    assert isinstance(response, api.Value | api.Fd), response
    return response


@pytest.mark.parametrize(
    ("request_of", "resolutions"),
    [
        (lambda: api.Mkdir(caller=_caller(), path=api.VmPath("/", "/sub/d"), mode=0o755), 1),
        (lambda: api.Mkdir(caller=_caller(), path=api.VmPath("/", "/link/d"), mode=0o755), 2),
        (lambda: api.Open(caller=_caller(), path=api.VmPath("/", "/link/f"), flags=WRITE, mode=0o644), 2),
        (lambda: api.Rename(caller=_caller(), old=api.VmPath("/", "/old"), new=api.VmPath("/", "/link/new")), 2),
        (lambda: api.Chmod(caller=_caller(), target=api.VmPath("/", "/old"), mode=0o600), 1),
    ],
    ids=["mkdir", "mkdir-through-a-symlink", "create", "rename", "chmod"],
)
def test_a_mutation_is_resolved_by_its_handler_only(
    served_vm: tuple[Manager, VmContext, Path], openat2_calls: list[str], request_of: Any, resolutions: int
) -> None:
    """mkdir: the parent; a create: the probe that finds nothing, then the open that
    creates; rename: both parents; chmod: the object. Nothing more for the change set.
    A parent found by its text (``resolve.parent_named``, which spares the change set a
    readlink) with a symlink on the way costs one failed attempt (ELOOP), then the usual
    resolution."""
    manager, _vm, _ = served_vm
    _serve(manager, request_of())
    assert len(openat2_calls) == resolutions, openat2_calls


def test_the_change_set_names_what_the_handler_resolved(served_vm: tuple[Manager, VmContext, Path]) -> None:
    manager, vm, tmp = served_vm
    _serve(manager, api.Mkdir(caller=_caller(), path=api.VmPath("/", "/link/d"), mode=0o755))
    _serve(manager, api.Open(caller=_caller(), path=api.VmPath("/link", "f"), flags=WRITE, mode=0o644))
    _serve(manager, api.Open(caller=_caller(), path=api.VmPath("/", "/old"), flags=WRITE, mode=0o644))
    _serve(manager, api.Rename(caller=_caller(), old=api.VmPath("/", "/old"), new=api.VmPath("/sub", "moved")))
    _serve(manager, api.Chmod(caller=_caller(), target=api.VmPath("/", "/link/moved"), mode=0o600))
    _serve(manager, api.Rmdir(caller=_caller(), path=api.VmPath("/sub", "../sub/d")))
    assert (tmp / "sub" / "moved").read_text() == ""  # truncated by the write-open, then moved
    # Named through procfs: here the directory's host path (a VM's view reads as its own).
    # Through the symlink, as the kernel resolved it: /sub, never /link; d came and went.
    beneath = f"{tmp}/"
    ours = [f"{c.kind} /{c.path.removeprefix(beneath)}" for c in vm.changes.changes() if c.path.startswith(beneath)]
    assert ours == ["D /old", "C /sub", "A /sub/f", "A /sub/moved"]
