"""seccomp user-notification structures and ioctls on the listener fd."""

from __future__ import annotations

import ctypes
import os

from hvfs._sys.libc import check, libc

SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
SECCOMP_ADDFD_FLAG_SETFD = 1
SECCOMP_ADDFD_FLAG_SEND = 2
SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP = 1

NOTIF_RECV = 0xC0502100
NOTIF_SEND = 0xC0182101
NOTIF_ID_VALID = 0x40082102
NOTIF_ADDFD = 0x40182103
NOTIF_SET_FLAGS = 0x40082104


class SeccompData(ctypes.Structure):
    _fields_ = [
        ("nr", ctypes.c_int),
        ("arch", ctypes.c_uint32),
        ("instruction_pointer", ctypes.c_uint64),
        ("args", ctypes.c_uint64 * 6),
    ]


class Notif(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint64), ("pid", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("data", SeccompData)]


class _Resp(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint64), ("val", ctypes.c_int64), ("error", ctypes.c_int32), ("flags", ctypes.c_uint32)]


class _AddFd(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("srcfd", ctypes.c_uint32),
        ("newfd", ctypes.c_uint32),
        ("newfd_flags", ctypes.c_uint32),
    ]


def notif(notif_id: int, pid: int, nr: int, arch: int, pc: int, args: tuple[int, ...]) -> Notif:
    """A notification as NOTIF_RECV would have given it (hvfs.intercept.orphans)."""
    return Notif(notif_id, pid, 0, SeccompData(nr, arch, pc, (ctypes.c_uint64 * 6)(*args)))


_ioctl = libc().ioctl
# ctypes releases the GIL around foreign calls, so a worker blocked here does not stall
# the others. The request codes are made into C values once: these calls run per request.
_RECV, _SEND, _ID_VALID, _ADDFD = (
    ctypes.c_ulong(code) for code in (NOTIF_RECV, NOTIF_SEND, NOTIF_ID_VALID, NOTIF_ADDFD)
)


def receive(listener: int) -> Notif:
    """NOTIF_RECV. The kernel rejects a buffer that is not all zeroes, so it is fresh."""
    notif = Notif()
    if _ioctl(listener, _RECV, ctypes.byref(notif)) < 0:
        raise _failed("NOTIF_RECV", listener)
    return notif


def respond(listener: int, notif_id: int, *, value: int = 0, error: int = 0, flags: int = 0) -> None:
    resp = _Resp(notif_id, value, -error if error else 0, flags)
    if _ioctl(listener, _SEND, ctypes.byref(resp)) < 0:
        raise _failed("NOTIF_SEND", listener)


def add_fd(listener: int, notif_id: int, fd: int, newfd_flags: int, *, respond: bool) -> int:
    """ADDFD: install ``fd`` in the target; return its number there. With ``respond``
    (SECCOMP_ADDFD_FLAG_SEND) the same ioctl also answers the call with that number."""
    add = _AddFd(notif_id, SECCOMP_ADDFD_FLAG_SEND if respond else 0, fd, 0, newfd_flags)
    number: int = _ioctl(listener, _ADDFD, ctypes.byref(add))
    if number < 0:
        raise _failed("NOTIF_ADDFD", listener)
    return number


def id_valid(listener: int, notif_id: int) -> bool:
    return bool(_ioctl(listener, _ID_VALID, ctypes.byref(ctypes.c_uint64(notif_id))) == 0)


def set_flags(listener: int, flags: int) -> None:
    """NOTIF_SET_FLAGS takes its flags by value, not through a pointer."""
    check("NOTIF_SET_FLAGS", _ioctl(listener, ctypes.c_ulong(NOTIF_SET_FLAGS), ctypes.c_ulong(flags)))


def _failed(name: str, listener: int) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, os.strerror(code), f"{name}({listener})")
