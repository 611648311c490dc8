"""An audited stat names what its handler resolved (hvfs.manager.trail.located): its last
component found without following it, its directory as the kernel resolved it; the same
paths that resolving again after the answer gave (hvfs.manager.served), for one
resolution fewer. A real Manager over a detached copy of a directory's mount (as a VM's
views are), the kernel's openat2 counted, not replaced."""

from __future__ import annotations

import errno
import itertools
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hvfs import api
from hvfs._sys.abi import AT_SYMLINK_NOFOLLOW
from hvfs._sys.mount import clone_tree
from hvfs.api.events import Event
from hvfs.api.hooks import EventBus
from hvfs.manager import served, trail
from hvfs.manager.manager import Manager
from hvfs.manager.served import served_paths
from hvfs.manager.vm import VmContext
from tests.conftest import require


@pytest.fixture
def audited(tmp_path: Path) -> Iterator[tuple[Manager, VmContext, list[Event]]]:
    require(os.geteuid() == 0, "a detached copy of a mount (open_tree) needs root")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "file").write_text("x")
    (tmp_path / "sub" / "link").symlink_to("file")
    (tmp_path / "dirlink").symlink_to("sub")
    (tmp_path / "sub" / "dangling").symlink_to("nowhere")
    root = clone_tree(str(tmp_path), recursive=False)
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe(events.extend, name="test", batch=True)
    manager = Manager()
    vm = VmContext("vm", os.dup(root), root, bus=bus)
    manager.add_vm(vm)
    yield manager, vm, events
    bus.close()
    vm.close()


def _who() -> api.Caller:
    return api.Caller(vm="vm", pid=os.getpid())


def _stat(path: str, *, base: str = "/", follow: bool = True) -> api.Stat:
    return api.Stat(caller=_who(), path=api.VmPath(base, path), follow=follow)


def _count_fd_names(monkeypatch: pytest.MonkeyPatch, module: Any) -> list[int]:
    """The fds whose names ``module`` reads back through procfs (its ``fd_name``), from now on."""
    calls: list[int] = []
    real = module.fd_name

    def counted(fd: int) -> str:
        calls.append(fd)
        return real(fd)  # type: ignore[no-any-return]

    monkeypatch.setattr(module, "fd_name", counted)
    return calls


@pytest.fixture
def readlinks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The fds whose names the trail reads back through procfs."""
    return _count_fd_names(monkeypatch, trail)


def _statx(path: str) -> api.Statx:
    return api.Statx(caller=_who(), path=api.VmPath("/", path), flags=AT_SYMLINK_NOFOLLOW, mask=1)


# A plain absolute path (no symlink, ".", ".." on the way) is its own name: found once with
# RESOLVE_NO_SYMLINKS, nothing read back. Any other: found as before, its name read back
# (a symlink on the way: after the plain attempt's ELOOP, one openat2 more; a stat that
# follows tries first with no symlink at all, the last component included, then without
# following it: two attempts, where the usual stat has no symlink and needs no fstat).
@pytest.mark.parametrize(
    ("request_of", "named", "kind", "resolutions", "names_read"),
    [
        (lambda: _stat("/sub/file"), "/sub/file", stat.S_IFREG, 1, 0),
        (lambda: _stat("/sub/file/", follow=False), "/sub/file", None, 2, 0),  # ENOTDIR: the kernel's; named after
        (lambda: _stat("/sub/link", follow=False), "/sub/link", stat.S_IFLNK, 1, 0),
        (lambda: _stat("/sub/link"), "/sub/link", stat.S_IFREG, 3, 0),  # the link is named, its target stat'ed
        (lambda: _stat("/dirlink/file"), "/sub/file", stat.S_IFREG, 3, 1),  # the directory as the kernel found it
        (lambda: _stat("../sub/./file", base="/sub"), "/sub/file", stat.S_IFREG, 3, 1),  # base, beneath it, in root
        (lambda: _stat("file", base="/sub"), "/sub/file", stat.S_IFREG, 2, 0),  # plain: the base, the name
        (lambda: _stat("file", base="/dirlink"), "/sub/file", stat.S_IFREG, 4, 1),  # the base's symlink: as usual
        (lambda: _stat("/dirlink/../sub"), "/sub", stat.S_IFDIR, 1, 1),
        (lambda: _stat("/sub//file"), "/sub/file", stat.S_IFREG, 1, 1),
        (lambda: _statx("/dirlink/link"), "/sub/link", None, 2, 1),
    ],
    ids=[
        "plain",
        "trailing-slash",
        "lstat-link",
        "stat-link",
        "through-dirlink",
        "relative",
        "relative-plain",
        "relative-base-link",
        "dot-dot-dir",
        "double-slash",
        "statx-nofollow",
    ],
)
def test_a_stat_names_what_its_handler_resolved(
    audited: tuple[Manager, VmContext, list[Event]],
    openat2_calls: list[str],
    readlinks: list[int],
    request_of: Any,
    named: str,
    kind: int | None,
    resolutions: int,
    names_read: int,
) -> None:
    manager, vm, events = audited
    request = request_of()
    response = manager.handle_request(request)
    if kind is not None:
        assert isinstance(response, api.StatResult), response
        assert stat.S_IFMT(response.stat.st_mode) == kind
    else:
        assert isinstance(response, api.StatxResult | api.Continue), response
    assert len(openat2_calls) == resolutions, openat2_calls  # no resolving again after the answer
    assert len(readlinks) == names_read
    assert vm.bus is not None and vm.bus.flush(timeout=10)
    assert [event.paths for event in events] == [(named,)]
    assert served_paths(vm, request, response) == (named,)  # what resolving again names


def test_a_stat_that_finds_nothing_names_the_path_as_before(audited: tuple[Manager, VmContext, list[Event]]) -> None:
    manager, vm, events = audited
    requests = [_stat("/sub/dangling"), _stat("/dirlink/missing"), _stat("/sub/dangling", follow=False)]
    responses = [manager.handle_request(request) for request in requests]
    assert [type(r) for r in responses] == [api.Continue, api.Continue, api.StatResult]  # ENOENT: the kernel's
    assert vm.bus is not None and vm.bus.flush(timeout=10)
    assert [event.paths for event in events] == [("/sub/dangling",), ("/sub/missing",), ("/sub/dangling",)]
    assert [event.paths for event in events] == [
        served_paths(vm, q, r) for q, r in zip(requests, responses, strict=True)
    ]


def test_a_mutation_names_its_noted_directory_as_resolving_again_would(
    audited: tuple[Manager, VmContext, list[Event]],
) -> None:
    """The one-name shortcut of served_paths (a noted directory and the request's last
    component) names what its general loop names by resolving the parent again."""
    manager, vm, events = audited
    requests: list[api.Request] = [
        api.Mkdir(caller=_who(), path=api.VmPath("/", "/dirlink/d"), mode=0o755),
        api.Mkdir(caller=_who(), path=api.VmPath("/sub", "../dirlink/d/e/"), mode=0o755),
        api.Rmdir(caller=_who(), path=api.VmPath("/sub/d", "e/.")),  # EINVAL; named as asked, tidied
        api.Rmdir(caller=_who(), path=api.VmPath("/", "/dirlink/d/e")),
        api.Unlink(caller=_who(), path=api.VmPath("/sub", "./link")),
        api.Rmdir(caller=_who(), path=api.VmPath("/", "/sub/d")),
    ]
    responses = [manager.handle_request(request) for request in requests]
    assert [type(r) for r in responses] == [api.Value, api.Value, api.Errno, api.Value, api.Value, api.Value]
    assert vm.bus is not None and vm.bus.flush(timeout=10)
    got = [event.paths for event in events]
    assert got == [("/sub/d",), ("/sub/d/e",), ("/sub/d/e",), ("/sub/d/e",), ("/sub/link",), ("/sub/d",)]
    manager.handle_request(api.Mkdir(caller=_who(), path=api.VmPath("/", "/sub/d"), mode=0o755))
    manager.handle_request(api.Mkdir(caller=_who(), path=api.VmPath("/", "/sub/d/e"), mode=0o755))
    assert got[:4] == [served_paths(vm, q, r) for q, r in zip(requests[:4], responses[:4], strict=True)]


@pytest.fixture
def answers_read(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The fds of answers whose names served_paths reads back through procfs."""
    return _count_fd_names(monkeypatch, served)


def _open(path: str, flags: int) -> api.Open:
    base = "/" if path.startswith("/") else "/sub"
    return api.Open(caller=_who(), path=api.VmPath(base, path), flags=flags | os.O_CLOEXEC, mode=0o644)


WRITE = os.O_WRONLY


# An open of a plain absolute path is named by its text (found with no symlink on the
# way); any other by the readlink of its answer, before the VM has it: the same names.
@pytest.mark.parametrize(
    ("path", "flags", "named", "read_back"),
    [
        ("/sub/file", WRITE, "/sub/file", 0),
        ("/sub/file", os.O_RDONLY, "/sub/file", 0),
        ("/sub", os.O_RDONLY | os.O_DIRECTORY, "/sub", 0),
        ("/sub/new", WRITE | os.O_CREAT | os.O_EXCL, "/sub/new", 0),
        ("/sub/link", WRITE, "/sub/file", 1),
        ("/dirlink/file", os.O_RDONLY, "/sub/file", 1),
        ("/dirlink/made", WRITE | os.O_CREAT, "/sub/made", 1),
        ("/sub/dangling", WRITE | os.O_CREAT, "/sub/nowhere", 1),  # created through the symlink
        ("/sub/../sub/file", WRITE, "/sub/file", 1),
        ("file", WRITE, "/sub/file", 0),  # relative to /sub, below
        ("made-here", WRITE | os.O_CREAT, "/sub/made-here", 0),
    ],
    ids=[
        "write",
        "read",
        "directory",
        "create",
        "link",
        "dirlink",
        "create-dirlink",
        "create-dangling",
        "dot-dot",
        "relative",
        "relative-create",
    ],
)
def test_an_open_names_the_file_its_answer_holds(
    audited: tuple[Manager, VmContext, list[Event]],
    answers_read: list[int],
    path: str,
    flags: int,
    named: str,
    read_back: int,
) -> None:
    manager, vm, events = audited
    request = _open(path, flags)
    response = manager.handle_request(request)
    assert isinstance(response, api.Fd), response
    try:
        assert len(answers_read) == read_back
        again = served_paths(vm, request, response)  # without the handler's note: the answer's readlink
    finally:
        os.close(response.fd)
    assert vm.bus is not None and vm.bus.flush(timeout=10)
    assert [event.paths for event in events] == [(named,)]
    assert again == (named,)


def test_a_relative_path_from_another_directory_than_the_callers_is_refused_as_before(
    audited: tuple[Manager, VmContext, list[Event]], tmp_path: Path
) -> None:
    """A plain relative path whose base is not the caller's very directory (``base_id``):
    the plain attempt does not name it, the usual resolution refuses it (ForeignBase)."""
    manager, vm, events = audited
    elsewhere = os.stat(tmp_path)  # the root, not /sub
    wrong = api.VmPath("/sub", "file", (elsewhere.st_dev, elsewhere.st_ino))
    right = api.VmPath("/sub", "file", (os.stat(tmp_path / "sub").st_dev, os.stat(tmp_path / "sub").st_ino))
    assert type(manager.handle_request(api.Stat(caller=_who(), path=wrong, follow=True))) is api.Continue
    assert type(manager.handle_request(api.Stat(caller=_who(), path=right, follow=True))) is api.StatResult
    write = api.Open(caller=_who(), path=wrong, flags=os.O_WRONLY | os.O_CLOEXEC, mode=0)
    assert manager.handle_request(write) == api.Errno(errno.EACCES)  # not in the VM: no write through it
    assert vm.bus is not None and vm.bus.flush(timeout=10)
    assert [event.paths for event in events][1] == ("/sub/file",)


def test_the_c_plain_name_is_the_python_one() -> None:
    """hvfs/_native/record.c's plain_name, which names an audited stat, says what
    resolve.python_plain_name says of every base and name made of the components that
    matter (``.``, ``..``, empty ones, slashes at either end, a name not UTF-8)."""
    from hvfs import _native
    from hvfs.manager import resolve

    require(_native.recorder is not None, "the C recorder is not built (HVFS_NATIVE=0, or no compiler)")
    parts = ["", "/", "a", ".", "..", "//", "a/", "/a", "b/.", "./c", "é", "\udcff", "x/../y", "/..", "a//b", "a/./b"]
    compared = 0
    for first, second in itertools.product(parts, repeat=2):
        for base, name in ((first, second), ("/" + first, second), ("/" + first, "/" + second), (first, "/" + second)):
            path = api.VmPath(base, name)
            assert resolve.plain_name(path) == resolve.python_plain_name(path), (base, name)
            compared += 1
    assert compared == 4 * len(parts) ** 2
    assert resolve.plain_name(api.VmPath("/sub", "file")) == "/sub/file"
    assert resolve.plain_name(api.VmPath("/sub/", "file")) == "/sub/file"
    assert resolve.plain_name(api.VmPath("/", "/sub/../file")) is None
