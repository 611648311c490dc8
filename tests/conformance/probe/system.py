"""The probe's system interface: libc through ctypes, raw syscalls by number, and the
constants and structures they take."""

import ctypes
import fcntl
import os
import platform
import stat
import struct
from typing import Any

from observe import Json, file_type

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
for _ssize_function in ("readlink", "readlinkat", "getxattr", "listxattr"):
    getattr(libc, _ssize_function).restype = ctypes.c_ssize_t

# Syscalls that glibc 2.36 has no wrapper for, or whose wrapper emulates flags the probe
# wants the kernel itself to judge.
SYSCALL_NUMBERS = {
    "x86_64": {"execveat": 322, "renameat2": 316, "statx": 332, "openat2": 437, "faccessat2": 439, "fchmodat2": 452},
    "aarch64": {"execveat": 281, "renameat2": 276, "statx": 291, "openat2": 437, "faccessat2": 439, "fchmodat2": 452},
}
# Linux 6.13's xattr calls: the same numbers on every architecture.
for _numbers in SYSCALL_NUMBERS.values():
    _numbers.update(setxattrat=463, getxattrat=464, listxattrat=465, removexattrat=466)

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_REMOVEDIR = 0x200
AT_EACCESS = 0x200
AT_SYMLINK_FOLLOW = 0x400
AT_EMPTY_PATH = 0x1000
RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT = 1, 2, 4
RESOLVE_NO_XDEV, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS = 0x01, 0x02, 0x04
RESOLVE_BENEATH, RESOLVE_IN_ROOT, RESOLVE_CACHED = 0x08, 0x10, 0x20
OPEN_HOW_SIZE = 24  # struct open_how, version 0: flags, mode, resolve (three u64)
XATTR_ARGS = "QII"  # struct xattr_args, version 0 (16 bytes): value (a pointer), size, flags
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE = 0x01, 0x02, 0x10
STATX_BASIC_STATS, STATX_RESERVED = 0x7FF, 0x80000000
STATX_SIZE = 256
ST_RDONLY = 1
F_OFD_GETLK, F_OFD_SETLK = 36, 37
FLOCK_FORMAT = "hhqqi4x"  # struct flock: l_type, l_whence, l_start, l_len, l_pid, padding
IN_NONBLOCK = os.O_NONBLOCK
INOTIFY_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name
INOTIFY_MASKS = {
    0x1: "ACCESS",
    0x2: "MODIFY",
    0x4: "ATTRIB",
    0x8: "CLOSE_WRITE",
    0x10: "CLOSE_NOWRITE",
    0x20: "OPEN",
    0x40: "MOVED_FROM",
    0x80: "MOVED_TO",
    0x100: "CREATE",
    0x200: "DELETE",
    0x400: "DELETE_SELF",
    0x800: "MOVE_SELF",
    0x8000: "IGNORED",
    0x40000000: "ISDIR",
}
IN_ONLYDIR, IN_DONT_FOLLOW = 0x1000000, 0x2000000
OTHER_UID = OTHER_GID = 1000  # the second user of the root-only permission cases
SUPPLEMENTARY_GID = 4242
RDONLY, WRONLY, RDWR, CREAT = os.O_RDONLY, os.O_WRONLY, os.O_RDWR, os.O_CREAT  # short, as the cases use them
CHILD_ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class Statfs(ctypes.Structure):
    """glibc's struct statfs on 64-bit Linux (x86_64 and aarch64 share it)."""

    _fields_ = [
        ("f_type", ctypes.c_long),
        ("f_bsize", ctypes.c_long),
        ("f_blocks", ctypes.c_ulong),
        ("f_bfree", ctypes.c_ulong),
        ("f_bavail", ctypes.c_ulong),
        ("f_files", ctypes.c_ulong),
        ("f_ffree", ctypes.c_ulong),
        ("f_fsid", ctypes.c_int * 2),
        ("f_namelen", ctypes.c_long),
        ("f_frsize", ctypes.c_long),
        ("f_flags", ctypes.c_long),
        ("f_spare", ctypes.c_long * 4),
    ]


def check(result: int) -> int:
    """Turn a libc-style failure (-1 and errno) into OSError, as os.* functions do."""
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def syscall(name: str, *args: Any) -> int:
    """A raw syscall by name; ints go as longs so that variadic syscall() reads them whole."""
    number = SYSCALL_NUMBERS[platform.machine()][name]
    converted = [ctypes.c_long(arg) if isinstance(arg, int) else arg for arg in args]
    return check(libc.syscall(ctypes.c_long(number), *converted))


def b(path: str) -> bytes:
    return os.fsencode(path)


def openat2(path: str, flags: int, mode: int = 0, resolve: int = 0, *, dirfd: int = AT_FDCWD, size: int = 0) -> int:
    """openat2(2) with a struct open_how; a size beyond version 0 passes zero or 0xff tail bytes."""
    how = struct.pack("QQQ", flags, mode, resolve)
    size = size or len(how)
    buffer = ctypes.create_string_buffer(how, max(size, len(how)))
    return syscall("openat2", dirfd, b(path), buffer, size)


def renameat2(old: str, new: str, flags: int, *, old_dirfd: int = AT_FDCWD, new_dirfd: int = AT_FDCWD) -> None:
    syscall("renameat2", old_dirfd, b(old), new_dirfd, b(new), flags)


def faccessat2(path: str, mode: int, flags: int, *, dirfd: int = AT_FDCWD) -> None:
    syscall("faccessat2", dirfd, b(path), mode, flags)


def fchmodat2(path: str, mode: int, flags: int, *, dirfd: int = AT_FDCWD) -> None:
    syscall("fchmodat2", dirfd, b(path), mode, flags)


def statx(path: str, flags: int = 0, mask: int = STATX_BASIC_STATS, *, dirfd: int = AT_FDCWD) -> dict[str, Json]:
    """statx(2), reduced to what is stable between runs: type, mode, size, nlink, mtime."""
    buffer = ctypes.create_string_buffer(STATX_SIZE)
    syscall("statx", dirfd, b(path), flags, mask, buffer)
    got_mask, _blksize, _attrs, nlink, _uid, _gid, mode = struct.unpack_from("IIQIIIH", buffer.raw, 0)
    (size,) = struct.unpack_from("Q", buffer.raw, 40)
    mtime_sec, mtime_nsec = struct.unpack_from("qI", buffer.raw, 112)
    return {
        "basic": got_mask & STATX_BASIC_STATS == STATX_BASIC_STATS,
        "type": file_type(mode),
        "mode": f"{stat.S_IMODE(mode):04o}",
        "size": size,
        "nlink": nlink,
        "mtime_ns": mtime_sec * 1_000_000_000 + mtime_nsec,
    }


def execveat(dirfd: int, path: str, argv: list[str], flags: int) -> None:
    """execveat(2); returns only by raising."""
    args = (ctypes.c_char_p * (len(argv) + 1))(*[b(arg) for arg in argv], None)
    env = [b(f"{key}={value}") for key, value in CHILD_ENV.items()]
    envp = (ctypes.c_char_p * (len(env) + 1))(*env, None)
    syscall("execveat", dirfd, b(path), args, envp, flags)


def utimensat(path: str | None, times: tuple[tuple[int, int], tuple[int, int]] | None, flags: int = 0) -> None:
    """utimensat(2); times are (sec, nsec) pairs or None for "now"."""
    spec = None if times is None else (Timespec * 2)(Timespec(*times[0]), Timespec(*times[1]))
    check(libc.utimensat(AT_FDCWD, None if path is None else b(path), spec, flags))


def statfs_summary(buffer: Statfs) -> dict[str, Json]:
    return {"f_type": hex(buffer.f_type), "rdonly": bool(buffer.f_flags & ST_RDONLY)}


def statfs(path: str) -> dict[str, Json]:
    buffer = Statfs()
    check(libc.statfs(b(path), ctypes.byref(buffer)))
    return statfs_summary(buffer)


def fstatfs(fd: int) -> dict[str, Json]:
    buffer = Statfs()
    check(libc.fstatfs(fd, ctypes.byref(buffer)))
    return statfs_summary(buffer)


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    check(libc.fallocate(fd, mode, ctypes.c_long(offset), ctypes.c_long(length)))


def flock_struct(lock_type: int, start: int = 0, length: int = 0, pid: int = 0) -> bytes:
    return struct.pack(FLOCK_FORMAT, lock_type, os.SEEK_SET, start, length, pid)


def lock(fd: int, command: int, lock_type: int, pid: int = 0) -> dict[str, Json]:
    """fcntl record lock on the whole file; returns the lock the kernel wrote back."""
    reply = fcntl.fcntl(fd, command, flock_struct(lock_type, pid=pid))
    got_type, _whence, start, length, got_pid = struct.unpack(FLOCK_FORMAT, reply)
    return {"type": got_type, "start": start, "len": length, "pid": got_pid}


def access(path: str, mode: int) -> None:
    """access(2) itself: os.access() hides the errno."""
    check(libc.access(b(path), mode))


def _path_or_null(path: str | None) -> bytes | None:
    return None if path is None else b(path)


def _xattr_args(value: Any, size: int, flags: int, tail: bytes) -> Any:
    """A struct xattr_args pointing at ``value`` (a ctypes buffer, or None), followed by
    ``tail``: the fields of a newer struct, as a program built for a later kernel passes."""
    address = ctypes.addressof(value) if value is not None else 0
    return ctypes.create_string_buffer(struct.pack(XATTR_ARGS, address, size, flags) + tail)


def setxattrat(path: str | None, name: str, value: bytes, flags: int = 0, at_flags: int = 0, *,
               dirfd: int = AT_FDCWD, usize: int = 0, tail: bytes = b"", size: int | None = None) -> None:  # fmt: skip
    """setxattrat(2); ``usize`` 0 passes the struct's own size (with ``tail``)."""
    data = ctypes.create_string_buffer(value, max(len(value), 1))
    args = _xattr_args(data, len(value) if size is None else size, flags, tail)
    usize = usize or struct.calcsize(XATTR_ARGS) + len(tail)
    syscall("setxattrat", dirfd, _path_or_null(path), at_flags, b(name), args, usize)


def getxattrat(path: str | None, name: str, size: int = 256, at_flags: int = 0, *, dirfd: int = AT_FDCWD,
               usize: int = 0, tail: bytes = b"", flags: int = 0) -> Json:  # fmt: skip
    """getxattrat(2): the value as text, or its size for a ``size`` of 0."""
    buffer = ctypes.create_string_buffer(max(size, 1))
    args = _xattr_args(buffer if size else None, size, flags, tail)
    usize = usize or struct.calcsize(XATTR_ARGS) + len(tail)
    got = syscall("getxattrat", dirfd, _path_or_null(path), at_flags, b(name), args, usize)
    return buffer.raw[:got].decode() if size else got


def listxattrat(path: str | None, at_flags: int = 0, *, dirfd: int = AT_FDCWD, size: int = 1024) -> list[str]:
    """listxattrat(2): the names it lists (user.* and trusted.* only, as user_xattrs)."""
    buffer = ctypes.create_string_buffer(max(size, 1))
    got = syscall("listxattrat", dirfd, _path_or_null(path), at_flags, buffer, size)
    names = [os.fsdecode(n) for n in buffer.raw[:got].split(b"\0") if n]
    return sorted(n for n in names if n.startswith(("user.", "trusted.")))


def removexattrat(path: str | None, name: str, at_flags: int = 0, *, dirfd: int = AT_FDCWD) -> None:
    syscall("removexattrat", dirfd, _path_or_null(path), at_flags, b(name))


PR_SET_KEEPCAPS = 8
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2
_CAPABILITY_VERSION_3 = 0x20080522


def become_keeping_capabilities(uid: int, gid: int, capabilities: int) -> None:
    """Become uid and gid with the effective capabilities given (from those held): the
    kernel clears the effective set at a setuid away from 0, and keeps the permitted one
    only with PR_SET_KEEPCAPS; capset raises them again afterwards."""
    check(libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0))
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    header = struct.pack("Ii", _CAPABILITY_VERSION_3, 0)
    data = ctypes.create_string_buffer(24)  # two struct __user_cap_data_struct
    check(libc.capget(header, data))
    # each half: effective, permitted, inheritable
    low, high = struct.unpack("3I", data.raw[:12]), struct.unpack("3I", data.raw[12:])
    wanted = capabilities & (low[1] | high[1] << 32)
    raised = struct.pack("6I", wanted & 0xFFFFFFFF, low[1], low[2], wanted >> 32, high[1], high[2])
    check(libc.capset(header, raised))
