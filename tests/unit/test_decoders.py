"""Decoders on fake notifications from a fake thread (hvfs.testing): what each syscall
family becomes, and the errnos of malformed calls, with the kernel as the oracle."""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hvfs import api
from hvfs._sys.abi import XATTR_ARGS
from hvfs.intercept.decoders.context import Output, Passthrough
from hvfs.intercept.tracee import CallError, TargetGone
from hvfs.testing import USER, FakeMemory, FakeTracee, decode_call
from tests.unit.native import PAGE, NativeMemory, native_errno

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW, AT_REMOVEDIR, AT_EMPTY_PATH = 0x100, 0x200, 0x1000
O_PATH = 0o10000000
CREATE = os.O_WRONLY | os.O_CREAT
SOCKADDR_UN = struct.Struct("<H108s")
MSGHDR = struct.Struct("<QI4xQQQQi4x")
CMSGHDR = struct.Struct("<Qii")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """The same files for the fake thread (its VM root) and for native calls (the cwd)."""
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "f").write_text("f\n")
    return tmp_path


@dataclass
class World:
    """Where a call's arguments live: fake memory and fds of a FakeTracee, or this
    process's own for the native call."""

    memory: FakeMemory | NativeMemory
    fds: dict[str, int]


@pytest.fixture
def tracee(tree: Path) -> Iterator[FakeTracee]:
    with FakeTracee(tree, cwd="/d") as made:
        yield made


def _fake_world(tracee: FakeTracee) -> World:
    one, other = socket.socketpair()
    other.close()
    fds = {
        "dir": tracee.open("/d", os.O_RDONLY | os.O_DIRECTORY),
        "file": tracee.open("/d/f", os.O_RDWR),
        "opath": tracee.open("/d/f", O_PATH),
        "socket": tracee.add_fd(one.detach(), "socket:[4242]"),
        "closed": 999,
    }
    return World(tracee.memory, fds)


@pytest.fixture
def native_world(tree: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.chdir(tree / "d")
    one, other = socket.socketpair()
    other.close()
    fds = {
        "dir": os.open(tree / "d", os.O_RDONLY | os.O_DIRECTORY),
        "file": os.open(tree / "d" / "f", os.O_RDWR),
        "opath": os.open(tree / "d" / "f", O_PATH),
        "socket": one.detach(),
    }
    yield World(NativeMemory(), {**fds, "closed": 999})
    for fd in fds.values():
        os.close(fd)


Case = tuple[str, Callable[[World], tuple[int, ...]]]


def _sockaddr(w: World, path: bytes) -> int:
    return w.memory.put(SOCKADDR_UN.pack(socket.AF_UNIX, path))


def _xattr_args(w: World, value: bytes = b"v", *, size: int | None = None, flags: int = 0, tail: bytes = b"") -> int:
    """A struct xattr_args pointing at ``value`` (its length unless ``size``), with ``tail``
    after it: the fields of a newer struct, as a caller built for a later kernel passes."""
    address = w.memory.put(value) if value else 0
    return w.memory.put(XATTR_ARGS.pack(address, len(value) if size is None else size, flags) + tail)


def _setxattrat(w: World, path: int, at_flags: int = 0, *, dirfd: int = AT_FDCWD, name: str = "user.x",
                args: int | None = None, usize: int = XATTR_ARGS.size) -> tuple[int, ...]:  # fmt: skip
    return (dirfd, path, at_flags, w.memory.path(name), _xattr_args(w) if args is None else args, usize)


def _msghdr(w: World, *, name: int = 0, namelen: int = 0, iov: int = 0, iovlen: int = 0, control: bytes = b"") -> int:
    control_at = w.memory.put(control) if control else 0
    return w.memory.put(MSGHDR.pack(name, namelen, iov, iovlen, control_at, len(control), 0))


# Calls the kernel refuses before it looks anything up: a decoder must refuse them too,
# with the same errno, without asking the manager.
REFUSED: dict[str, Case] = {
    "openat NULL path": ("openat", lambda w: (AT_FDCWD, 0, CREATE, 0o644)),
    "openat unreadable path": ("openat", lambda w: (AT_FDCWD, w.memory.unmapped(), CREATE, 0o644)),
    "openat path running into unmapped memory": (
        "openat",
        lambda w: (AT_FDCWD, w.memory.put_at_end(b"abc"), CREATE, 0),
    ),
    "openat path of PATH_MAX bytes": ("openat", lambda w: (AT_FDCWD, w.memory.path("a" * 4096), CREATE, 0)),
    "openat long path past a page end": ("openat", lambda w: (AT_FDCWD, w.memory.put_at_end(b"a" * 300), CREATE, 0)),
    "mkdirat empty path": ("mkdirat", lambda w: (AT_FDCWD, w.memory.path(""), 0o755)),
    "mkdirat dirfd not open": ("mkdirat", lambda w: (w.fds["closed"], w.memory.path("x"), 0o755)),
    "mkdirat dirfd a socket": ("mkdirat", lambda w: (w.fds["socket"], w.memory.path("x"), 0o755)),
    "unlinkat bad flags": ("unlinkat", lambda w: (AT_FDCWD, w.memory.path("x"), 0x8000)),
    "unlinkat bad flags and a NULL path": ("unlinkat", lambda w: (AT_FDCWD, 0, AT_EMPTY_PATH)),
    "linkat bad flags": ("linkat", lambda w: (AT_FDCWD, w.memory.path("f"), AT_FDCWD, w.memory.path("g"), 0x8000)),
    "fchmodat2 bad flags": ("fchmodat2", lambda w: (AT_FDCWD, w.memory.path("f"), 0o600, 0x8000)),
    "fchownat bad flags": ("fchownat", lambda w: (AT_FDCWD, w.memory.path("f"), 0, 0, AT_REMOVEDIR)),
    "newfstatat bad flags": ("newfstatat", lambda w: (AT_FDCWD, w.memory.path("f"), w.memory.map(256), 0x8000)),
    "statx both sync types": ("statx", lambda w: (AT_FDCWD, w.memory.path("f"), 0x6000, 0x7FF, w.memory.map(256))),
    "statx reserved mask": ("statx", lambda w: (AT_FDCWD, w.memory.path("f"), 0, 0x80000000, w.memory.map(256))),
    "faccessat2 bad mode": ("faccessat2", lambda w: (AT_FDCWD, w.memory.path("f"), 0o10, 0)),
    "faccessat2 bad flags": ("faccessat2", lambda w: (AT_FDCWD, w.memory.path("f"), os.W_OK, 0x8000)),
    "readlinkat no room": ("readlinkat", lambda w: (AT_FDCWD, w.memory.path("f"), w.memory.map(16), 0)),
    "openat2 short how": ("openat2", lambda w: (AT_FDCWD, w.memory.path("f"), w.memory.pack("<QQQ", 1, 0, 0), 16)),
    "openat2 how past a page": ("openat2", lambda w: (AT_FDCWD, w.memory.path("f"), w.memory.map(8192), PAGE + 8)),
    "openat2 how with more": (
        "openat2",
        lambda w: (AT_FDCWD, w.memory.path("f"), w.memory.pack("<4Q", 1, 0, 0, 1), 32),
    ),
    "openat2 NULL how": ("openat2", lambda w: (AT_FDCWD, w.memory.path("f"), 0, 24)),
    "utimes bad microseconds": ("utimes", lambda w: (w.memory.path("f"), w.memory.pack("<qqqq", 0, 1000000, 0, 0))),
    "utimensat NULL path at the cwd": ("utimensat", lambda w: (AT_FDCWD, 0, 0, 0)),
    "utimensat bad flags": ("utimensat", lambda w: (AT_FDCWD, w.memory.path("f"), 0, 0x8000)),
    "setxattr value too big": (
        "setxattr",
        lambda w: (w.memory.path("f"), w.memory.path("user.x"), w.memory.map(70000), 65537, 0),
    ),
    "setxattr empty name": ("setxattr", lambda w: (w.memory.path("f"), w.memory.path(""), w.memory.map(8), 1, 0)),
    "setxattr long name": (
        "setxattr",
        lambda w: (w.memory.path("f"), w.memory.path("user." + "n" * 300), w.memory.map(8), 1, 0),
    ),
    "setxattr NULL path and empty name": ("setxattr", lambda w: (0, w.memory.path(""), w.memory.map(8), 1, 0)),
    "setxattr bad flags and NULL path": ("setxattr", lambda w: (0, w.memory.path("user.x"), w.memory.map(8), 1, 4)),
    "removexattr NULL path and long name": ("removexattr", lambda w: (0, w.memory.path("user." + "n" * 300))),
    "setxattrat bad at_flags": ("setxattrat", lambda w: _setxattrat(w, w.memory.path("f"), 0x8000)),
    "setxattrat xattr_args too small": ("setxattrat", lambda w: _setxattrat(w, w.memory.path("f"), usize=8)),
    "setxattrat newer xattr_args, more asked": (
        "setxattrat",
        lambda w: _setxattrat(w, w.memory.path("f"), args=_xattr_args(w, tail=b"\1" + bytes(7)), usize=24),
    ),
    "setxattrat xattr_args past a page": (
        "setxattrat",
        lambda w: _setxattrat(w, w.memory.path("f"), args=w.memory.map(2 * PAGE), usize=PAGE + 8),
    ),
    "setxattrat xattr_args bad size with bad at_flags": (
        "setxattrat",
        lambda w: _setxattrat(w, w.memory.path("f"), 0x8000, args=_xattr_args(w, tail=b"\1"), usize=17),
    ),
    "setxattrat NULL xattr_args": ("setxattrat", lambda w: _setxattrat(w, w.memory.path("f"), args=0)),
    "setxattrat xattr_args unreadable": (
        "setxattrat",
        lambda w: _setxattrat(w, w.memory.path("f"), args=w.memory.unmapped()),
    ),
    "setxattrat bad flags": ("setxattrat", lambda w: _setxattrat(w, w.memory.path("f"), args=_xattr_args(w, flags=4))),
    "setxattrat empty name": ("setxattrat", lambda w: _setxattrat(w, w.memory.path("f"), name="")),
    "setxattrat long name, NULL path": ("setxattrat", lambda w: _setxattrat(w, 0, name="user." + "n" * 300)),
    "setxattrat value too big": (
        "setxattrat",
        lambda w: _setxattrat(w, w.memory.path("f"), args=_xattr_args(w, bytes(70000), size=65537)),
    ),
    "setxattrat value unreadable": (
        "setxattrat",
        lambda w: _setxattrat(w, w.memory.path("f"), args=w.memory.pack("<QII", w.memory.unmapped(), 3, 0)),
    ),
    "setxattrat NULL path without AT_EMPTY_PATH": ("setxattrat", lambda w: _setxattrat(w, 0)),
    "setxattrat empty path without AT_EMPTY_PATH": ("setxattrat", lambda w: _setxattrat(w, w.memory.path(""))),
    "setxattrat O_PATH fd": (
        "setxattrat",
        lambda w: _setxattrat(w, w.memory.path(""), AT_EMPTY_PATH, dirfd=w.fds["opath"]),
    ),
    "setxattrat fd not open": ("setxattrat", lambda w: _setxattrat(w, 0, AT_EMPTY_PATH, dirfd=w.fds["closed"])),
    "setxattrat bad negative dirfd": (
        "setxattrat",
        lambda w: _setxattrat(w, w.memory.path(""), AT_EMPTY_PATH, dirfd=-5),
    ),
    "setxattrat dirfd a socket": ("setxattrat", lambda w: _setxattrat(w, w.memory.path("x"), dirfd=w.fds["socket"])),
    "getxattrat flags in xattr_args": (
        "getxattrat",
        lambda w: _setxattrat(w, w.memory.path("f"), args=_xattr_args(w, bytes(8), flags=1)),
    ),
    "getxattrat bad at_flags": ("getxattrat", lambda w: _setxattrat(w, w.memory.path("f"), 0x8000)),
    "getxattrat xattr_args too small": ("getxattrat", lambda w: _setxattrat(w, w.memory.path("f"), usize=15)),
    "getxattrat newer xattr_args, more asked": (
        "getxattrat",
        lambda w: _setxattrat(w, w.memory.path("f"), args=_xattr_args(w, tail=bytes(7) + b"\1"), usize=24),
    ),
    "getxattrat xattr_args past a page": (
        "getxattrat",
        lambda w: _setxattrat(w, w.memory.path("f"), args=w.memory.map(2 * PAGE), usize=(1 << 64) - 1),
    ),
    "getxattrat empty name": ("getxattrat", lambda w: _setxattrat(w, w.memory.path("missing"), name="")),
    "getxattrat NULL path": ("getxattrat", lambda w: _setxattrat(w, 0)),
    "listxattrat bad at_flags": ("listxattrat", lambda w: (AT_FDCWD, w.memory.path("f"), 0x8000, w.memory.map(8), 8)),
    "listxattrat NULL path": ("listxattrat", lambda w: (AT_FDCWD, 0, AT_SYMLINK_NOFOLLOW, w.memory.map(8), 8)),
    "listxattrat dirfd not open": ("listxattrat", lambda w: (w.fds["closed"], w.memory.path("f"), 0, 0, 0)),
    "removexattrat bad at_flags": (
        "removexattrat",
        lambda w: (AT_FDCWD, w.memory.path("f"), 1, w.memory.path("user.x")),
    ),
    "removexattrat empty name": ("removexattrat", lambda w: (AT_FDCWD, w.memory.path("missing"), 0, w.memory.path(""))),
    "removexattrat O_PATH fd": (
        "removexattrat",
        lambda w: (w.fds["opath"], w.memory.path(""), AT_EMPTY_PATH, w.memory.path("user.x")),
    ),
    "removexattrat the cwd by AT_EMPTY_PATH": (
        "removexattrat",
        lambda w: (AT_FDCWD, w.memory.path(""), AT_EMPTY_PATH, w.memory.path("user.x")),
    ),
    "removexattrat NULL path": ("removexattrat", lambda w: (AT_FDCWD, 0, 0, w.memory.path("user.x"))),
    "fsetxattr fd not open": ("fsetxattr", lambda w: (w.fds["closed"], w.memory.path("user.x"), w.memory.map(8), 1, 0)),
    "fchmod fd not open": ("fchmod", lambda w: (w.fds["closed"], 0o600)),
    "fchmod O_PATH fd": ("fchmod", lambda w: (w.fds["opath"], 0o600)),
    "fchown O_PATH fd": ("fchown", lambda w: (w.fds["opath"], 0, 0)),
    "execve NULL path": ("execve", lambda w: (0, 0, 0)),
    "connect not a socket": ("connect", lambda w: (w.fds["file"], _sockaddr(w, b"/s"), SOCKADDR_UN.size)),
    "connect address too long": ("connect", lambda w: (w.fds["socket"], w.memory.map(256), 200)),
    "connect negative length": ("connect", lambda w: (w.fds["socket"], _sockaddr(w, b"/s"), -1)),
    "connect unreadable address": ("connect", lambda w: (w.fds["socket"], w.memory.unmapped(), 16)),
    "bind not a socket": ("bind", lambda w: (w.fds["file"], _sockaddr(w, b"/s"), SOCKADDR_UN.size)),
    "bind O_PATH fd": ("bind", lambda w: (w.fds["opath"], _sockaddr(w, b"/s"), SOCKADDR_UN.size)),
    "sendto address too long": (
        "sendto",
        lambda w: (w.fds["socket"], w.memory.put(b"x"), 1, 0, w.memory.map(256), 129),
    ),
    "sendmsg NULL header": ("sendmsg", lambda w: (w.fds["socket"], 0, 0)),
    "sendmsg too many iovecs": (
        "sendmsg",
        lambda w: (w.fds["socket"], _msghdr(w, iov=w.memory.map(16), iovlen=1025), 0),
    ),
    "sendmsg negative name length": (
        "sendmsg",
        lambda w: (w.fds["socket"], _msghdr(w, name=w.memory.map(16), namelen=0xFFFFFFFF), 0),
    ),
    "sendmsg short control message": (
        "sendmsg",
        lambda w: (w.fds["socket"], _msghdr(w, control=CMSGHDR.pack(8, socket.SOL_SOCKET, 1) + bytes(8)), 0),
    ),
    "sendmsg not a socket": ("sendmsg", lambda w: (w.fds["file"], _msghdr(w), 0)),
}


@pytest.mark.parametrize("name", REFUSED)
def test_a_malformed_call_gets_the_kernels_errno_without_the_manager(
    name: str, tracee: FakeTracee, native_world: World
) -> None:
    syscall, arguments = REFUSED[name]
    expected = native_errno(syscall, *arguments(native_world))
    assert expected != 0, f"{name}: the kernel accepts it here"
    with pytest.raises(CallError) as raised:
        decode_call(tracee, syscall, *arguments(_fake_world(tracee)))
    got = raised.value.errno
    assert got == expected, f"{name}: {errno.errorcode[got]}, the kernel {errno.errorcode[expected]}"


# What calls become.


def _decoded(tracee: FakeTracee, syscall: str, *args: int) -> tuple[api.Request, Output | None]:
    return decode_call(tracee, syscall, *args)


def _identity(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def test_paths_relative_to_the_cwd_and_to_a_dirfd_carry_their_base(tracee: FakeTracee, tree: Path) -> None:
    request, output = _decoded(tracee, "openat", AT_FDCWD, tracee.memory.path("new"), CREATE, 0o640)
    assert request == api.Open(caller=api.Caller("vm", tracee.pid, USER), path=api.VmPath("/d", "new"),
                               flags=CREATE, mode=0o640)  # fmt: skip
    assert isinstance(request, api.Open) and request.path.base_id == _identity(tree / "d") and output is None
    sub = tracee.open("/d/sub", os.O_RDONLY | os.O_DIRECTORY)
    request, _ = _decoded(tracee, "mkdirat", sub, tracee.memory.path("x/y"), 0o40755)
    assert request == api.Mkdir(caller=api.Caller("vm", tracee.pid, USER), path=api.VmPath("/d/sub", "x/y"), mode=0o755)
    assert isinstance(request, api.Mkdir) and request.path.base_id == _identity(tree / "d" / "sub")
    request, _ = _decoded(tracee, "unlinkat", sub, tracee.memory.path("/abs/x"), AT_REMOVEDIR)
    assert request == api.Rmdir(caller=api.Caller("vm", tracee.pid, USER), path=api.VmPath("/", "/abs/x"))
    request, _ = _decoded(tracee, "creat", tracee.memory.path("c"), 0o600)
    assert isinstance(request, api.Open) and request.flags == os.O_CREAT | os.O_WRONLY | os.O_TRUNC


def test_the_callers_credentials_come_from_its_status(tree: Path) -> None:
    creds = api.Credentials(uid=5, gid=6, groups=(6, 7, 8), umask=0o077, capabilities=1 << 1, real_uid=9, real_gid=10)
    with FakeTracee(tree, creds=creds, pid=777) as tracee:
        request, _ = _decoded(tracee, "mkdir", tracee.memory.path("/x"), 0o700)
    assert request.caller == api.Caller("vm", 777, creds)


def test_empty_paths_with_at_empty_path_name_the_fd_itself(tracee: FakeTracee, tree: Path) -> None:
    fd = tracee.open("/d/f", os.O_RDWR)
    request, _ = _decoded(tracee, "fchownat", fd, tracee.memory.path(""), 1, 2, AT_EMPTY_PATH)
    assert isinstance(request, api.Chown) and isinstance(request.target, api.OpenFile)
    assert request.target.path == "/d/f" and (request.uid, request.gid) == (1, 2)
    assert os.fstat(request.target.fd).st_ino == _identity(tree / "d" / "f")[1]
    tracee.close()  # the driver closes what it took for a request
    with pytest.raises(CallError) as raised:  # without AT_EMPTY_PATH an empty path is ENOENT
        _decoded(tracee, "fchownat", fd, tracee.memory.path(""), 1, 2, 0)
    assert raised.value.errno == errno.ENOENT
    request, _ = _decoded(tracee, "utimensat", fd, 0, 0, 0)  # futimens
    assert isinstance(request, api.Utimens) and isinstance(request.target, api.OpenFile) and request.times is None


def test_magic_links_to_the_callers_own_fds_reopen_that_file(tracee: FakeTracee, tree: Path) -> None:
    fd = tracee.open("/d/f", os.O_RDONLY)
    request, _ = _decoded(tracee, "openat", AT_FDCWD, tracee.memory.path(f"/proc/self/fd/{fd}"), os.O_WRONLY, 0)
    assert isinstance(request, api.Open) and request.via is not None and request.via.path == "/d/f"
    (tree / "dev").mkdir()
    (tree / "dev" / "stdout").symlink_to("/proc/self/fd/1")
    tracee.open("/d/f", os.O_WRONLY, number=1)
    request, _ = _decoded(tracee, "openat", AT_FDCWD, tracee.memory.path("/dev/stdout"), os.O_WRONLY, 0)
    assert isinstance(request, api.Open) and request.via is not None and request.via.path == "/d/f"
    request, _ = _decoded(tracee, "mkdir", tracee.memory.path("/proc/self/cwd/new"), 0o755)
    assert isinstance(request, api.Mkdir) and str(request.path) == "/d/new"
    request, _ = _decoded(tracee, "mkdir", tracee.memory.path("/proc/thread-self/x"), 0o755)
    assert isinstance(request, api.Mkdir) and str(request.path) == f"/proc/{tracee.vm_pid}/task/{tracee.vm_pid}/x"


def test_a_longest_path_is_read_whole(tracee: FakeTracee) -> None:
    longest = "/" + "/".join(["a" * 200] * 21)[:4094]
    assert len(longest) == 4095
    request, _ = _decoded(tracee, "unlink", tracee.memory.path(longest))
    assert isinstance(request, api.Unlink) and request.path.name == longest


def test_outputs_name_where_results_go(tracee: FakeTracee) -> None:
    buffer = tracee.memory.map(256)
    request, output = _decoded(tracee, "newfstatat", AT_FDCWD, tracee.memory.path("f"), buffer, AT_SYMLINK_NOFOLLOW)
    assert request == api.Stat(caller=request.caller, path=api.VmPath("/d", "f"), follow=False)
    assert output == Output("stat", buffer)
    request, output = _decoded(tracee, "readlinkat", AT_FDCWD, tracee.memory.path("l"), buffer, 100)
    assert isinstance(request, api.Readlink) and output == Output("buffer", buffer, 100)


def test_a_thread_gone_meanwhile_is_never_served(tracee: FakeTracee) -> None:
    tracee.valid = False
    with pytest.raises(TargetGone):
        _decoded(tracee, "mkdir", tracee.memory.path("/x"), 0o755)


def test_a_syscall_the_driver_does_not_serve_has_no_decoder(tracee: FakeTracee) -> None:
    with pytest.raises(KeyError):
        _decoded(tracee, "read", 0, 0, 0)


# Sockets.


def test_connect_to_a_unix_path_carries_the_bytes_read_once_and_the_path(tracee: FakeTracee) -> None:
    one, other = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    other.close()
    fd = tracee.add_fd(one.detach(), "socket:[1]")
    raw = SOCKADDR_UN.pack(socket.AF_UNIX, b"run/s")[: 2 + 6]
    request, _ = _decoded(tracee, "connect", fd, tracee.memory.put(raw), len(raw))
    assert isinstance(request, api.Connect)
    assert request.address == api.SocketAddress(raw, api.VmPath("/d", "run/s"))
    abstract = SOCKADDR_UN.pack(socket.AF_UNIX, b"\0name")[: 2 + 5]
    request, _ = _decoded(tracee, "bind", fd, tracee.memory.put(abstract), len(abstract))
    assert isinstance(request, api.Bind) and request.address == api.SocketAddress(abstract)


def test_sendmsg_takes_passed_fds_and_data_from_every_iovec(tracee: FakeTracee, tree: Path) -> None:
    one, other = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    other.close()
    sock = tracee.add_fd(one.detach(), "socket:[1]")
    passed = [tracee.open("/d/f", os.O_RDONLY), tracee.open("/d", os.O_RDONLY | os.O_DIRECTORY)]
    memory = tracee.memory
    iov = memory.put(struct.pack("<QQQQ", memory.put(b"hello "), 6, memory.put(b"world"), 5))
    rights = struct.pack("<2i", *passed)
    control = CMSGHDR.pack(CMSGHDR.size + len(rights), socket.SOL_SOCKET, socket.SCM_RIGHTS) + rights
    header = memory.put(MSGHDR.pack(0, 0, iov, 2, memory.put(control), len(control), 0))
    request, output = _decoded(tracee, "sendmsg", sock, header, socket.MSG_DONTWAIT)
    assert isinstance(request, api.Send) and output is None
    assert (request.data, request.length, request.flags, request.address) == (
        b"hello world",
        11,
        socket.MSG_DONTWAIT,
        None,
    )
    (files,) = request.control
    assert isinstance(files, api.PassedFiles) and [f.path for f in files.files] == ["/d/f", "/d"]
    assert [os.fstat(f.fd).st_ino for f in files.files] == [_identity(tree / "d" / "f")[1], _identity(tree / "d")[1]]
    request, output = _decoded(tracee, "sendmmsg", sock, header, 1, 0)
    assert isinstance(request, api.Send) and output == Output("msg_len", header + MSGHDR.size, 4)
    with pytest.raises(Passthrough):  # no message: nothing to decide
        _decoded(tracee, "sendmmsg", sock, header, 0, 0)


def test_claimed_credentials_must_be_the_callers_own(tracee: FakeTracee) -> None:
    one, other = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    other.close()
    sock = tracee.add_fd(one.detach(), "socket:[1]")
    memory = tracee.memory

    def claim(pid: int, uid: int, gid: int) -> Any:
        ucred = struct.pack("<iII", pid, uid, gid)
        control = CMSGHDR.pack(CMSGHDR.size + len(ucred), socket.SOL_SOCKET, 2) + ucred + bytes(4)
        header = memory.put(MSGHDR.pack(0, 0, 0, 0, memory.put(control), len(control), 0))
        return _decoded(tracee, "sendmsg", sock, header, 0)[0]

    own = claim(tracee.vm_pid, USER.real_uid, USER.real_gid)
    assert own.control == (api.SenderCredentials(tracee.pid, USER.real_uid, USER.real_gid),)
    for other_pid, uid in ((1, USER.real_uid), (tracee.vm_pid, 0)):
        with pytest.raises(CallError) as raised:
            claim(other_pid, uid, USER.real_gid)
        assert raised.value.errno == errno.EPERM


def test_each_family_carries_its_arguments(tracee: FakeTracee, tree: Path) -> None:
    memory = tracee.memory
    fd = tracee.open("/d/f", os.O_RDWR)
    request, _ = _decoded(tracee, "setxattr", memory.path("f"), memory.path("user.k"), memory.put(b"v\0al"), 4, 1)
    assert isinstance(request, api.SetXattr)
    assert (request.name, request.value, request.flags, request.follow) == ("user.k", b"v\0al", 1, True)
    times = memory.pack("<qqqq", 1, 2, 3, (1 << 30) - 2)  # UTIME_OMIT in the second
    request, _ = _decoded(tracee, "utimensat", AT_FDCWD, memory.path("f"), times, AT_SYMLINK_NOFOLLOW)
    assert isinstance(request, api.Utimens)
    assert (request.times, request.follow) == (((1, 2), (3, (1 << 30) - 2)), False)
    request, _ = _decoded(tracee, "faccessat2", AT_FDCWD, memory.path("f"), os.W_OK, AT_REMOVEDIR)  # AT_EACCESS
    assert isinstance(request, api.Access) and (request.mode, request.flags) == (os.W_OK, AT_REMOVEDIR)
    sub = tracee.open("/d/sub", os.O_RDONLY)
    request, _ = _decoded(tracee, "renameat2", AT_FDCWD, memory.path("a"), sub, memory.path("b"), 1)
    assert request == api.Rename(
        caller=request.caller, old=api.VmPath("/d", "a"), new=api.VmPath("/d/sub", "b"), flags=1
    )
    request, _ = _decoded(tracee, "symlinkat", memory.path("../any//thing/"), AT_FDCWD, memory.path("s"))
    assert isinstance(request, api.Symlink) and request.target == "../any//thing/"
    request, _ = _decoded(tracee, "linkat", fd, memory.path(""), AT_FDCWD, memory.path("l"), AT_EMPTY_PATH)
    assert isinstance(request, api.Link) and isinstance(request.old, api.OpenFile) and request.old.path == "/d/f"
    buffer = memory.map(120)
    request, output = _decoded(tracee, "fstatfs", fd, buffer)
    assert isinstance(request, api.Statfs) and isinstance(request.path, api.OpenFile)
    assert output == Output("buffer", buffer, 120)
    request, _ = _decoded(tracee, "truncate", memory.path("f"), -1)
    assert isinstance(request, api.Truncate) and request.length == -1
    request, _ = _decoded(tracee, "mknodat", AT_FDCWD, memory.path("n"), 0o10644, 0x0801)
    assert isinstance(request, api.Mknod) and (request.mode, request.device) == (0o10644, 0x0801)


def test_an_exec_of_a_memfd_names_the_open_file(tracee: FakeTracee) -> None:
    number = tracee.add_fd(os.memfd_create("program", os.MFD_CLOEXEC), "/memfd:program (deleted)")
    request, _ = _decoded(tracee, "execveat", number, tracee.memory.path(""), 0, 0, AT_EMPTY_PATH)
    assert isinstance(request, api.Exec) and isinstance(request.path, api.OpenFile)
    assert request.path.path == "/memfd:program (deleted)"
    request, _ = _decoded(tracee, "execve", tracee.memory.path(f"/proc/self/fd/{number}"), 0, 0)
    assert isinstance(request, api.Exec) and isinstance(request.path, api.OpenFile)
    request, _ = _decoded(tracee, "execve", tracee.memory.path("/bin/true"), 0, 0)
    assert request == api.Exec(caller=request.caller, path=api.VmPath("/", "/bin/true"))
