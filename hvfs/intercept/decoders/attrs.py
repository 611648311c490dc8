"""Calls that change an object's metadata: chmod, chown, truncate, utimes and xattrs, by
path and by fd (``hvfs.manager.handlers.attrs``)."""

from __future__ import annotations

import errno

from hvfs import api
from hvfs._sys.abi import (
    AT_EMPTY_PATH,
    AT_FDCWD,
    AT_SYMLINK_NOFOLLOW,
    NSEC_PER_USEC,
    S_IALLUGO,
    TIMESPEC_PAIR,
    TIMEVAL_PAIR,
    USEC_PER_SEC,
    UTIMBUF,
    XATTR_ARGS,
    XATTR_CREATE,
    XATTR_NAME_MAX,
    XATTR_REPLACE,
    XATTR_SIZE_MAX,
)
from hvfs.intercept.decoders.context import (
    Args,
    Context,
    Decoded,
    check_flags,
    decodes,
    signed32,
    signed64,
    unsigned32,
)
from hvfs.intercept.decoders.tracee import CallError

Times = tuple[tuple[int, int], tuple[int, int]]  # (seconds, nanoseconds) of access and modification


def _chmod_at(c: Context, dirfd: int, path_at: int, mode: int, flags: int) -> Decoded:
    flags = check_flags(flags, AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH)
    target = c.target(dirfd, path_at, flags)
    follow = not flags & AT_SYMLINK_NOFOLLOW
    return api.Chmod(caller=c.caller(), target=target, mode=mode & S_IALLUGO, follow=follow), None


@decodes("Chmod")
def chmod(c: Context, a: Args) -> Decoded:
    return _chmod_at(c, AT_FDCWD, a[0], a[1], 0)


@decodes("Chmod")
def fchmodat(c: Context, a: Args) -> Decoded:
    return _chmod_at(c, a[0], a[1], a[2], 0)


@decodes("Chmod")
def fchmodat2(c: Context, a: Args) -> Decoded:
    return _chmod_at(c, a[0], a[1], a[2], a[3])


@decodes("Chmod")
def fchmod(c: Context, a: Args) -> Decoded:
    return api.Chmod(caller=c.caller(), target=c.open_file(a[0]), mode=a[1] & S_IALLUGO), None


def _chown_at(c: Context, dirfd: int, path_at: int, uid: int, gid: int, flags: int) -> Decoded:
    flags = check_flags(flags, AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH)
    target = c.target(dirfd, path_at, flags)
    return api.Chown(
        caller=c.caller(),
        target=target,
        uid=unsigned32(uid),
        gid=unsigned32(gid),
        follow=not flags & AT_SYMLINK_NOFOLLOW,
    ), None


@decodes("Chown")
def chown(c: Context, a: Args) -> Decoded:
    return _chown_at(c, AT_FDCWD, a[0], a[1], a[2], 0)


@decodes("Chown")
def lchown(c: Context, a: Args) -> Decoded:
    return _chown_at(c, AT_FDCWD, a[0], a[1], a[2], AT_SYMLINK_NOFOLLOW)


@decodes("Chown")
def fchownat(c: Context, a: Args) -> Decoded:
    return _chown_at(c, a[0], a[1], a[2], a[3], a[4])


@decodes("Chown")
def fchown(c: Context, a: Args) -> Decoded:
    return api.Chown(caller=c.caller(), target=c.open_file(a[0]), uid=unsigned32(a[1]), gid=unsigned32(a[2])), None


@decodes("Truncate")
def truncate(c: Context, a: Args) -> Decoded:
    return api.Truncate(caller=c.caller(), path=c.path(a[0]), length=signed64(a[1])), None


def _timespecs(c: Context, address: int) -> Times | None:
    if not address:
        return None
    a_sec, a_nsec, m_sec, m_nsec = TIMESPEC_PAIR.unpack(c.tracee.read(address, TIMESPEC_PAIR.size))
    return (a_sec, a_nsec), (m_sec, m_nsec)


def _timevals(c: Context, address: int) -> Times | None:
    if not address:
        return None
    a_sec, a_usec, m_sec, m_usec = TIMEVAL_PAIR.unpack(c.tracee.read(address, TIMEVAL_PAIR.size))
    if not (0 <= a_usec < USEC_PER_SEC and 0 <= m_usec < USEC_PER_SEC):
        raise CallError(errno.EINVAL)
    return (a_sec, a_usec * NSEC_PER_USEC), (m_sec, m_usec * NSEC_PER_USEC)


@decodes("Utimens")
def utime(c: Context, a: Args) -> Decoded:
    times = None
    if a[1]:
        actime, modtime = UTIMBUF.unpack(c.tracee.read(a[1], UTIMBUF.size))
        times = (actime, 0), (modtime, 0)
    return api.Utimens(caller=c.caller(), target=c.path(a[0]), times=times), None


@decodes("Utimens")
def utimes(c: Context, a: Args) -> Decoded:
    return api.Utimens(caller=c.caller(), target=c.path(a[0]), times=_timevals(c, a[1])), None


@decodes("Utimens")
def futimesat(c: Context, a: Args) -> Decoded:
    return api.Utimens(caller=c.caller(), target=c.path(a[1], a[0]), times=_timevals(c, a[2])), None


@decodes("Utimens")
def utimensat(c: Context, a: Args) -> Decoded:
    dirfd, path_at, times_at = signed32(a[0]), a[1], a[2]
    flags = check_flags(a[3], AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH)
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


def _xattr_to_set(c: Context, name_at: int, value_at: int, size: int, flags: int) -> tuple[str, bytes, int]:
    """The name, value and flags of an xattr to set, checked and read in the kernel's
    order (setxattr_copy), before the file is looked up."""
    if flags & ~(XATTR_CREATE | XATTR_REPLACE):
        raise CallError(errno.EINVAL)
    name = c.string(name_at, XATTR_NAME_MAX)
    if size > XATTR_SIZE_MAX:
        raise CallError(errno.E2BIG)
    value = c.tracee.read(value_at, size) if size else b""
    return name, value, flags


def _setxattr(c: Context, target: api.Target, xattr: tuple[str, bytes, int], *, follow: bool) -> Decoded:
    name, value, flags = xattr
    return api.SetXattr(caller=c.caller(), target=target, name=name, value=value, flags=flags, follow=follow), None


@decodes("SetXattr")
def setxattr(c: Context, a: Args) -> Decoded:
    xattr = _xattr_to_set(c, a[1], a[2], a[3], signed32(a[4]))
    return _setxattr(c, c.path(a[0]), xattr, follow=True)


@decodes("SetXattr")
def lsetxattr(c: Context, a: Args) -> Decoded:
    xattr = _xattr_to_set(c, a[1], a[2], a[3], signed32(a[4]))
    return _setxattr(c, c.path(a[0]), xattr, follow=False)


@decodes("SetXattr")
def fsetxattr(c: Context, a: Args) -> Decoded:
    xattr = _xattr_to_set(c, a[1], a[2], a[3], signed32(a[4]))
    return _setxattr(c, c.open_file(a[0]), xattr, follow=True)


def _xattr_at(c: Context, dirfd: int, path_at: int, at_flags: int, *, cwd: bool) -> api.Target:
    """What an ``*xattrat`` call acts on: the path from ``dirfd``; with AT_EMPTY_PATH and
    an empty or NULL path, the open file ``dirfd`` (EBADF for an O_PATH one, as the f*
    calls), or, where ``cwd`` (set and get, not list and remove), the cwd for AT_FDCWD."""
    dirfd = signed32(dirfd)
    name = c.at_name(path_at, at_flags)
    if name:
        return c.vm_path(dirfd, name)
    if dirfd >= 0:
        return c.open_file(dirfd)
    if cwd and dirfd == AT_FDCWD:
        return c.vm_path(AT_FDCWD, ".")
    raise CallError(errno.EBADF)


@decodes("SetXattr")
def setxattrat(c: Context, a: Args) -> Decoded:
    # The struct is read once: a thread of the caller may rewrite it meanwhile, and only
    # this copy's value, size and flags may be used.
    value_at, size, flags = c.extensible_struct(a[4], a[5], XATTR_ARGS)
    at_flags = check_flags(a[2], AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH)
    xattr = _xattr_to_set(c, a[3], value_at, size, flags)
    target = _xattr_at(c, a[0], a[1], at_flags, cwd=True)
    return _setxattr(c, target, xattr, follow=not at_flags & AT_SYMLINK_NOFOLLOW)


def _removexattr(c: Context, target: api.Target, name: str, *, follow: bool) -> Decoded:
    return api.RemoveXattr(caller=c.caller(), target=target, name=name, follow=follow), None


@decodes("RemoveXattr")
def removexattr(c: Context, a: Args) -> Decoded:
    name = c.string(a[1], XATTR_NAME_MAX)
    return _removexattr(c, c.path(a[0]), name, follow=True)


@decodes("RemoveXattr")
def lremovexattr(c: Context, a: Args) -> Decoded:
    name = c.string(a[1], XATTR_NAME_MAX)
    return _removexattr(c, c.path(a[0]), name, follow=False)


@decodes("RemoveXattr")
def fremovexattr(c: Context, a: Args) -> Decoded:
    name = c.string(a[1], XATTR_NAME_MAX)
    return _removexattr(c, c.open_file(a[0]), name, follow=True)


@decodes("RemoveXattr")
def removexattrat(c: Context, a: Args) -> Decoded:
    at_flags = check_flags(a[2], AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH)
    name = c.string(a[3], XATTR_NAME_MAX)
    target = _xattr_at(c, a[0], a[1], at_flags, cwd=False)
    return _removexattr(c, target, name, follow=not at_flags & AT_SYMLINK_NOFOLLOW)
