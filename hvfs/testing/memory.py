"""A fake address space for a fake notifying thread: pages the test maps and fills."""

from __future__ import annotations

import errno
import os
import struct

PAGE = 4096


class Placing:
    """Placing call arguments in an address space that has ``map`` (the address of fresh
    pages, the page after them unmapped) and ``write``: a fake one, or this process's own
    (tests/unit/native.py)."""

    def map(self, size: int) -> int:
        raise NotImplementedError

    def write(self, address: int, data: bytes) -> None:
        raise NotImplementedError

    def put(self, data: bytes) -> int:
        """``data`` at a new address (the page after it unmapped); return the address."""
        address = self.map(len(data))
        self.write(address, data)
        return address

    def put_at_end(self, data: bytes) -> int:
        """``data`` so that it ends exactly where its mapping does: the next byte is on an
        unmapped page (a string with no NUL before the end of memory)."""
        start = self.map(len(data))
        pages = max(1, -(-len(data) // PAGE))
        address = start + pages * PAGE - len(data)
        self.write(address, data)
        return address

    def path(self, path: str | bytes) -> int:
        """A NUL-terminated path at a new address."""
        return self.put(os.fsencode(path) + b"\0")

    def pack(self, layout: str, *values: int) -> int:
        """``struct.pack(layout, *values)`` at a new address: a struct a call points to."""
        return self.put(struct.pack(layout, *values))


class FakeMemory(Placing):
    """Pages mapped by the test, read as ``process_vm_readv`` reads a thread's memory: a
    read stops at the first unmapped page, and fails with EFAULT when even its first byte
    is unmapped. Address 0 (NULL) and the page after every mapping are never mapped."""

    def __init__(self) -> None:
        self._pages: dict[int, bytearray] = {}
        self._next = 0x10000

    def map(self, size: int) -> int:
        """Map ``size`` bytes of zeroes (whole pages) at a new address, followed by an
        unmapped page; return the address."""
        pages = max(1, -(-size // PAGE))
        address = self._next
        for i in range(pages):
            self._pages[address // PAGE + i] = bytearray(PAGE)
        self._next = address + (pages + 1) * PAGE
        return address

    def unmapped(self) -> int:
        """An address no byte of which is mapped."""
        return self.map(1) + PAGE

    def unmap(self, address: int, size: int) -> None:
        """Unmap every page that ``address``..``address + size`` touches."""
        for page in range(address // PAGE, (address + size - 1) // PAGE + 1):
            self._pages.pop(page, None)

    def write(self, address: int, data: bytes) -> None:
        """Store ``data`` at ``address``, in mapped pages only (else EFAULT)."""
        for offset in range(len(data)):
            page = self._pages.get((address + offset) // PAGE)
            if page is None:
                raise OSError(errno.EFAULT, os.strerror(errno.EFAULT), hex(address + offset))
            page[(address + offset) % PAGE] = data[offset]

    def read(self, address: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``address``, as ``hvfs._sys.process.read_memory``."""
        data = bytearray()
        at, end = address, address + size
        while at < end:
            page = self._pages.get(at // PAGE)
            if page is None:
                break
            stop = min(end, (at // PAGE + 1) * PAGE)
            data += page[at % PAGE : at % PAGE + stop - at]
            at = stop
        if size and not data:
            raise OSError(errno.EFAULT, os.strerror(errno.EFAULT), hex(address))
        return bytes(data)
