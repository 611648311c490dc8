"""Socket calls with a caller's exact bytes: the socket module builds addresses from
Python values (and picks their length), while the manager must hand the kernel the
very sockaddr a VM gave, so that every errno and every abstract name comes out as it
would natively."""

from __future__ import annotations

import ctypes
import errno
import os

from hvfs._sys.abi import SO_DOMAIN, SO_ERROR, SO_TYPE, SOL_SOCKET
from hvfs._sys.libc import check, function

_ADDRESS = (ctypes.c_char_p, ctypes.c_uint32)  # a sockaddr and its length
_bind = function("bind", ctypes.c_int, ctypes.c_int, *_ADDRESS)
_connect = function("connect", ctypes.c_int, ctypes.c_int, *_ADDRESS)
_sendto = function("sendto", ctypes.c_ssize_t, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int, *_ADDRESS)
_sendmsg = function("sendmsg", ctypes.c_ssize_t, ctypes.c_int, ctypes.c_void_p, ctypes.c_int)
_getsockopt = function(
    "getsockopt", ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p
)
_getpeername = function("getpeername", ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_char_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.POINTER(_Iovec)),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_char_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


def bind(fd: int, address: bytes) -> None:
    """bind(2) with ``address`` as the sockaddr, ``len(address)`` as its length."""
    check("bind", _bind(fd, address, len(address)), fd, address)


def connect(fd: int, address: bytes) -> None:
    check("connect", _connect(fd, address, len(address)), fd, address)


def sendto(fd: int, data: bytes, flags: int, address: bytes) -> int:
    """sendto(2) to ``address``: an empty one is a non-NULL pointer with length 0, which
    some families refuse (UDP: EINVAL) where NULL would mean the connected peer."""
    return check("sendto", _sendto(fd, data, len(data), flags, address, len(address)), fd, flags)


def sendmsg(fd: int, data: bytes, flags: int, *, name: bytes | None, control: bytes, header_flags: int) -> int:
    """sendmsg(2) of one buffer. ``name`` None is msg_name NULL; ``header_flags`` is the
    msghdr's msg_flags, of which the kernel takes MSG_EOR."""
    # Safe because: every pointer below is to a bytes object this frame keeps alive for
    # the call, and each length is that object's own; the kernel only reads them.
    iov = _Iovec(data, len(data))
    header = _Msghdr(
        name, len(name) if name else 0, ctypes.pointer(iov), 1, control or None, len(control), header_flags
    )
    return check("sendmsg", _sendmsg(fd, ctypes.byref(header), flags), fd, flags)


def _int_option(fd: int, level: int, option: int) -> int:
    value, size = ctypes.c_int(0), ctypes.c_uint32(ctypes.sizeof(ctypes.c_int))
    check("getsockopt", _getsockopt(fd, level, option, ctypes.byref(value), ctypes.byref(size)), fd, option)
    return value.value


def kind(fd: int) -> tuple[int, int]:
    """The socket's own (domain, type): SO_DOMAIN and SO_TYPE, which no one can change
    once it exists. ENOTSOCK for anything else."""
    return _int_option(fd, SOL_SOCKET, SO_DOMAIN), _int_option(fd, SOL_SOCKET, SO_TYPE)


def take_error(fd: int) -> int:
    """SO_ERROR: the pending error of the socket (0 if none), which reading clears."""
    return _int_option(fd, SOL_SOCKET, SO_ERROR)


def is_connected(fd: int) -> bool:
    storage = ctypes.create_string_buffer(128)
    size = ctypes.c_uint32(128)
    if _getpeername(fd, storage, ctypes.byref(size)) == 0:
        return True
    code = ctypes.get_errno()
    if code == errno.ENOTCONN:
        return False
    raise OSError(code, os.strerror(code), f"getpeername({fd})")
