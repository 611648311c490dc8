"""The syscall table, its decoders and the manager's handlers agree: every request type has
a handler, every call the filter may send to a driver has a decoder, every decoder builds
the request types it declares, which all have handlers; and table and decoders need
nothing of seccomp. No VM, no root: the decoders run against a fake tracee that
implements the tracee protocol (hvfs/intercept/decoders/tracee.py) from dictionaries."""

from __future__ import annotations

import ast
import errno
import os
import socket
import stat
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvfs import api
from hvfs._sys.abi import (
    AF_UNIX,
    AT_FDCWD,
    AT_REMOVEDIR,
    IOVEC,
    MSGHDR,
    O_CREAT,
    O_WRONLY,
    OPEN_HOW,
    SA_FAMILY,
    STATFS_SIZE,
    W_OK,
    XATTR_ARGS,
)
from hvfs.intercept import syscalls
from hvfs.intercept.decoders.context import Args, Context, Output, Passthrough
from hvfs.intercept.decoders.tracee import CallError, Identity
from hvfs.manager.handlers import HANDLERS
from tests.conftest import REPO

REQUEST_TYPES = set(typing.get_args(api.Request))
DECODED = [entry for entry in syscalls.TABLE if entry.decoder is not None]


def test_every_request_type_has_a_handler() -> None:
    assert len(REQUEST_TYPES) > 20
    assert REQUEST_TYPES - set(HANDLERS) == set(), "add a handler in hvfs/manager/handlers/__init__.py"
    assert set(HANDLERS) - REQUEST_TYPES == set(), "a handler for a type that is not in api.Request"


def test_every_call_the_filter_may_notify_has_a_decoder() -> None:
    notified = [entry for entry in syscalls.TABLE if entry.handling.decoded]
    assert len(notified) > 50
    assert [e.name for e in notified if e.decoder is None] == []
    # and a decoder on a call that never reaches a driver is dead code (CREDS calls are the driver's own)
    assert [e.name for e in syscalls.TABLE if e.decoder is not None and not e.handling.decoded] == []


def test_every_decoder_builds_requests_that_have_handlers() -> None:
    for entry in DECODED:
        assert entry.decoder is not None
        assert entry.decoder.requests, entry.name
        assert set(entry.decoder.requests) <= set(HANDLERS), entry.name


def test_names_are_unique_and_decoders_live_in_their_family() -> None:
    assert len(syscalls.BY_NAME) == len(syscalls.TABLE)
    families = {p.stem for p in (REPO / "hvfs" / "manager" / "handlers").glob("*.py")}
    for entry in DECODED:
        assert entry.decoder is not None
        module = entry.decoder.decode.__module__
        assert module.startswith("hvfs.intercept.decoders.") and module.rsplit(".", 1)[1] in families, module


def _hvfs_imports(path: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse((REPO / path).read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n.startswith("hvfs")}


def test_the_table_and_the_decoders_need_no_seccomp() -> None:
    """A ptrace driver reuses them with another tracee: they may import the API, the ABI
    constants, hvfs.patterns (a pattern compiled on first use) and each other, nothing of
    the seccomp driver (notifications, filter, tracee memory) nor of the manager."""
    allowed = ("hvfs.api", "hvfs._sys.abi", "hvfs.intercept.decoders", "hvfs.patterns")
    generic = ["hvfs/intercept/syscalls.py"] + [
        str(p.relative_to(REPO)) for p in sorted((REPO / "hvfs" / "intercept" / "decoders").glob("*.py"))
    ]
    for path in generic:
        leaks = {n for n in _hvfs_imports(path) if not (n == "hvfs" or n.startswith(allowed))}
        assert not leaks, (path, leaks)


# A tracee made of dictionaries: the protocol, and nothing else, is what decoders get.

CWD = "/work"
CWD_ID = (1, 2)
DIR_FD, FILE_FD, SOCKET_FD, PIPE_FD = 3, 4, 5, 6


class FakeTracee:
    """Implements hvfs.intercept.decoders.tracee.Tracee for no thread at all."""

    pid = 4242

    def __init__(self, files: dict[int, int]) -> None:
        self._regions: dict[int, bytes] = {}
        self._next = 0x10000
        self._files = files  # the caller's fd numbers -> real fds standing for them
        self.taken: list[int] = []

    def put(self, data: bytes) -> int:
        address = self._next
        self._regions[address] = data
        self._next += 0x10000
        return address

    def path(self, text: str) -> int:
        return self.put(os.fsencode(text) + b"\0")

    def read(self, address: int, size: int) -> bytes:
        for start, data in self._regions.items():
            if start <= address < start + len(data) and address + size <= start + len(data):
                return data[address - start : address - start + size]
        raise CallError(errno.EFAULT)

    def read_path(self, address: int, *, empty_ok: bool = False) -> str:
        data = next((d[address - s :] for s, d in self._regions.items() if s <= address < s + len(d)), None)
        if data is None or b"\0" not in data:
            raise CallError(errno.EFAULT)
        text = data[: data.index(b"\0")]
        if not text and not empty_ok:
            raise CallError(errno.ENOENT)
        return os.fsdecode(text)

    def take_fd(self, fd: int, *, path_ok: bool = True) -> api.OpenFile:
        if fd not in self._files:
            raise CallError(errno.EBADF)
        local = os.dup(self._files[fd])
        self.taken.append(local)
        return api.OpenFile(local, f"/fake/{fd}")

    def directory(self, dirfd: int) -> tuple[str, tuple[int, int]]:
        if dirfd == AT_FDCWD:
            return CWD, CWD_ID
        if dirfd == DIR_FD:
            return "/srv", (1, 3)
        raise CallError(errno.EBADF if dirfd not in self._files else errno.ENOTDIR)

    def fd_path(self, fd: int) -> str | None:
        return {FILE_FD: "/srv/file"}.get(fd)

    def dev_link(self, name: str) -> str | None:
        return {"fd": "/proc/self/fd", "stdout": "/proc/self/fd/1"}.get(name)  # no stderr link

    def credentials(self) -> api.Credentials:
        return api.Credentials(uid=1000, gid=1000, groups=(), umask=0o022, capabilities=0, real_uid=1000, real_gid=1000)

    def caller(self, vm: str) -> api.Caller:
        return api.Caller(vm, self.pid, self.credentials())

    def identity(self) -> Identity:
        return Identity(tgid=self.pid, own_tgid=7, uids=(1000, 1000, 1000), gids=(1000, 1000, 1000), capabilities=0)

    def vm_ids(self) -> tuple[int, int]:
        return 7, 8

    def id_map(self, kind: str) -> list[tuple[int, int, int]]:
        return [(0, 100000, 65536)]


@pytest.fixture
def tracee(tmp_path: Path) -> Iterator[FakeTracee]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    read_end, write_end = os.pipe()
    real = {
        DIR_FD: os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY),
        FILE_FD: os.open(tmp_path / "file", os.O_RDWR | os.O_CREAT, 0o600),
        SOCKET_FD: a.fileno(),
        PIPE_FD: read_end,
    }
    fake = FakeTracee(real)
    yield fake
    for fd in fake.taken:
        os.close(fd)
    for fd in (real[DIR_FD], real[FILE_FD], read_end, write_end):
        os.close(fd)
    a.close()
    b.close()


def _reg(value: int) -> int:
    """A negative int argument as its 64-bit register holds it."""
    return value & (1 << 64) - 1


def _args_of_every_decoder(t: FakeTracee) -> dict[str, tuple[int, ...]]:
    """Arguments with which each decoder builds a request (not an error)."""
    p, q, buf, name, value = t.path("f"), t.path("/g"), t.put(bytes(256)), t.path("user.x"), t.put(b"abc")
    how = t.put(OPEN_HOW.pack(os.O_RDONLY, 0, 0))
    xattr_args = t.put(XATTR_ARGS.pack(value, 3, 0))
    address = t.put(SA_FAMILY.pack(AF_UNIX) + b"/run/s\0")
    data = t.put(b"hello")
    msghdr = t.put(MSGHDR.pack(address, 9, t.put(IOVEC.pack(data, 5)), 1, 0, 0, 0))
    cwd = _reg(AT_FDCWD)
    return {
        "open": (p, O_WRONLY | O_CREAT, 0o644),
        "openat": (cwd, p, O_WRONLY, 0),
        "creat": (p, 0o644),
        "openat2": (DIR_FD, p, how, OPEN_HOW.size),
        "mkdir": (p, 0o755),
        "mkdirat": (DIR_FD, p, 0o755),
        "mknod": (p, stat.S_IFIFO | 0o644, 0),
        "mknodat": (cwd, p, stat.S_IFIFO | 0o644, 0),
        "unlink": (p,),
        "unlinkat": (cwd, p, 0),
        "rmdir": (p,),
        "rename": (p, q),
        "renameat": (cwd, p, DIR_FD, q),
        "renameat2": (cwd, p, cwd, q, 0),
        "link": (p, q),
        "linkat": (cwd, p, cwd, q, 0),
        "symlink": (p, q),
        "symlinkat": (p, cwd, q),
        "chmod": (p, 0o600),
        "fchmodat": (cwd, p, 0o600),
        "fchmodat2": (cwd, p, 0o600, 0),
        "fchmod": (FILE_FD, 0o600),
        "chown": (p, 1, 1),
        "lchown": (p, 1, 1),
        "fchownat": (cwd, p, 1, 1, 0),
        "fchown": (FILE_FD, 1, 1),
        "truncate": (p, 10),
        "utime": (p, 0),
        "utimes": (p, 0),
        "futimesat": (cwd, p, 0),
        "utimensat": (cwd, p, 0, 0),
        "setxattr": (p, name, value, 3, 0),
        "lsetxattr": (p, name, value, 3, 0),
        "fsetxattr": (FILE_FD, name, value, 3, 0),
        "removexattr": (p, name),
        "lremovexattr": (p, name),
        "fremovexattr": (FILE_FD, name),
        "setxattrat": (DIR_FD, p, 0, name, xattr_args, XATTR_ARGS.size),
        "removexattrat": (cwd, p, 0, name),
        "stat": (p, buf),
        "lstat": (p, buf),
        "newfstatat": (cwd, p, buf, 0),
        "statx": (cwd, p, 0, 0x7FF, buf),
        "access": (p, W_OK),
        "faccessat": (cwd, p, W_OK),
        "faccessat2": (cwd, p, W_OK, 0),
        "readlink": (p, buf, 100),
        "readlinkat": (cwd, p, buf, 100),
        "chdir": (p,),
        "execve": (p, 0, 0),
        "execveat": (cwd, p, 0, 0, 0),
        "statfs": (p, buf),
        "fstatfs": (FILE_FD, buf),
        "getxattr": (p, name, buf, 10),
        "lgetxattr": (p, name, buf, 10),
        "listxattr": (p, buf, 10),
        "llistxattr": (p, buf, 10),
        "getxattrat": (cwd, p, 0, name, xattr_args, XATTR_ARGS.size),
        "listxattrat": (DIR_FD, p, 0, buf, 10),
        "inotify_add_watch": (9, p, 2),
        "fanotify_mark": (9, 1, 2, cwd, p),
        "bind": (SOCKET_FD, address, 9),
        "connect": (SOCKET_FD, address, 9),
        "sendto": (SOCKET_FD, data, 5, 0, address, 9),
        "sendmsg": (SOCKET_FD, msghdr, 0),
        "sendmmsg": (SOCKET_FD, msghdr, 1, 0),
    }


def _decode(t: FakeTracee, name: str, *args: int) -> tuple[api.Request, Output | None]:
    entry = syscalls.BY_NAME[name]
    assert entry.decoder is not None
    full: Args = (*args, 0, 0, 0, 0, 0, 0)[:6]  # type: ignore[assignment]
    return entry.decoder.decode(Context(t, "vm1"), full)


def test_every_decoder_builds_what_it_declares(tracee: FakeTracee) -> None:
    every = _args_of_every_decoder(tracee)
    assert set(every) == {entry.name for entry in DECODED}, "give the new decoder arguments here"
    built: set[type] = set()
    for entry in DECODED:
        assert entry.decoder is not None
        request, _ = _decode(tracee, entry.name, *every[entry.name])
        assert type(request) in entry.decoder.requests, entry.name
        assert request.caller == api.Caller("vm1", FakeTracee.pid, tracee.credentials()), entry.name
        built.add(type(request))
    assert built >= REQUEST_TYPES - {api.Executed}  # Executed comes from the exec tracer, not a syscall


def test_paths_are_given_from_their_directory(tracee: FakeTracee) -> None:
    request, _ = _decode(tracee, "openat", DIR_FD, tracee.path("a/b"), O_WRONLY)
    assert isinstance(request, api.Open)
    assert request.path == api.VmPath("/srv", "a/b") and request.path.base_id == (1, 3)
    assert request.flags == O_WRONLY and request.via is None
    request, _ = _decode(tracee, "mkdir", tracee.path("/abs"), 0o40755)
    assert request == api.Mkdir(caller=request.caller, path=api.VmPath("/", "/abs"), mode=0o755)
    request, _ = _decode(tracee, "unlinkat", _reg(AT_FDCWD), tracee.path("d"), AT_REMOVEDIR)
    assert isinstance(request, api.Rmdir) and str(request.path) == "/work/d"


def test_the_callers_own_magic_links_are_what_they_name(tracee: FakeTracee) -> None:
    request, _ = _decode(tracee, "open", tracee.path("/proc/self/fd/4"), O_WRONLY)
    assert isinstance(request, api.Open) and isinstance(request.via, api.OpenFile)  # a reopen of fd 4
    request, _ = _decode(tracee, "chmod", tracee.path("/proc/self/fd/4"), 0o600)
    assert isinstance(request, api.Chmod) and str(request.target) == "/srv/file"
    request, _ = _decode(tracee, "chmod", tracee.path("/proc/self/fd/04"), 0o600)  # procfs has no "04"
    assert isinstance(request, api.Chmod) and str(request.target) == "/proc/7/fd/04"
    request, _ = _decode(tracee, "mkdir", tracee.path("/proc/self/cwd/new"), 0o755)
    assert isinstance(request, api.Mkdir) and str(request.path) == "/work/new"
    request, _ = _decode(tracee, "stat", tracee.path("/proc/thread-self/status"), tracee.put(bytes(8)))
    assert isinstance(request, api.Stat) and str(request.path) == "/proc/7/task/8/status"
    request, _ = _decode(tracee, "open", tracee.path("/dev/fd/4"), O_WRONLY)
    assert isinstance(request, api.Open) and isinstance(request.via, api.OpenFile)
    request, _ = _decode(tracee, "open", tracee.path("/dev/stderr"), O_WRONLY)  # not a link in this VM's /dev
    assert isinstance(request, api.Open) and request.via is None and str(request.path) == "/dev/stderr"


def test_outputs_and_passthroughs(tracee: FakeTracee) -> None:
    buffer = tracee.put(bytes(STATFS_SIZE))
    assert _decode(tracee, "statfs", tracee.path("/"), buffer)[1] == Output("buffer", buffer, STATFS_SIZE)
    with pytest.raises(Passthrough):
        _decode(tracee, "fanotify_mark", 9, 1, 2, DIR_FD, 0)
    with pytest.raises(Passthrough):
        _decode(tracee, "sendmmsg", SOCKET_FD, 0, 0, 0)


@pytest.mark.parametrize(
    ("name", "args", "code"),
    [
        ("open", (0, O_WRONLY), errno.EFAULT),
        ("mkdirat", (77, "p", 0o755), errno.EBADF),
        ("mkdirat", (PIPE_FD, "p", 0o755), errno.ENOTDIR),
        ("unlinkat", (_reg(AT_FDCWD), "p", 0x4000), errno.EINVAL),
        ("fchmod", (77, 0o600), errno.EBADF),
        ("connect", (PIPE_FD, "address", 5), errno.ENOTSOCK),
        ("bind", (SOCKET_FD, "address", 200), errno.EINVAL),
        ("openat2", (DIR_FD, "p", "how", 8), errno.EINVAL),
        ("mkdir", ("", 0o755), errno.ENOENT),
    ],
)
def test_malformed_calls_get_the_kernels_errno(
    tracee: FakeTracee, name: str, args: tuple[int | str, ...], code: int
) -> None:
    memory = {
        "p": tracee.path("p"),
        "": tracee.path(""),
        "address": tracee.put(SA_FAMILY.pack(AF_UNIX) + b"/s\0"),
        "how": tracee.put(OPEN_HOW.pack(0, 0, 0)),
    }
    with pytest.raises(CallError) as raised:
        _decode(tracee, name, *(memory[a] if isinstance(a, str) else a for a in args))
    assert raised.value.errno == code
