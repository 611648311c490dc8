"""inotify, which the stdlib lacks."""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Iterator

from hvfs._sys.libc import check, libc

IN_CLOSE_WRITE = 0x8
IN_IGNORED = 0x8000
IN_ONESHOT = 0x80000000
_EVENT = struct.Struct("iIII")


def init() -> int:
    return check("inotify_init1", libc().inotify_init1(ctypes.c_int(os.O_CLOEXEC)))


def add_watch(fd: int, path: str, mask: int) -> int:
    return check(
        "inotify_add_watch", libc().inotify_add_watch(ctypes.c_int(fd), os.fsencode(path), ctypes.c_uint32(mask)), path
    )


def events(data: bytes) -> Iterator[tuple[int, int]]:
    """(watch descriptor, mask) of each event in what a read of the inotify fd returned."""
    offset = 0
    while offset < len(data):
        wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
        yield wd, mask
        offset += _EVENT.size + length
