"""The kernel as the oracle of decoder tests: the same call, with the same memory layout,
made natively by this process (``native_errno``), gives the errno a decoder must give."""

from __future__ import annotations

import ctypes
import mmap

from hvfs.intercept.arch import native
from hvfs.intercept.filter import syscall_numbers
from hvfs.testing.memory import Placing

PAGE = mmap.PAGESIZE
PROT_NONE = 0
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_NUMBERS = {name: nr for nr, name in syscall_numbers(native()).items()}


def native_errno(syscall: str, *args: int) -> int:
    """The errno of ``syscall(*args)`` made by this process; 0 if it succeeded."""
    registers = [ctypes.c_ulong(a & (1 << 64) - 1) for a in args]
    ctypes.set_errno(0)
    result = _libc.syscall(ctypes.c_long(_NUMBERS[syscall]), *registers)
    return ctypes.get_errno() if result == -1 else 0


class NativeMemory(Placing):
    """FakeMemory's interface on this process's own memory: each mapping is followed by a
    page that cannot be read (PROT_NONE), as unmapped memory for the kernel."""

    def __init__(self) -> None:
        self._maps: list[tuple[mmap.mmap, ctypes.Array[ctypes.c_char]]] = []

    def map(self, size: int) -> int:
        pages = max(1, -(-size // PAGE))
        region = mmap.mmap(-1, (pages + 1) * PAGE)
        view = (ctypes.c_char * ((pages + 1) * PAGE)).from_buffer(region)
        address = ctypes.addressof(view)
        if _libc.mprotect(address + pages * PAGE, PAGE, PROT_NONE) != 0:
            raise OSError(ctypes.get_errno(), "mprotect")
        self._maps.append((region, view))
        return address

    def unmapped(self) -> int:
        """An address no byte of which can be read."""
        return self.map(1) + PAGE

    def write(self, address: int, data: bytes) -> None:
        ctypes.memmove(address, data, len(data))
