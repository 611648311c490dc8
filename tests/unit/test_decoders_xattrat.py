"""The decoders of the xattr calls of Linux 6.13 (setxattrat, getxattrat, listxattrat,
removexattrat) against the kernel as the oracle; the fixtures and helpers are
test_decoders'."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hvfs import api
from hvfs._sys.abi import XATTR_ARGS, XATTR_CREATE
from hvfs.intercept.decoders.context import Passthrough
from hvfs.testing import FakeMemory, FakeTracee
from tests.unit.native import PAGE, native_errno
from tests.unit.test_decoders import (  # noqa: F401 (fixtures, redefined as arguments)
    AT_EMPTY_PATH,
    AT_FDCWD,
    AT_SYMLINK_NOFOLLOW,
    World,
    _decoded,
    _identity,
    _setxattrat,
    _xattr_args,
    native_world,
    tracee,
    tree,
)

# The xattr calls of Linux 6.13: setxattrat, getxattrat, listxattrat, removexattrat.


def test_the_xattrat_calls_build_what_the_xattr_calls_do(tracee: FakeTracee, native_world: World) -> None:
    memory, w = tracee.memory, World(tracee.memory, {})
    args = _xattr_args(w, b"v\0al", flags=XATTR_CREATE)
    request, output = _decoded(tracee, "setxattrat", AT_FDCWD, memory.path("f"), 0, memory.path("user.k"), args, 16)
    assert request == api.SetXattr(caller=request.caller, target=api.VmPath("/d", "f"), name="user.k",
                                   value=b"v\0al", flags=XATTR_CREATE, follow=True)  # fmt: skip
    assert output is None
    sub = tracee.open("/d/sub", os.O_RDONLY | os.O_DIRECTORY)
    request, _ = _decoded(tracee, "removexattrat", sub, memory.path("../f"), AT_SYMLINK_NOFOLLOW, memory.path("user.k"))
    assert request == api.RemoveXattr(caller=request.caller, target=api.VmPath("/d/sub", "../f"), name="user.k",
                                      follow=False)  # fmt: skip
    # Reads: checked, then continued, as getxattr and listxattr.
    request, output = _decoded(tracee, "getxattrat", sub, memory.path("x"), AT_SYMLINK_NOFOLLOW,
                               memory.path("user.k"), _xattr_args(w, bytes(8)), 16)  # fmt: skip
    assert request == api.Lookup(caller=request.caller, path=api.VmPath("/d/sub", "x"), follow=False, call="getxattrat")
    assert output is None
    request, _ = _decoded(tracee, "listxattrat", AT_FDCWD, memory.path("/abs"), 0, memory.map(8), 8)
    assert request == api.Lookup(caller=request.caller, path=api.VmPath("/", "/abs"), follow=True, call="listxattrat")
    # The same calls, natively, on the same tree: they succeed.
    nm = native_world.memory
    assert native_errno("setxattrat", AT_FDCWD, nm.path("f"), 0, nm.path("user.k"), _xattr_args(native_world), 16) == 0
    assert native_errno("removexattrat", AT_FDCWD, nm.path("f"), 0, nm.path("user.k")) == 0


@pytest.mark.parametrize("syscall", ["setxattrat", "getxattrat"])
@pytest.mark.parametrize(("usize", "tail"), [(24, bytes(8)), (PAGE, bytes(PAGE - 16))])
def test_a_bigger_xattr_args_with_a_zero_tail_is_taken(
    tracee: FakeTracee, native_world: World, tree: Path, syscall: str, usize: int, tail: bytes
) -> None:
    """A caller built for a later kernel passes a bigger struct: fine while the fields this
    kernel lacks are zero (the E2BIG of a non-zero tail is among the refused calls)."""
    os.setxattr(tree / "d" / "f", "user.x", b"12345678")
    for world in (World(tracee.memory, {}), native_world):
        arguments = _setxattrat(
            world, world.memory.path("f"), args=_xattr_args(world, bytes(8), tail=tail), usize=usize
        )
        if world is native_world:
            assert native_errno(syscall, *arguments) == 0
            continue
        request, _ = _decoded(tracee, syscall, *arguments)
        if syscall == "setxattrat":
            assert isinstance(request, api.SetXattr) and (request.value, request.flags) == (bytes(8), 0)
        else:
            assert isinstance(request, api.Lookup) and request.path == api.VmPath("/d", "f")


def test_at_empty_path_names_the_fd_or_the_cwd(tracee: FakeTracee, tree: Path) -> None:
    memory, w = tracee.memory, World(tracee.memory, {})
    fd = tracee.open("/d/f", os.O_RDWR)
    for path in (memory.path(""), 0):  # an empty path, or NULL: both mean the fd itself
        request, _ = _decoded(tracee, "setxattrat", *_setxattrat(w, path, AT_EMPTY_PATH, dirfd=fd))
        assert isinstance(request, api.SetXattr) and isinstance(request.target, api.OpenFile)
        assert request.target.path == "/d/f" and os.fstat(request.target.fd).st_ino == _identity(tree / "d" / "f")[1]
        request, _ = _decoded(tracee, "removexattrat", fd, path, AT_EMPTY_PATH, memory.path("user.x"))
        assert isinstance(request, api.RemoveXattr) and isinstance(request.target, api.OpenFile)
        tracee.close()
        # Reading one of its own files is native for fgetxattr and flistxattr: continued.
        with pytest.raises(Passthrough):
            _decoded(tracee, "getxattrat", *_setxattrat(w, path, AT_EMPTY_PATH, dirfd=fd))
        with pytest.raises(Passthrough):
            _decoded(tracee, "listxattrat", fd, path, AT_EMPTY_PATH, memory.map(8), 8)
    # AT_FDCWD: setxattrat and getxattrat act on the cwd (removexattrat's EBADF is among the refused calls).
    request, _ = _decoded(tracee, "setxattrat", *_setxattrat(w, memory.path(""), AT_EMPTY_PATH))
    assert isinstance(request, api.SetXattr) and request.target == api.VmPath("/d", ".")
    # With a path, AT_EMPTY_PATH changes nothing.
    request, _ = _decoded(tracee, "setxattrat", *_setxattrat(w, memory.path("f"), AT_EMPTY_PATH))
    assert isinstance(request, api.SetXattr) and request.target == api.VmPath("/d", "f")


class RewrittenMemory(FakeMemory):
    """Another thread of the caller at work: the bytes at ``watched`` become ``rewritten``
    right after the first read that covers them."""

    def __init__(self) -> None:
        super().__init__()
        self.watched = 0
        self.rewritten = b""
        self.reads = 0

    def read(self, address: int, size: int) -> bytes:
        data = super().read(address, size)
        if address <= self.watched < address + size:
            self.reads += 1
            self.write(self.watched, self.rewritten)
        return data


def test_xattr_args_are_read_once(tree: Path) -> None:
    """The decoder decides on its own copy of the struct: a second read would see a value
    the caller switched to, a size past XATTR_SIZE_MAX and flags the kernel refuses."""
    memory = RewrittenMemory()
    with FakeTracee(tree, cwd="/d", memory=memory) as tracee:
        good, evil = memory.put(b"good"), memory.put(b"evil" * 20000)
        memory.watched = memory.pack("<QII", good, 4, XATTR_CREATE)
        memory.rewritten = XATTR_ARGS.pack(evil, 80000, 0x4)
        name = memory.path("user.k")
        request, _ = _decoded(tracee, "setxattrat", AT_FDCWD, memory.path("f"), 0, name, memory.watched, 16)
        assert isinstance(request, api.SetXattr)
        assert (request.value, request.flags) == (b"good", XATTR_CREATE)
        assert memory.reads == 1
        assert memory.read(memory.watched, 16) == XATTR_ARGS.pack(evil, 80000, 0x4)  # the rewrite did happen
