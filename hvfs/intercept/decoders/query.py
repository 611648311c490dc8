"""Reads, and the checks of calls the kernel then performs itself: stat, statx, access,
readlink, statfs, chdir, exec and path lookups (``hvfs.manager.handlers.query``)."""

from __future__ import annotations

import errno

from hvfs import api
from hvfs._sys.abi import (
    AT_EACCESS,
    AT_EMPTY_PATH,
    AT_FDCWD,
    AT_NO_AUTOMOUNT,
    AT_STATX_SYNC_TYPE,
    AT_SYMLINK_NOFOLLOW,
    S_IRWXO,
    STATFS_SIZE,
    STATX__RESERVED,
    XATTR_ARGS,
    XATTR_NAME_MAX,
)
from hvfs.intercept.decoders.context import (
    Args,
    Context,
    Decoded,
    Output,
    Passthrough,
    check_flags,
    decodes,
    signed32,
    unsigned32,
)
from hvfs.intercept.decoders.tracee import CallError


def _stat(c: Context, path: api.VmPath, buffer: int, follow: bool) -> Decoded:
    return api.Stat(caller=c.caller(), path=path, follow=follow), Output("stat", buffer)


@decodes("Stat")
def stat(c: Context, a: Args) -> Decoded:
    return _stat(c, c.path(a[0]), a[1], follow=True)


@decodes("Stat")
def lstat(c: Context, a: Args) -> Decoded:
    return _stat(c, c.path(a[0]), a[1], follow=False)


@decodes("Stat")
def newfstatat(c: Context, a: Args) -> Decoded:
    flags = check_flags(a[3], AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT)
    return _stat(c, c.path(a[1], a[0]), a[2], follow=not flags & AT_SYMLINK_NOFOLLOW)


@decodes("Statx")
def statx(c: Context, a: Args) -> Decoded:
    # Checked here as statx(2) checks them for a path: the manager serves it on an fd,
    # a form in which this kernel lets bad flags through.
    flags = check_flags(a[2], AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | AT_EMPTY_PATH | AT_STATX_SYNC_TYPE)
    if flags & AT_STATX_SYNC_TYPE == AT_STATX_SYNC_TYPE or a[3] & STATX__RESERVED:
        raise CallError(errno.EINVAL)
    path = c.path(a[1], a[0])
    request = api.Statx(caller=c.caller(), path=path, flags=flags & ~AT_EMPTY_PATH, mask=unsigned32(a[3]))
    return request, Output("statx", a[4])


def _access(c: Context, dirfd: int, path_at: int, mode: int, flags: int) -> Decoded:
    flags = check_flags(flags, AT_EACCESS | AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH)
    if mode & ~S_IRWXO:
        raise CallError(errno.EINVAL)
    return api.Access(caller=c.caller(), path=c.target(dirfd, path_at, flags), mode=mode, flags=flags), None


@decodes("Access")
def access(c: Context, a: Args) -> Decoded:
    return _access(c, AT_FDCWD, a[0], a[1], 0)


@decodes("Access")
def faccessat(c: Context, a: Args) -> Decoded:
    return _access(c, a[0], a[1], a[2], 0)


@decodes("Access")
def faccessat2(c: Context, a: Args) -> Decoded:
    return _access(c, a[0], a[1], a[2], a[3])


def _readlink(c: Context, dirfd: int, path_at: int, buffer: int, size: int) -> Decoded:
    if signed32(size) <= 0:
        raise CallError(errno.EINVAL)
    # An empty path reads the link an O_PATH dirfd stands for, with no AT_EMPTY_PATH needed.
    target = c.target(dirfd, path_at, AT_EMPTY_PATH)
    return api.Readlink(caller=c.caller(), path=target), Output("buffer", buffer, size)


@decodes("Readlink")
def readlink(c: Context, a: Args) -> Decoded:
    return _readlink(c, AT_FDCWD, a[0], a[1], a[2])


@decodes("Readlink")
def readlinkat(c: Context, a: Args) -> Decoded:
    return _readlink(c, a[0], a[1], a[2], a[3])


@decodes("Statfs")
def statfs(c: Context, a: Args) -> Decoded:
    return api.Statfs(caller=c.caller(), path=c.path(a[0])), Output("buffer", a[1], STATFS_SIZE)


@decodes("Statfs")
def fstatfs(c: Context, a: Args) -> Decoded:
    return api.Statfs(caller=c.caller(), path=c.fd(a[0])), Output("buffer", a[1], STATFS_SIZE)


@decodes("Chdir")
def chdir(c: Context, a: Args) -> Decoded:
    return api.Chdir(caller=c.caller(), path=c.path(a[0])), None


def _program(c: Context, given: api.VmPath) -> api.Target:
    """The file an exec names: a magic link to one of the caller's fds whose file no VM
    path names (a memfd, a deleted file) is the open file itself, which services must see
    too; otherwise the path, with the caller's own /proc links replaced by what they name."""
    path = c.resolved(given)
    if str(path).startswith("/proc/"):
        own = c.own_file(given)
        if own is not None:
            return own
    return path


@decodes("Exec")
def execve(c: Context, a: Args) -> Decoded:
    return api.Exec(caller=c.caller(), path=_program(c, c.given_path(AT_FDCWD, c.tracee.read_path(a[0])))), None


@decodes("Exec")
def execveat(c: Context, a: Args) -> Decoded:
    flags = signed32(a[4])
    path = c.tracee.read_path(a[1], empty_ok=bool(flags & AT_EMPTY_PATH))
    if not path:  # fexecve(): a memfd's content, or a file's written since it was opened
        return api.Exec(caller=c.caller(), path=c.fd(a[0])), None
    return api.Exec(caller=c.caller(), path=_program(c, c.given_path(signed32(a[0]), path)),
                    follow=not flags & AT_SYMLINK_NOFOLLOW), None  # fmt: skip


def _lookup(c: Context, call: str, address: int, *, follow: bool = True, dirfd: int = AT_FDCWD) -> Decoded:
    return api.Lookup(caller=c.caller(), path=c.path(address, dirfd), follow=follow, call=call), None


@decodes("Lookup")
def getxattr(c: Context, a: Args) -> Decoded:
    return _lookup(c, "getxattr", a[0])


@decodes("Lookup")
def lgetxattr(c: Context, a: Args) -> Decoded:
    return _lookup(c, "lgetxattr", a[0], follow=False)


@decodes("Lookup")
def listxattr(c: Context, a: Args) -> Decoded:
    return _lookup(c, "listxattr", a[0])


@decodes("Lookup")
def llistxattr(c: Context, a: Args) -> Decoded:
    return _lookup(c, "llistxattr", a[0], follow=False)


def _lookup_at(c: Context, call: str, dirfd: int, path_at: int, at_flags: int) -> Decoded:
    name = c.at_name(path_at, at_flags)
    if not name:  # the dirfd itself (or the cwd): a file the caller holds, as fgetxattr's
        raise Passthrough()
    path = c.vm_path(signed32(dirfd), name)
    return api.Lookup(caller=c.caller(), path=path, follow=not at_flags & AT_SYMLINK_NOFOLLOW, call=call), None


@decodes("Lookup")
def getxattrat(c: Context, a: Args) -> Decoded:
    # Checked in the kernel's order, so that a malformed call fails as natively even
    # where the path is missing; the kernel reads the struct again when it continues,
    # which decides nothing here.
    _value_at, _size, flags = c.extensible_struct(a[4], a[5], XATTR_ARGS)
    if flags:
        raise CallError(errno.EINVAL)
    at_flags = check_flags(a[2], AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH)
    c.string(a[3], XATTR_NAME_MAX)
    return _lookup_at(c, "getxattrat", a[0], a[1], at_flags)


@decodes("Lookup")
def listxattrat(c: Context, a: Args) -> Decoded:
    at_flags = check_flags(a[2], AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH)
    return _lookup_at(c, "listxattrat", a[0], a[1], at_flags)


@decodes("Lookup")
def inotify_add_watch(c: Context, a: Args) -> Decoded:
    return _lookup(c, "inotify_add_watch", a[1])


@decodes("Lookup")
def fanotify_mark(c: Context, a: Args) -> Decoded:
    if not a[4]:
        raise Passthrough()  # marks the dirfd itself
    return _lookup(c, "fanotify_mark", a[4], dirfd=a[3])
