"""Per-thread capability sets (capget/capset act on the calling thread only)."""

from __future__ import annotations

import ctypes

from hvfs._sys.libc import typed_syscall

_VERSION_3 = 0x20080522


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_capget = typed_syscall("capget", ctypes.c_void_p, ctypes.c_void_p)
_capset = typed_syscall("capset", ctypes.c_void_p, ctypes.c_void_p)


def get_thread_caps() -> tuple[int, int, int]:
    """(effective, permitted, inheritable) of the calling thread, as 64-bit masks."""
    header = _Header(_VERSION_3, 0)
    data = (_Data * 2)()
    _capget(ctypes.byref(header), data)
    return (
        data[0].effective | data[1].effective << 32,
        data[0].permitted | data[1].permitted << 32,
        data[0].inheritable | data[1].inheritable << 32,
    )


def set_thread_caps(effective: int, permitted: int, inheritable: int) -> None:
    header = _Header(_VERSION_3, 0)
    data = (_Data * 2)(
        _Data(effective & 0xFFFFFFFF, permitted & 0xFFFFFFFF, inheritable & 0xFFFFFFFF),
        _Data(effective >> 32, permitted >> 32, inheritable >> 32),
    )
    _capset(ctypes.byref(header), data)
