"""Manager handlers on a real directory tree (hvfs.testing.directory_manager), with no
namespace or privilege, against the kernel: each operation is served on one tree and
made natively on a twin; outcome and resulting trees must be the same."""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hvfs import api
from hvfs.manager.manager import Manager
from hvfs.testing import caller, directory_manager
from tests.unit.native import NativeMemory, native_errno

AT_FDCWD, AT_SYMLINK_NOFOLLOW, RENAME_NOREPLACE = -100, 0x100, 1


def _populate(root: Path) -> None:
    (root / "d" / "sub").mkdir(parents=True)
    (root / "d" / "sub" / "inner").write_text("inner\n")
    (root / "d" / "f").write_text("file content\n")
    (root / "d" / "g").write_text("g\n")
    (root / "empty").mkdir()
    (root / "d" / "link").symlink_to("f")
    (root / "d" / "dangling").symlink_to("nowhere")


@dataclass
class Trees:
    manager: Manager
    served: Path
    native: Path


@pytest.fixture
def trees(tmp_path: Path) -> Iterator[Trees]:
    served, native = tmp_path / "served", tmp_path / "native"
    for root in (served, native):
        root.mkdir()
        _populate(root)
    manager = directory_manager(served)
    yield Trees(manager, served, native)
    manager.vm("vm").close()


def snapshot(root: Path) -> dict[str, Any]:
    """What a tree holds, as the kernel shows it: kinds, modes, owners, sizes, contents
    and link targets (not inode numbers or times, which two trees cannot share)."""
    found: dict[str, Any] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        entry: tuple[Any, ...] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        if stat.S_ISREG(st.st_mode):
            entry += (path.read_bytes(), st.st_nlink)
        elif stat.S_ISLNK(st.st_mode):
            entry += (os.readlink(path),)
        found[str(path.relative_to(root))] = entry
    return found


def at(path: str) -> api.VmPath:
    return api.VmPath("/", path)


@dataclass(frozen=True)
class Op:
    request: Callable[[], api.Request]
    native: Callable[[Path], object]  # raises OSError as the kernel answers


def _native_at(call: str, *parts: Callable[[Path, NativeMemory], int]) -> Callable[[Path], object]:
    """A syscall Python has no function for, on the native tree."""

    def run(root: Path) -> object:
        memory = NativeMemory()
        code = native_errno(call, *(part(root, memory) for part in parts))
        if code:
            raise OSError(code, os.strerror(code))
        return None

    return run


def _path(name: str) -> Callable[[Path, NativeMemory], int]:
    return lambda root, memory: memory.path(str(root) + name)


def _int(value: int) -> Callable[[Path, NativeMemory], int]:
    return lambda root, memory: value


def _open(flags: int, mode: int = 0) -> Callable[[str], Op]:
    def make(name: str) -> Op:
        return Op(
            lambda: api.Open(caller=caller(), path=at(name), flags=flags, mode=mode),
            lambda root: os.close(os.open(str(root) + name, flags | os.O_CLOEXEC, mode)),
        )

    return make


CREATE = os.O_WRONLY | os.O_CREAT
OPS: dict[str, Op] = {
    "create": _open(CREATE, 0o640)("/d/new"),
    "create exclusive, existing": _open(CREATE | os.O_EXCL, 0o600)("/d/f"),
    "create through a dangling symlink": _open(CREATE, 0o600)("/d/dangling"),
    "create exclusive through a symlink": _open(CREATE | os.O_EXCL, 0o600)("/d/dangling"),
    "create in a missing directory": _open(CREATE, 0o600)("/nowhere/x"),
    "create under a file": _open(CREATE, 0o600)("/d/f/x"),
    "create with a trailing slash": _open(CREATE, 0o600)("/d/newdir/"),
    "truncate by open": _open(os.O_WRONLY | os.O_TRUNC)("/d/f"),
    "open a directory for writing": _open(os.O_WRONLY)("/d"),
    "open a symlink with O_NOFOLLOW": _open(os.O_WRONLY | os.O_NOFOLLOW)("/d/link"),
    "open for reading": _open(os.O_RDONLY)("/d/f"),
    "open missing for reading": _open(os.O_RDONLY)("/d/missing"),
    "open a file as a directory": _open(os.O_RDONLY | os.O_DIRECTORY)("/d/f"),
    "mkdir": Op(lambda: api.Mkdir(caller=caller(), path=at("/d/m"), mode=0o750), lambda r: os.mkdir(f"{r}/d/m", 0o750)),
    "mkdir existing": Op(
        lambda: api.Mkdir(caller=caller(), path=at("/d/f"), mode=0o755), lambda r: os.mkdir(f"{r}/d/f")
    ),
    "mkdir in a missing parent": Op(
        lambda: api.Mkdir(caller=caller(), path=at("/no/m"), mode=0o755), lambda r: os.mkdir(f"{r}/no/m")
    ),
    "mkdir on a dangling symlink": Op(
        lambda: api.Mkdir(caller=caller(), path=at("/d/dangling"), mode=0o755), lambda r: os.mkdir(f"{r}/d/dangling")
    ),
    "rmdir": Op(lambda: api.Rmdir(caller=caller(), path=at("/empty")), lambda r: os.rmdir(f"{r}/empty")),
    "rmdir not empty": Op(lambda: api.Rmdir(caller=caller(), path=at("/d")), lambda r: os.rmdir(f"{r}/d")),
    "rmdir a file": Op(lambda: api.Rmdir(caller=caller(), path=at("/d/f")), lambda r: os.rmdir(f"{r}/d/f")),
    "rmdir dot": Op(lambda: api.Rmdir(caller=caller(), path=at("/empty/.")), lambda r: os.rmdir(f"{r}/empty/.")),
    "unlink": Op(lambda: api.Unlink(caller=caller(), path=at("/d/g")), lambda r: os.unlink(f"{r}/d/g")),
    "unlink a symlink": Op(lambda: api.Unlink(caller=caller(), path=at("/d/link")), lambda r: os.unlink(f"{r}/d/link")),
    "unlink a directory": Op(lambda: api.Unlink(caller=caller(), path=at("/empty")), lambda r: os.unlink(f"{r}/empty")),
    "unlink missing": Op(lambda: api.Unlink(caller=caller(), path=at("/d/x")), lambda r: os.unlink(f"{r}/d/x")),
    "unlink with a trailing slash": Op(
        lambda: api.Unlink(caller=caller(), path=at("/d/f/")), lambda r: os.unlink(f"{r}/d/f/")
    ),
    "rename": Op(
        lambda: api.Rename(caller=caller(), old=at("/d/g"), new=at("/d/sub/h")),
        lambda r: os.rename(f"{r}/d/g", f"{r}/d/sub/h"),
    ),
    "rename over a file": Op(
        lambda: api.Rename(caller=caller(), old=at("/d/g"), new=at("/d/f")), lambda r: os.rename(f"{r}/d/g", f"{r}/d/f")
    ),
    "rename a file over a directory": Op(
        lambda: api.Rename(caller=caller(), old=at("/d/g"), new=at("/empty")),
        lambda r: os.rename(f"{r}/d/g", f"{r}/empty"),
    ),
    "rename a directory into itself": Op(
        lambda: api.Rename(caller=caller(), old=at("/d"), new=at("/d/sub/d")),
        lambda r: os.rename(f"{r}/d", f"{r}/d/sub/d"),
    ),
    "rename without replacing": Op(
        lambda: api.Rename(caller=caller(), old=at("/d/g"), new=at("/d/f"), flags=RENAME_NOREPLACE),
        _native_at("renameat2", _int(AT_FDCWD), _path("/d/g"), _int(AT_FDCWD), _path("/d/f"), _int(RENAME_NOREPLACE)),
    ),
    "link": Op(
        lambda: api.Link(caller=caller(), old=at("/d/f"), new=at("/d/f2")), lambda r: os.link(f"{r}/d/f", f"{r}/d/f2")
    ),
    "link onto an existing name": Op(
        lambda: api.Link(caller=caller(), old=at("/d/f"), new=at("/d/g")), lambda r: os.link(f"{r}/d/f", f"{r}/d/g")
    ),
    "link a directory": Op(
        lambda: api.Link(caller=caller(), old=at("/d/sub"), new=at("/d/sub2")),
        lambda r: os.link(f"{r}/d/sub", f"{r}/d/sub2"),
    ),
    "symlink": Op(
        lambda: api.Symlink(caller=caller(), target="../x/y", path=at("/d/s")),
        lambda r: os.symlink("../x/y", f"{r}/d/s"),
    ),
    "symlink onto an existing name": Op(
        lambda: api.Symlink(caller=caller(), target="f", path=at("/d/g")), lambda r: os.symlink("f", f"{r}/d/g")
    ),
    "chmod": Op(
        lambda: api.Chmod(caller=caller(), target=at("/d/f"), mode=0o4711), lambda r: os.chmod(f"{r}/d/f", 0o4711)
    ),
    "chmod through a symlink": Op(
        lambda: api.Chmod(caller=caller(), target=at("/d/link"), mode=0o600), lambda r: os.chmod(f"{r}/d/link", 0o600)
    ),
    "chmod a symlink itself": Op(
        lambda: api.Chmod(caller=caller(), target=at("/d/link"), mode=0o600, follow=False),
        _native_at("fchmodat2", _int(AT_FDCWD), _path("/d/link"), _int(0o600), _int(AT_SYMLINK_NOFOLLOW)),
    ),
    "chmod missing": Op(
        lambda: api.Chmod(caller=caller(), target=at("/d/x"), mode=0o600), lambda r: os.chmod(f"{r}/d/x", 0o600)
    ),
    "chown to oneself": Op(
        lambda: api.Chown(caller=caller(), target=at("/d/f"), uid=os.getuid(), gid=os.getgid()),
        lambda r: os.chown(f"{r}/d/f", os.getuid(), os.getgid()),
    ),
    "chown to another user": Op(
        lambda: api.Chown(caller=caller(), target=at("/d/f"), uid=4321, gid=0xFFFFFFFF),
        lambda r: os.chown(f"{r}/d/f", 4321, -1),
    ),
    "truncate": Op(
        lambda: api.Truncate(caller=caller(), path=at("/d/f"), length=4), lambda r: os.truncate(f"{r}/d/f", 4)
    ),
    "truncate a directory": Op(
        lambda: api.Truncate(caller=caller(), path=at("/d"), length=0), lambda r: os.truncate(f"{r}/d", 0)
    ),
    "truncate to a negative length": Op(
        lambda: api.Truncate(caller=caller(), path=at("/d/f"), length=-1), lambda r: os.truncate(f"{r}/d/f", -1)
    ),
}


def _code(call: Callable[[], object]) -> int:
    try:
        call()
    except OSError as e:
        return e.errno or -1
    return 0


def _served(trees: Trees, op: Op) -> int:
    response = trees.manager.handle_request(op.request())
    if isinstance(response, api.Fd):
        os.close(response.fd)
    if isinstance(response, api.Continue):  # the kernel's to run, on the VM's boot view: this tree
        return _code(lambda: op.native(trees.served))
    return response.errno if isinstance(response, api.Errno) else 0


@pytest.mark.parametrize("name", OPS)
def test_a_served_operation_does_what_the_kernel_does(name: str, trees: Trees) -> None:
    op = OPS[name]
    expected = _code(lambda: op.native(trees.native))
    got = _served(trees, op)
    assert errno.errorcode.get(got, got) == errno.errorcode.get(expected, expected), name
    assert snapshot(trees.served) == snapshot(trees.native)


def test_a_created_file_takes_the_callers_umask(trees: Trees) -> None:
    creds = caller().creds
    assert creds is not None
    masked = api.Caller("vm", os.getpid(), dataclasses.replace(creds, umask=0o077))
    response = trees.manager.handle_request(api.Open(caller=masked, path=at("/d/masked"), flags=CREATE, mode=0o666))
    assert isinstance(response, api.Fd)
    os.close(response.fd)
    old = os.umask(0o077)
    try:
        os.close(os.open(trees.native / "d" / "masked", CREATE | os.O_CLOEXEC, 0o666))
    finally:
        os.umask(old)
    assert snapshot(trees.served) == snapshot(trees.native)


def test_answers_that_carry_data(trees: Trees) -> None:
    response = trees.manager.handle_request(api.Readlink(caller=caller(), path=at("/d/link")))
    assert response == api.Data(os.fsencode(os.readlink(trees.native / "d" / "link")))
    response = trees.manager.handle_request(api.Readlink(caller=caller(), path=at("/d/f")))
    assert response == api.Errno(_code(lambda: os.readlink(trees.native / "d" / "f")))
    response = trees.manager.handle_request(api.Stat(caller=caller(), path=at("/d/link"), follow=False))
    assert isinstance(response, api.StatResult)
    native = os.lstat(trees.native / "d" / "link")
    assert (response.stat.st_mode, response.stat.st_size) == (native.st_mode, native.st_size)
    response = trees.manager.handle_request(api.Open(caller=caller(), path=at("/d/f"), flags=os.O_RDONLY))
    assert isinstance(response, api.Fd)
    with os.fdopen(response.fd, "rb") as f:
        assert f.read() == (trees.native / "d" / "f").read_bytes()


def test_paths_never_leave_the_vms_root(trees: Trees) -> None:
    """``..``, absolute symlinks and magic links resolve inside the tree, as the kernel
    resolves them for a VM (RESOLVE_IN_ROOT): never to the host's files."""
    (trees.served / "etc").mkdir()
    (trees.served / "etc" / "passwd").write_text("the VM's own\n")
    (trees.served / "d" / "escape").symlink_to("/etc/passwd")
    for path in ("/d/escape", "/../../../../etc/passwd", "/d/../../etc/passwd"):
        response = trees.manager.handle_request(api.Open(caller=caller(), path=at(path), flags=os.O_RDONLY))
        assert isinstance(response, api.Fd), (path, response)
        with os.fdopen(response.fd, "rb") as f:
            assert f.read() == b"the VM's own\n", path
    relative = api.VmPath("/d/sub", "../../../../etc/passwd")
    response = trees.manager.handle_request(api.Open(caller=caller(), path=relative, flags=os.O_WRONLY | os.O_APPEND))
    assert isinstance(response, api.Fd)
    os.write(response.fd, b"appended\n")
    os.close(response.fd)
    assert (trees.served / "etc" / "passwd").read_text() == "the VM's own\nappended\n"


def test_a_base_directory_that_is_not_the_vms_is_refused(trees: Trees) -> None:
    """A relative path carries the identity of its base: a directory fd from outside the
    VM whose path names another directory inside it is not taken for that one."""
    outside = os.stat(trees.native / "d")
    path = api.VmPath("/d", "new", (outside.st_dev, outside.st_ino))
    response = trees.manager.handle_request(api.Mkdir(caller=caller(), path=path, mode=0o755))
    assert response == api.Errno(errno.EACCES)
    assert not (trees.served / "d" / "new").exists()
    inside = os.stat(trees.served / "d")
    path = api.VmPath("/d", "new", (inside.st_dev, inside.st_ino))
    assert trees.manager.handle_request(api.Mkdir(caller=caller(), path=path, mode=0o755)) == api.Value(0)


def test_a_vm_the_manager_does_not_know_gets_enosys(trees: Trees) -> None:
    request = api.Mkdir(caller=api.Caller("other", 1), path=at("/x"), mode=0o755)
    assert trees.manager.handle_request(request) == api.Errno(errno.ENOSYS)
