"""A served write-open through the manager's dispatch, in process over a real directory:
what the change set notes (``changes.record``: a served file by its known name, else by
the answer's readlink) and what the VM's statistics count."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvfs import api
from hvfs.manager.manager import Manager
from hvfs.manager.vm import VmContext


def root_caller(vm: str) -> api.Caller:
    """The VM's root as the manager itself: no credentials to switch."""
    mask = os.umask(0o022)
    os.umask(mask)
    ids = {"uid": os.geteuid(), "gid": os.getegid(), "real_uid": os.getuid(), "real_gid": os.getgid()}
    creds = api.Credentials(groups=tuple(os.getgroups()), umask=mask, capabilities=(1 << 41) - 1, **ids)
    return api.Caller(vm=vm, pid=os.getpid(), creds=creds)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Manager, VmContext]]:
    (tmp_path / "file").write_text("content\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "link").symlink_to("../file")
    root = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    vm = VmContext("vm", root, os.dup(root))
    vm.view_nodev = True  # as a view made by hvfs.manager.view: the one-call write-open serves
    manager = Manager()
    manager.add_vm(vm)
    yield manager, vm
    vm.close()


def _open(manager: Manager, name: str, flags: int) -> api.Response:
    request = api.Open(caller=root_caller("vm"), path=api.VmPath("/", name), flags=flags, mode=0o644)
    response = manager.handle_request(request)
    if isinstance(response, api.Fd):
        os.close(response.fd)
    return response


def test_served_opens_are_noted_by_the_names_the_kernel_resolved(
    served: tuple[Manager, VmContext], tmp_path: Path
) -> None:
    manager, vm = served
    assert isinstance(_open(manager, "/file", os.O_WRONLY), api.Fd)  # by its text: no symlink on the way
    assert isinstance(_open(manager, "/new", os.O_WRONLY | os.O_CREAT), api.Fd)
    assert isinstance(_open(manager, "/dir/link", os.O_WRONLY | os.O_APPEND), api.Fd)  # through a symlink
    assert isinstance(_open(manager, "/dir/made", os.O_RDWR | os.O_CREAT | os.O_EXCL), api.Fd)
    assert isinstance(_open(manager, "/missing", os.O_WRONLY), api.Errno)
    kinds = {change.path: change.kind for change in vm.changes.changes()}
    # Through the symlink the name is the answer's readlink: the VM path in a detached view,
    # the directory's host path here.
    assert kinds == {"/file": "C", "/new": "A", "/dir": "C", "/dir/made": "A", str(tmp_path / "file"): "C"}


def test_the_statistics_count_each_outcome_by_operation(served: tuple[Manager, VmContext]) -> None:
    manager, vm = served
    for _ in range(3):
        _open(manager, "/file", os.O_WRONLY)
    _open(manager, "/missing", os.O_WRONLY)
    _open(manager, "/dir/made", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    _open(manager, "/dir/made", os.O_WRONLY | os.O_CREAT | os.O_EXCL)  # EEXIST
    assert vm.statistics().requests == {"open": {"served": 4, "failed": 2}}
