"""File calls the stdlib lacks: openat2, renameat2, statx, and per-thread credentials."""

from __future__ import annotations

import ctypes
import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hvfs._sys.abi import (
    AT_EMPTY_PATH,
    OPEN_HOW,
    RESOLVE_BENEATH,
    RESOLVE_IN_ROOT,
    STATFS_SIZE,
    STATX_MNT_ID,
    STATX_STRUCT_SIZE,
    STX_MNT_ID_OFFSET,
)
from hvfs._sys.libc import check, function, typed_syscall

_PATH_AT = (ctypes.c_int, ctypes.c_char_p)  # a directory fd and a path
_openat2 = typed_syscall("openat2", *_PATH_AT, ctypes.c_char_p, ctypes.c_size_t)
_renameat2 = typed_syscall("renameat2", *_PATH_AT, *_PATH_AT, ctypes.c_uint)
_statx = typed_syscall("statx", *_PATH_AT, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p)
_fchmodat2 = typed_syscall("fchmodat2", *_PATH_AT, ctypes.c_uint, ctypes.c_uint)
_faccessat2 = typed_syscall("faccessat2", *_PATH_AT, ctypes.c_int, ctypes.c_int)
_setfsuid = typed_syscall("setfsuid", ctypes.c_uint)
_setfsgid = typed_syscall("setfsgid", ctypes.c_uint)
_setgroups = typed_syscall("setgroups", ctypes.c_size_t, ctypes.c_void_p)


_SCOPED_RETRIES = 16


@contextmanager
def closing(fd: int) -> Iterator[int]:
    """``with closing(os.open(...)) as fd:`` the fd, closed on leaving the block."""
    try:
        yield fd
    finally:
        os.close(fd)


_UNKNOWN: Any = object()
_native: Any = _UNKNOWN  # hvfs._native.hotpath (None: not built), looked up at the first openat2 or open_stat


def _hot_path() -> Any:
    """Imported at the manager's first lookup, not with this module: a client (``hvfs run``)
    imports this module and serves nothing, and hvfs._native loads every extension."""
    global _native
    from hvfs._native import hotpath

    _native = hotpath
    return hotpath


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = RESOLVE_IN_ROOT) -> int:
    """openat2(2); O_CLOEXEC is always added, since these fds belong to the manager.

    A scoped lookup (RESOLVE_IN_ROOT, RESOLVE_BENEATH) through ".." fails with EAGAIN when
    any mount or rename anywhere on the machine raced it; openat2(2) says to retry, and a
    busy machine (VMs starting) makes it common, so it is retried a bounded number of times.
    One C call where the hot path is built (hvfs/_native/open_stat.h), looked up at the
    first call as ``open_stat``; else through ctypes (``_openat2_ctypes``)."""
    native = _native if _native is not _UNKNOWN else _hot_path()
    if native is not None:
        fd: int = native.openat2(dirfd, os.fsencode(path), flags, mode, resolve)
        return fd
    return _openat2_ctypes(dirfd, path, flags, mode, resolve)


def _openat2_ctypes(dirfd: int, path: str, flags: int, mode: int, resolve: int) -> int:
    # Safe because: the kernel only reads the open_how it is given (copy_struct_from_user),
    # so an immutable bytes object can hold it.
    how = OPEN_HOW.pack(flags | os.O_CLOEXEC, mode, resolve)
    name = os.fsencode(path)
    for _ in range(_SCOPED_RETRIES if resolve & (RESOLVE_IN_ROOT | RESOLVE_BENEATH) else 0):
        try:
            return _openat2(dirfd, name, how, OPEN_HOW.size)
        except BlockingIOError:
            continue
    return _openat2(dirfd, name, how, OPEN_HOW.size)


def open_stat(dirfd: int, path: str, flags: int, mode: int, resolve: int, status: int = -1) -> tuple[int, int]:
    """``openat2`` (O_CLOEXEC added, EAGAIN retried alike), then the opened file's
    ``st_mode``, then, where ``status`` is not -1 and the file is a regular file or a FIFO,
    ``F_SETFL`` ``status``: a served write-open's calls, in one C call where the hot path is
    built (hvfs/_native/open_stat.h). The fd is closed if a step after the open fails; the
    OSError carries that step's errno."""
    native = _native if _native is not _UNKNOWN else _hot_path()
    if native is not None:
        result: tuple[int, int] = native.open_stat(dirfd, os.fsencode(path), flags, mode, resolve, status)
        return result
    fd = openat2(dirfd, path, flags, mode, resolve)
    return fd, kind_and_status(fd, status)


def kind_and_status(fd: int, status: int) -> int:
    """``open_stat``'s steps after the open, for an fd opened otherwise: the file's
    ``st_mode``, and ``F_SETFL`` ``status`` (unless -1) on a regular file or a FIFO. The fd
    is closed if a step fails."""
    try:
        kind = os.fstat(fd).st_mode
        if status != -1 and (stat.S_ISREG(kind) or stat.S_ISFIFO(kind)):
            fcntl.fcntl(fd, fcntl.F_SETFL, status)
    except BaseException:
        os.close(fd)
        raise
    return kind


def renameat2(olddirfd: int, old: str, newdirfd: int, new: str, flags: int) -> None:
    _renameat2(olddirfd, os.fsencode(old), newdirfd, os.fsencode(new), flags)


def statx(dirfd: int, path: str, flags: int, mask: int) -> bytes:
    """statx(2); returns the kernel's 256-byte ``struct statx`` (the same on every arch)."""
    buffer = ctypes.create_string_buffer(STATX_STRUCT_SIZE)
    _statx(dirfd, os.fsencode(path), flags, mask, buffer)
    return buffer.raw


def mount_id(fd: int) -> int:
    """The id of the mount ``fd`` is on (statx STATX_MNT_ID), as /proc/*/mountinfo shows it."""
    raw = statx(fd, "", AT_EMPTY_PATH, STATX_MNT_ID)
    return int.from_bytes(raw[STX_MNT_ID_OFFSET : STX_MNT_ID_OFFSET + 8], "little")


def fchmodat2(dirfd: int, path: str, mode: int, flags: int) -> None:
    _fchmodat2(dirfd, os.fsencode(path), mode, flags)


# Credentials below change the calling thread only: the raw syscalls act per thread,
# unlike glibc's wrappers, which broadcast set*id calls to every thread of the process.


def set_thread_fsuid(uid: int) -> int:
    """setfsuid(2) for this thread; returns the previous fsuid."""
    return _setfsuid(uid)


def set_thread_fsgid(gid: int) -> int:
    return _setfsgid(gid)


def set_thread_groups(groups: tuple[int, ...]) -> None:
    array = (ctypes.c_uint32 * len(groups))(*groups)
    _setgroups(len(groups), array)


def groups_to_switch(gid: int, wanted: tuple[int, ...], own: tuple[int, ...]) -> bool:
    """Whether a thread whose fsgid becomes ``gid`` must set its supplementary groups from
    ``own`` to ``wanted`` to act as a caller with that gid and groups. Every check the
    kernel makes of a thread's groups while it looks up, opens or changes a file
    (in_group_p: ACLs, group permission bits, chgrp, the setgid bit) matches the fsgid
    first, then the groups: with the same fsgid, groups that differ only by that gid give
    the same rights, as ``-u 1000:1000``'s (1000,) and root's (). (The egid, which
    in_egroup_p also reads, is never switched: a device or a tun, opened by the kernel.)"""
    return {gid, *wanted} != {gid, *own}


def _c_path(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


_fchownat = function("fchownat", ctypes.c_int, *_PATH_AT, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_int)


def fchownat(dirfd: int, path: str, uid: int, gid: int, flags: int) -> None:
    # uid_t is unsigned: -1 (no change) must reach the kernel as 0xffffffff.
    result = _fchownat(dirfd, _c_path(path), uid & 0xFFFFFFFF, gid & 0xFFFFFFFF, flags)
    check("fchownat", result, dirfd, path, uid, gid, flags)


class _Timespec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_int64), ("nsec", ctypes.c_long)]


_utimensat = typed_syscall("utimensat", *_PATH_AT, ctypes.c_void_p, ctypes.c_int)


def utimensat(dirfd: int, path: str | None, times: tuple[tuple[int, int], tuple[int, int]] | None, flags: int) -> None:
    """utimensat(2), with UTIME_NOW and UTIME_OMIT passed through; ``path=None`` is futimens.

    The raw syscall: glibc's wrapper refuses a NULL path, which the kernel accepts."""
    pair = None
    if times is not None:
        pair = (_Timespec * 2)(_Timespec(*times[0]), _Timespec(*times[1]))
    _utimensat(dirfd, _c_path(path), pair, flags)


def faccessat(dirfd: int, path: str, mode: int, flags: int) -> None:
    """faccessat(2) through the raw syscall (glibc emulates flags); raises on refusal."""
    _faccessat2(dirfd, os.fsencode(path), mode, flags)


def fstatfs(fd: int) -> bytes:
    from hvfs._sys.libc import check, libc

    buffer = ctypes.create_string_buffer(STATFS_SIZE)
    check("fstatfs", libc().fstatfs(ctypes.c_int(fd), buffer), fd)
    return buffer.raw


def make_file(name: str, mode: int, dir_fd: int) -> None:
    """Create the empty regular file ``name`` (a mount point) without opening it.

    A file opened for writing holds its mount's write count until its last reference
    goes, and a child that another thread forks meanwhile holds one until it execs: then
    the staged tree's switch to read-only (``hvfs.manager.view``) fails with EBUSY, 1
    start in ~160 with four VMs started at once. mknod makes the file with no open."""
    os.mknod(name, stat.S_IFREG | mode, dir_fd=dir_fd)
