"""Decoders: a notification's raw arguments to an HVFS API request.

Decoders only unpack arguments and read the thread's memory; every decision is the
manager's. A malformed call (bad pointer, bad flags the kernel checks before any lookup)
raises ``CallError`` and is answered as the kernel would answer it.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from hvfs import api
from hvfs.intercept.tracee import AT_FDCWD, CallError, Tracee, signed32

AT_SYMLINK_NOFOLLOW = 0x100
AT_REMOVEDIR = 0x200
AT_SYMLINK_FOLLOW = 0x400
AT_EMPTY_PATH = 0x1000
OPEN_HOW_SIZE = 24
RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, RESOLVE_BENEATH, RESOLVE_IN_ROOT = 0x02, 0x04, 0x08, 0x10
XATTR_SIZE_MAX = 65536
XATTR_NAME_MAX = 255
ID_MASK = 0xFFFFFFFF  # uid_t and gid_t are unsigned 32-bit; the registers hold more

Args = tuple[int, int, int, int, int, int]


class Passthrough(Exception):
    """Nothing to decide: let the call continue without asking the manager."""


@dataclass(frozen=True)
class Output:
    """Where a result goes in the caller's memory."""

    kind: str  # "stat", "statx", "buffer", or "msg_len" (sendmmsg's count of the one message sent)
    address: int
    size: int = 0


Decoded = tuple[api.Request, Output | None]


class Context:
    """One notification being decoded."""

    def __init__(self, tracee: Tracee, vm: str) -> None:
        self.tracee = tracee
        self.vm = vm

    def caller(self) -> api.Caller:
        # Every served request resolves paths, and search permission depends on who asks.
        return api.Caller(self.vm, self.tracee.pid, self.tracee.credentials())

    def path(self, address: int, dirfd: int = AT_FDCWD) -> api.VmPath:
        return self.tracee.vm_path(signed32(dirfd), self.tracee.read_path(address))

    def opened(self, address: int, dirfd: int = AT_FDCWD) -> tuple[api.VmPath, api.OpenFile | None]:
        """The path an open names, and the caller's own open file when that path is a
        magic link to one of its fds (the open then reopens that file)."""
        given = self.tracee.given_path(signed32(dirfd), self.tracee.read_path(address))
        own = self.tracee.own_file(given)
        return (given, own) if own is not None else (self.tracee.resolved(given), None)

    def target(self, dirfd: int, address: int, flags: int) -> api.Target:
        """A path, or the fd itself for AT_EMPTY_PATH with an empty path."""
        if flags & AT_EMPTY_PATH:
            path = self.tracee.read_path(address, empty_ok=True)
            if not path:
                return self.tracee.take_fd(signed32(dirfd))
            return self.tracee.vm_path(signed32(dirfd), path)
        return self.path(address, dirfd)

    def open_file(self, fd: int) -> api.OpenFile:
        """The fd of a call that acts on an open file only: O_PATH fds are EBADF."""
        return self.tracee.take_fd(signed32(fd), path_ok=False)

    def string(self, address: int, limit: int) -> str:
        name = self.tracee.read_path(address, empty_ok=True)
        if not name or len(os.fsencode(name)) > limit:
            raise CallError(errno.ERANGE)
        return name


def _check_flags(flags: int, allowed: int) -> int:
    flags &= 0xFFFFFFFF
    if flags & ~allowed:
        raise CallError(errno.EINVAL)
    return flags


def _open(c: Context, dirfd: int, path_at: int, flags: int, mode: int) -> Decoded:
    caller = c.caller()
    path, via = c.opened(path_at, dirfd)
    return api.Open(caller=caller, path=path, flags=flags & 0xFFFFFFFF, mode=mode & 0xFFFFFFFF, via=via), None


def _openat2(c: Context, a: Args) -> Decoded:
    dirfd, path_at, how_at, size = signed32(a[0]), a[1], a[2], a[3]
    if size < OPEN_HOW_SIZE:
        raise CallError(errno.EINVAL)
    if size > os.sysconf("SC_PAGE_SIZE"):
        raise CallError(errno.E2BIG)
    raw = c.tracee.read(how_at, size)
    if any(raw[OPEN_HOW_SIZE:]):
        raise CallError(errno.E2BIG)
    flags, mode, resolve = struct.unpack("<QQQ", raw[:OPEN_HOW_SIZE])
    given = c.tracee.read_path(path_at)
    if resolve & (RESOLVE_BENEATH | RESOLVE_IN_ROOT):
        path = c.tracee.located(dirfd, given)  # even an absolute path is the dirfd's
        via = None
    else:
        magic = not resolve & (RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS)
        path = c.tracee.given_path(dirfd, given)
        via = c.tracee.own_file(path) if magic else None
        if via is None:
            path = c.tracee.resolved(path, magic=magic)
    return api.Open(caller=c.caller(), path=path, flags=flags, mode=mode, resolve=resolve, legacy=False, via=via), None


def _unlinkat(c: Context, a: Args) -> Decoded:
    flags = _check_flags(a[2], AT_REMOVEDIR)
    path = c.path(a[1], a[0])
    caller = c.caller()
    if flags & AT_REMOVEDIR:
        return api.Rmdir(caller=caller, path=path), None
    return api.Unlink(caller=caller, path=path), None


def _linkat(c: Context, a: Args) -> Decoded:
    flags = _check_flags(a[4], AT_SYMLINK_FOLLOW | AT_EMPTY_PATH)
    follow = bool(flags & AT_SYMLINK_FOLLOW)
    old: api.Target
    if follow and not flags & AT_EMPTY_PATH:
        # An O_TMPFILE file, or another deleted one, is linked in by its fd's magic link.
        given = c.tracee.given_path(signed32(a[0]), c.tracee.read_path(a[1]))
        old = c.tracee.own_file(given) or c.tracee.resolved(given)
    else:
        old = c.target(a[0], a[1], flags)
    new = c.path(a[3], a[2])
    return api.Link(caller=c.caller(), old=old, new=new, follow=follow), None


def _chmod_at(c: Context, dirfd: int, path_at: int, mode: int, flags: int) -> Decoded:
    flags = _check_flags(flags, AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH)
    target = c.target(dirfd, path_at, flags)
    follow = not flags & AT_SYMLINK_NOFOLLOW
    return api.Chmod(caller=c.caller(), target=target, mode=mode & 0o7777, follow=follow), None


def _chown_at(c: Context, dirfd: int, path_at: int, uid: int, gid: int, flags: int) -> Decoded:
    flags = _check_flags(flags, AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH)
    target = c.target(dirfd, path_at, flags)
    return api.Chown(
        caller=c.caller(),
        target=target,
        uid=uid & ID_MASK,
        gid=gid & ID_MASK,
        follow=not flags & AT_SYMLINK_NOFOLLOW,
    ), None


def _timespecs(c: Context, address: int) -> tuple[tuple[int, int], tuple[int, int]] | None:
    if not address:
        return None
    a_sec, a_nsec, m_sec, m_nsec = struct.unpack("<qqqq", c.tracee.read(address, 32))
    return (a_sec, a_nsec), (m_sec, m_nsec)


def _timevals(c: Context, address: int) -> tuple[tuple[int, int], tuple[int, int]] | None:
    if not address:
        return None
    a_sec, a_usec, m_sec, m_usec = struct.unpack("<qqqq", c.tracee.read(address, 32))
    if not (0 <= a_usec < 1_000_000 and 0 <= m_usec < 1_000_000):
        raise CallError(errno.EINVAL)
    return (a_sec, a_usec * 1000), (m_sec, m_usec * 1000)


def _utime(c: Context, a: Args) -> Decoded:
    times = None
    if a[1]:
        actime, modtime = struct.unpack("<qq", c.tracee.read(a[1], 16))
        times = (actime, 0), (modtime, 0)
    return api.Utimens(caller=c.caller(), target=c.path(a[0]), times=times), None


def _utimensat(c: Context, a: Args) -> Decoded:
    dirfd, path_at, times_at = signed32(a[0]), a[1], a[2]
    flags = _check_flags(a[3], AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH)
    times = _timespecs(c, times_at)
    target: api.Target
    if not path_at:  # futimens(): the fd itself
        if dirfd == AT_FDCWD:
            raise CallError(errno.EFAULT)
        target = c.open_file(dirfd)
    else:
        target = c.target(dirfd, path_at, flags)
    follow = not flags & AT_SYMLINK_NOFOLLOW
    return api.Utimens(caller=c.caller(), target=target, times=times, follow=follow), None


def _setxattr(c: Context, target: api.Target, a: Args, *, follow: bool) -> Decoded:
    name = c.string(a[1], XATTR_NAME_MAX)
    size = a[3]
    if size > XATTR_SIZE_MAX:
        raise CallError(errno.E2BIG)
    value = c.tracee.read(a[2], size) if size else b""
    flags = signed32(a[4])
    return api.SetXattr(caller=c.caller(), target=target, name=name, value=value, flags=flags, follow=follow), None


def _removexattr(c: Context, target: api.Target, a: Args, *, follow: bool) -> Decoded:
    name = c.string(a[1], XATTR_NAME_MAX)
    return api.RemoveXattr(caller=c.caller(), target=target, name=name, follow=follow), None


def _stat(c: Context, path: api.VmPath, buffer: int, follow: bool) -> Decoded:
    return api.Stat(caller=c.caller(), path=path, follow=follow), Output("stat", buffer)


def _newfstatat(c: Context, a: Args) -> Decoded:
    flags = _check_flags(a[3], AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | 0x800)  # 0x800: AT_NO_AUTOMOUNT
    return _stat(c, c.path(a[1], a[0]), a[2], follow=not flags & AT_SYMLINK_NOFOLLOW)


AT_NO_AUTOMOUNT = 0x800
AT_STATX_SYNC_TYPE = 0x6000
STATX_RESERVED = 0x80000000


def _statx(c: Context, a: Args) -> Decoded:
    # Checked here as statx(2) checks them for a path: the manager serves it on an fd,
    # a form in which this kernel lets bad flags through.
    flags = _check_flags(a[2], AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | AT_EMPTY_PATH | AT_STATX_SYNC_TYPE)
    if flags & AT_STATX_SYNC_TYPE == AT_STATX_SYNC_TYPE or a[3] & STATX_RESERVED:
        raise CallError(errno.EINVAL)
    path = c.path(a[1], a[0])
    request = api.Statx(caller=c.caller(), path=path, flags=flags & ~AT_EMPTY_PATH, mask=a[3] & 0xFFFFFFFF)
    return request, Output("statx", a[4])


def _access(c: Context, dirfd: int, path_at: int, mode: int, flags: int) -> Decoded:
    flags = _check_flags(flags, 0x200 | AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH)  # 0x200: AT_EACCESS
    if mode & ~0o7:
        raise CallError(errno.EINVAL)
    return api.Access(caller=c.caller(), path=c.target(dirfd, path_at, flags), mode=mode, flags=flags), None


def _readlink(c: Context, dirfd: int, path_at: int, buffer: int, size: int) -> Decoded:
    if signed32(size) <= 0:
        raise CallError(errno.EINVAL)
    # An empty path reads the link an O_PATH dirfd stands for, with no AT_EMPTY_PATH needed.
    target = c.target(dirfd, path_at, AT_EMPTY_PATH)
    return api.Readlink(caller=c.caller(), path=target), Output("buffer", buffer, size)


def _execveat(c: Context, a: Args) -> Decoded:
    flags = signed32(a[4])
    path = c.tracee.read_path(a[1], empty_ok=bool(flags & AT_EMPTY_PATH))
    if not path:  # fexecve(): a memfd's content, or a file's written since it was opened
        return api.Exec(caller=c.caller(), path=c.tracee.take_fd(signed32(a[0]))), None
    return api.Exec(caller=c.caller(), path=_program(c, c.tracee.given_path(signed32(a[0]), path)),
                    follow=not flags & AT_SYMLINK_NOFOLLOW), None  # fmt: skip


def _execve(c: Context, a: Args) -> Decoded:
    return api.Exec(caller=c.caller(), path=_program(c, c.tracee.given_path(AT_FDCWD, c.tracee.read_path(a[0])))), None


def _program(c: Context, given: api.VmPath) -> api.Target:
    """The file an exec names: a magic link to one of the caller's fds whose file no VM
    path names (a memfd, a deleted file) is the open file itself, which services must see
    too; otherwise the path, with the caller's own /proc links replaced by what they name."""
    path = c.tracee.resolved(given)
    if str(path).startswith("/proc/"):
        own = c.tracee.own_file(given)
        if own is not None:
            return own
    return path


def _lookup(call: str, *, path_arg: int, dirfd_arg: int | None = None, follow: bool = True) -> Decoder:
    def decode(c: Context, a: Args) -> Decoded:
        dirfd = a[dirfd_arg] if dirfd_arg is not None else AT_FDCWD
        return api.Lookup(caller=c.caller(), path=c.path(a[path_arg], dirfd), follow=follow, call=call), None

    return decode


def _fanotify_mark(c: Context, a: Args) -> Decoded:
    if not a[4]:
        raise Passthrough()  # marks the dirfd itself
    return api.Lookup(caller=c.caller(), path=c.path(a[4], a[3]), follow=True, call="fanotify_mark"), None


Decoder = Callable[[Context, Args], Decoded]

CREAT_FLAGS = os.O_CREAT | os.O_WRONLY | os.O_TRUNC

DECODERS: dict[str, Decoder] = {
    "open": lambda c, a: _open(c, AT_FDCWD, a[0], a[1], a[2]),
    "openat": lambda c, a: _open(c, a[0], a[1], a[2], a[3]),
    "creat": lambda c, a: _open(c, AT_FDCWD, a[0], CREAT_FLAGS, a[1]),
    "openat2": _openat2,
    "mkdir": lambda c, a: (api.Mkdir(caller=c.caller(), path=c.path(a[0]), mode=a[1] & 0o7777), None),
    "mkdirat": lambda c, a: (api.Mkdir(caller=c.caller(), path=c.path(a[1], a[0]), mode=a[2] & 0o7777), None),
    "mknod": lambda c, a: (
        api.Mknod(caller=c.caller(), path=c.path(a[0]), mode=a[1] & 0xFFFFFFFF, device=a[2]),
        None,
    ),
    "mknodat": lambda c, a: (
        api.Mknod(caller=c.caller(), path=c.path(a[1], a[0]), mode=a[2] & 0xFFFFFFFF, device=a[3]),
        None,
    ),
    "unlink": lambda c, a: (api.Unlink(caller=c.caller(), path=c.path(a[0])), None),
    "rmdir": lambda c, a: (api.Rmdir(caller=c.caller(), path=c.path(a[0])), None),
    "unlinkat": _unlinkat,
    "rename": lambda c, a: (api.Rename(caller=c.caller(), old=c.path(a[0]), new=c.path(a[1])), None),
    "renameat": lambda c, a: (
        api.Rename(caller=c.caller(), old=c.path(a[1], a[0]), new=c.path(a[3], a[2])),
        None,
    ),
    "renameat2": lambda c, a: (
        api.Rename(caller=c.caller(), old=c.path(a[1], a[0]), new=c.path(a[3], a[2]), flags=a[4] & 0xFFFFFFFF),
        None,
    ),
    "link": lambda c, a: (api.Link(caller=c.caller(), old=c.path(a[0]), new=c.path(a[1])), None),
    "linkat": _linkat,
    "symlink": lambda c, a: (
        api.Symlink(caller=c.caller(), target=c.tracee.read_path(a[0]), path=c.path(a[1])),
        None,
    ),
    "symlinkat": lambda c, a: (
        api.Symlink(caller=c.caller(), target=c.tracee.read_path(a[0]), path=c.path(a[2], a[1])),
        None,
    ),
    "chmod": lambda c, a: _chmod_at(c, AT_FDCWD, a[0], a[1], 0),
    "fchmodat": lambda c, a: _chmod_at(c, a[0], a[1], a[2], 0),
    "fchmodat2": lambda c, a: _chmod_at(c, a[0], a[1], a[2], a[3]),
    "chown": lambda c, a: _chown_at(c, AT_FDCWD, a[0], a[1], a[2], 0),
    "lchown": lambda c, a: _chown_at(c, AT_FDCWD, a[0], a[1], a[2], AT_SYMLINK_NOFOLLOW),
    "fchownat": lambda c, a: _chown_at(c, a[0], a[1], a[2], a[3], a[4]),
    "truncate": lambda c, a: (
        api.Truncate(caller=c.caller(), path=c.path(a[0]), length=struct.unpack("<q", struct.pack("<Q", a[1]))[0]),
        None,
    ),
    "utime": _utime,
    "utimes": lambda c, a: (api.Utimens(caller=c.caller(), target=c.path(a[0]), times=_timevals(c, a[1])), None),
    "futimesat": lambda c, a: (
        api.Utimens(caller=c.caller(), target=c.path(a[1], a[0]), times=_timevals(c, a[2])),
        None,
    ),
    "utimensat": _utimensat,
    "setxattr": lambda c, a: _setxattr(c, c.path(a[0]), a, follow=True),
    "lsetxattr": lambda c, a: _setxattr(c, c.path(a[0]), a, follow=False),
    "fsetxattr": lambda c, a: _setxattr(c, c.open_file(a[0]), a, follow=True),
    "removexattr": lambda c, a: _removexattr(c, c.path(a[0]), a, follow=True),
    "lremovexattr": lambda c, a: _removexattr(c, c.path(a[0]), a, follow=False),
    "fremovexattr": lambda c, a: _removexattr(c, c.open_file(a[0]), a, follow=True),
    "fchmod": lambda c, a: (
        api.Chmod(caller=c.caller(), target=c.open_file(a[0]), mode=a[1] & 0o7777),
        None,
    ),
    "fchown": lambda c, a: (
        api.Chown(caller=c.caller(), target=c.open_file(a[0]), uid=a[1] & ID_MASK, gid=a[2] & ID_MASK),
        None,
    ),
    "stat": lambda c, a: _stat(c, c.path(a[0]), a[1], follow=True),
    "lstat": lambda c, a: _stat(c, c.path(a[0]), a[1], follow=False),
    "newfstatat": _newfstatat,
    "statx": _statx,
    "access": lambda c, a: _access(c, AT_FDCWD, a[0], a[1], 0),
    "faccessat": lambda c, a: _access(c, a[0], a[1], a[2], 0),
    "faccessat2": lambda c, a: _access(c, a[0], a[1], a[2], a[3]),
    "readlink": lambda c, a: _readlink(c, AT_FDCWD, a[0], a[1], a[2]),
    "readlinkat": lambda c, a: _readlink(c, a[0], a[1], a[2], a[3]),
    "chdir": lambda c, a: (api.Chdir(caller=c.caller(), path=c.path(a[0])), None),
    "execve": _execve,
    "execveat": _execveat,
    "statfs": lambda c, a: (api.Statfs(caller=c.caller(), path=c.path(a[0])), Output("buffer", a[1], 120)),
    "fstatfs": lambda c, a: (
        api.Statfs(caller=c.caller(), path=c.tracee.take_fd(signed32(a[0]))),
        Output("buffer", a[1], 120),
    ),
    "getxattr": _lookup("getxattr", path_arg=0),
    "lgetxattr": _lookup("lgetxattr", path_arg=0, follow=False),
    "listxattr": _lookup("listxattr", path_arg=0),
    "llistxattr": _lookup("llistxattr", path_arg=0, follow=False),
    "inotify_add_watch": _lookup("inotify_add_watch", path_arg=1),
    "fanotify_mark": _fanotify_mark,
}  # and the socket calls: decode_sockets.DECODERS
