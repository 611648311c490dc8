"""libc handle, syscall numbers per architecture, and the errno-checked ``syscall`` helper."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from typing import Any

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

MACHINE = os.uname().machine  # what platform.machine() says, without importing platform

# Numbers for the calls the stdlib lacks. From 403 up, the numbers are shared by all
# architectures, so those appear once below.
_NUMBERS: dict[str, dict[str, int]] = {
    "x86_64": {
        "unshare": 272,
        "setns": 308,
        "mount": 165,
        "umount2": 166,
        "pivot_root": 155,
        "seccomp": 317,
        "process_vm_readv": 310,
        "process_vm_writev": 311,
        "renameat2": 316,
        "setfsuid": 122,
        "setfsgid": 123,
        "setgroups": 116,
        "capget": 125,
        "capset": 126,
        "statx": 332,
        "prctl": 157,
        "utimensat": 280,
        "kcmp": 312,
    },
    "aarch64": {
        "unshare": 97,
        "setns": 268,
        "mount": 40,
        "umount2": 39,
        "pivot_root": 41,
        "seccomp": 277,
        "process_vm_readv": 270,
        "process_vm_writev": 271,
        "renameat2": 276,
        "setfsuid": 151,
        "setfsgid": 152,
        "setgroups": 159,
        "capget": 90,
        "capset": 91,
        "statx": 291,
        "prctl": 167,
        "utimensat": 88,
        "kcmp": 272,
    },
}
_SHARED = {
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "pidfd_send_signal": 424,
    "pidfd_open": 434,
    "openat2": 437,
    "pidfd_getfd": 438,
    "close_range": 436,
    "mount_setattr": 442,
    "fchmodat2": 452,
    "faccessat2": 439,
}


class UnsupportedMachine(RuntimeError):
    """HVFS knows the syscall numbers of x86_64 and aarch64 only."""


def number(name: str) -> int:
    """The syscall number of ``name`` on this machine."""
    if name in _SHARED:
        return _SHARED[name]
    table = _NUMBERS.get(MACHINE)
    if table is None:
        raise UnsupportedMachine(f"hvfs supports x86_64 and aarch64, not {MACHINE}")
    return table[name]


def _arg(value: Any) -> Any:
    # Variadic syscall(): a bare Python int would be passed as a 32-bit C int, leaving
    # the upper half of a 64-bit argument register undefined.
    if isinstance(value, bool):
        return ctypes.c_long(int(value))
    if isinstance(value, int):
        return ctypes.c_long(value)
    if isinstance(value, str):
        return os.fsencode(value)
    return value


def syscall(name: str, *args: Any) -> int:
    """Issue syscall ``name``; raise ``OSError`` naming the call on failure."""
    result = _syscall(ctypes.c_long(number(name)), *(_arg(a) for a in args))
    if result < 0:
        raise _error(name, args)
    return int(result)


def typed_syscall(name: str, *argtypes: Any) -> Callable[..., int]:
    """``syscall`` for the hot paths: one call whose argument types are declared up front,
    so that ctypes converts the arguments in C instead of wrapping each one in Python.

    A fixed prototype for the variadic syscall(3) is safe on x86_64 and aarch64: glibc's
    syscall() only moves its arguments from registers to registers, and integer and
    pointer arguments travel in the same registers either way (``syscall`` above, which
    declares no types, calls it through a fixed prototype too)."""
    nr = number(name)
    raw = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_long, *argtypes, use_errno=True)(("syscall", _libc))

    def call(*args: Any) -> int:
        result: int = raw(nr, *args)
        if result < 0:
            raise _error(name, args)
        return result

    call.__name__ = name
    return call


def function(name: str, restype: Any, *argtypes: Any) -> Any:
    """A libc function with its types declared (a prototype of its own, so that no other
    user of the shared ``libc()`` handle sees different argument conversions)."""
    return ctypes.CFUNCTYPE(restype, *argtypes, use_errno=True)((name, _libc))


def _error(name: str, args: tuple[Any, ...]) -> OSError:
    """The errno as an OSError whose ``filename`` names the call and its arguments."""
    err = ctypes.get_errno()
    shown = ", ".join(_show(a) for a in args)
    return OSError(err, os.strerror(err), f"{name}({shown})")


def _show(value: Any) -> str:
    if isinstance(value, bytes) and b"\0" in value:
        return "…"  # a structure packed into bytes, not a path
    if isinstance(value, (bytes, str)):
        return repr(os.fsdecode(value))
    if isinstance(value, int):
        return str(value)
    return "…"


def check(name: str, result: int, *args: Any) -> int:
    """Turn a libc-style ``-1``/errno result into ``OSError`` naming the call."""
    if result < 0:
        raise _error(name, args)
    return result


def libc() -> ctypes.CDLL:
    return _libc
