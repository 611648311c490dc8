"""seccomp user-notification structures and ioctls on the listener fd.

Two implementations of the per-request calls (``receive_or_stop``, ``respond``,
``install``, ``id_valid``): the C hot path (hvfs/_native/hotpath.c), which makes each one
call with the GIL released, and ctypes, the fallback where it is not built or
``HVFS_NATIVE=0``. Both have the same contract; which one serves is chosen once, here.
"""

# Annotations evaluated, not ``from __future__ import annotations``: a NamedTuple's string
# annotations are compiled one by one at import (tests/test_startup.py).

import ctypes
import errno
import fcntl
import os
import select
from typing import NamedTuple

from hvfs._native import hotpath as _native
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


class Received(NamedTuple):
    """A notification as the driver uses it: the fields it decides on, and the kernel's
    own bytes (``raw``, ``struct seccomp_notif``) for the table of requests in flight."""

    id: int
    pid: int
    nr: int
    args: tuple[int, int, int, int, int, int]
    raw: bytes

    @classmethod
    def of(cls, notif: Notif) -> "Received":
        return cls(notif.id, notif.pid, notif.data.nr, tuple(notif.data.args), bytes(notif))  # type: ignore[arg-type]

    @classmethod
    def from_raw(cls, raw: bytes) -> "Received":
        return cls.of(Notif.from_buffer_copy(raw))


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


def _receive_or_stop(listener: int, stop: int) -> Received | None:
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    poller.register(stop, select.POLLIN)
    while True:
        for fd, events in poller.poll():
            if fd == stop:
                return None
            if events & select.POLLIN:
                try:
                    return Received.of(receive(listener))
                except OSError as e:
                    if e.errno in (errno.ENOENT, errno.EINTR):  # cancelled before we got it
                        continue
                    raise
            if events & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                return None  # every thread of the VM has exited


def _native_receive_or_stop(listener: int, stop: int) -> Received | None:
    got = _native.receive(listener, stop)
    return None if got is None else Received(*got)


def _respond(listener: int, notif_id: int, *, value: int = 0, error: int = 0, flags: int = 0) -> None:
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


def _native_respond(listener: int, notif_id: int, *, value: int = 0, error: int = 0, flags: int = 0) -> None:
    _native.respond(listener, notif_id, value, error, flags)


def _install(listener: int, notif_id: int, fd: int, newfd_flags: int) -> int:
    writable = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY
    try:
        number = add_fd(listener, notif_id, fd, newfd_flags, respond=not writable)
    except OSError as e:
        os.close(fd)
        if e.errno == errno.EMFILE:
            try:
                _respond(listener, notif_id, error=errno.EMFILE)
            except OSError as again:
                if again.errno != errno.ENOENT:
                    return again.errno or errno.EIO
        return e.errno or errno.EIO
    os.close(fd)
    if writable:
        try:
            _respond(listener, notif_id, value=number)
        except OSError as e:
            return e.errno or errno.EIO
    return 0


def _id_valid(listener: int, notif_id: int) -> bool:
    return bool(_ioctl(listener, _ID_VALID, ctypes.byref(ctypes.c_uint64(notif_id))) == 0)


# The per-request calls. ``receive_or_stop(listener, stop)``: poll the listener and
# ``stop`` and receive one notification; None once ``stop`` is readable or every thread
# of the VM has exited. ``install(listener, id, fd, newfd_flags)``: install ``fd`` (taken)
# in the target and answer with its number there: a read-only file in one step (ADDFD
# with SEND), a writable one installed, the manager's reference dropped, then answered
# (the ETXTBSY and close ordering of hvfs/intercept/driver.py); returns 0 or the errno
# of the ioctl that failed (EMFILE is answered as such before it is returned).
if _native is not None:
    receive_or_stop = _native_receive_or_stop
    respond = _native_respond
    install = _native.install
    id_valid = _native.id_valid
else:
    receive_or_stop = _receive_or_stop
    respond = _respond
    install = _install
    id_valid = _id_valid


def set_flags(listener: int, flags: int) -> None:
    """NOTIF_SET_FLAGS takes its flags by value, not through a pointer."""
    check("NOTIF_SET_FLAGS", _ioctl(listener, ctypes.c_ulong(NOTIF_SET_FLAGS), ctypes.c_ulong(flags)))


def _failed(name: str, listener: int) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, os.strerror(code), f"{name}({listener})")
