"""File calls the stdlib lacks: openat2, renameat2, statx, and per-thread credentials."""

from __future__ import annotations

import ctypes
import os

from hvfs._sys.libc import syscall

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
RESOLVE_CACHED = 0x20

O_PATH = 0o10000000
O_TMPFILE = 0o20000000 | os.O_DIRECTORY
TMPFILE_BIT = 0o20000000

AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_SYMLINK_NOFOLLOW = 0x100
STATX_BASIC_STATS = 0x7FF
STATX_SIZE = 256


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = RESOLVE_IN_ROOT) -> int:
    """openat2(2); O_CLOEXEC is always added, since these fds belong to the manager."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    return syscall("openat2", dirfd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how))


def renameat2(olddirfd: int, old: str, newdirfd: int, new: str, flags: int) -> None:
    syscall("renameat2", olddirfd, os.fsencode(old), newdirfd, os.fsencode(new), flags)


def statx(dirfd: int, path: str, flags: int, mask: int) -> bytes:
    """statx(2); returns the kernel's 256-byte ``struct statx`` (the same on every arch)."""
    buffer = ctypes.create_string_buffer(STATX_SIZE)
    syscall("statx", dirfd, os.fsencode(path), flags, mask, buffer)
    return buffer.raw


STATX_MNT_ID = 0x1000
_STX_MNT_ID_OFFSET = 0x90


def mount_id(fd: int) -> int:
    """The id of the mount ``fd`` is on (statx STATX_MNT_ID), as /proc/*/mountinfo shows it."""
    raw = statx(fd, "", AT_EMPTY_PATH, STATX_MNT_ID)
    return int.from_bytes(raw[_STX_MNT_ID_OFFSET : _STX_MNT_ID_OFFSET + 8], "little")


def fchmodat2(dirfd: int, path: str, mode: int, flags: int) -> None:
    syscall("fchmodat2", dirfd, os.fsencode(path), mode, flags)


# Credentials below change the calling thread only: the raw syscalls act per thread,
# unlike glibc's wrappers, which broadcast set*id calls to every thread of the process.


def set_thread_fsuid(uid: int) -> int:
    """setfsuid(2) for this thread; returns the previous fsuid."""
    return syscall("setfsuid", uid)


def set_thread_fsgid(gid: int) -> int:
    return syscall("setfsgid", gid)


def set_thread_groups(groups: tuple[int, ...]) -> None:
    array = (ctypes.c_uint32 * len(groups))(*groups)
    syscall("setgroups", len(groups), array)


def _c_path(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def fchownat(dirfd: int, path: str, uid: int, gid: int, flags: int) -> None:
    # uid_t is unsigned: -1 (no change) must reach the kernel as 0xffffffff.
    from hvfs._sys.libc import check, libc

    result = libc().fchownat(
        ctypes.c_int(dirfd),
        _c_path(path),
        ctypes.c_uint32(uid & 0xFFFFFFFF),
        ctypes.c_uint32(gid & 0xFFFFFFFF),
        ctypes.c_int(flags),
    )
    check("fchownat", result, dirfd, path, uid, gid, flags)


class _Timespec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_int64), ("nsec", ctypes.c_long)]


def utimensat(dirfd: int, path: str | None, times: tuple[tuple[int, int], tuple[int, int]] | None, flags: int) -> None:
    """utimensat(2), with UTIME_NOW and UTIME_OMIT passed through; ``path=None`` is futimens.

    The raw syscall: glibc's wrapper refuses a NULL path, which the kernel accepts."""
    from hvfs._sys.libc import syscall

    pair = None
    if times is not None:
        pair = (_Timespec * 2)(_Timespec(*times[0]), _Timespec(*times[1]))
    syscall("utimensat", dirfd, _c_path(path), pair, flags)


def faccessat(dirfd: int, path: str, mode: int, flags: int) -> None:
    """faccessat(2) through the raw syscall (glibc emulates flags); raises on refusal."""
    from hvfs._sys.libc import syscall

    syscall("faccessat2", dirfd, os.fsencode(path), mode, flags)


STATFS_SIZE = 120  # struct statfs on 64-bit Linux: the same on x86_64 and aarch64


def fstatfs(fd: int) -> bytes:
    from hvfs._sys.libc import check, libc

    buffer = ctypes.create_string_buffer(STATFS_SIZE)
    check("fstatfs", libc().fstatfs(ctypes.c_int(fd), buffer), fd)
    return buffer.raw
