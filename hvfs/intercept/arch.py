"""The architectures the driver decodes, and their ``struct stat`` layouts."""

# Annotations evaluated, not ``from __future__ import annotations``: a NamedTuple's string
# annotations are compiled one by one at import (tests/test_startup.py).

import os
import struct
from collections.abc import Callable
from typing import NamedTuple

_NS = 1_000_000_000


def _times(st: os.stat_result) -> tuple[int, ...]:
    return (
        st.st_atime_ns // _NS,
        st.st_atime_ns % _NS,
        st.st_mtime_ns // _NS,
        st.st_mtime_ns % _NS,
        st.st_ctime_ns // _NS,
        st.st_ctime_ns % _NS,
    )


def _pack_stat_x86_64(st: os.stat_result) -> bytes:
    # struct stat of arch/x86/include/uapi/asm/stat.h (64-bit): 144 bytes.
    return struct.pack(
        "<QQQIIIiQqqq6q3q",
        st.st_dev,
        st.st_ino,
        st.st_nlink,
        st.st_mode,
        st.st_uid,
        st.st_gid,
        0,
        st.st_rdev,
        st.st_size,
        st.st_blksize,
        st.st_blocks,
        *_times(st),
        0,
        0,
        0,
    )


def _pack_stat_generic(st: os.stat_result) -> bytes:
    # struct stat of include/uapi/asm-generic/stat.h (aarch64, riscv64): 128 bytes.
    a, an, m, mn, c, cn = _times(st)
    return struct.pack(
        "<QQIIIIQQqiiqqQqQqQII",
        st.st_dev,
        st.st_ino,
        st.st_mode,
        st.st_nlink,
        st.st_uid,
        st.st_gid,
        st.st_rdev,
        0,
        st.st_size,
        st.st_blksize,
        0,
        st.st_blocks,
        a,
        an,
        m,
        mn,
        c,
        cn,
        0,
        0,
    )


class Arch(NamedTuple):  # not a dataclass: hvfs run imports this at every start, and a NamedTuple costs less
    name: str
    audit: int  # AUDIT_ARCH_* as seccomp_data.arch reports it, and as libseccomp names it
    pack_stat: Callable[[os.stat_result], bytes]


X86_64 = Arch("x86_64", 0xC000003E, _pack_stat_x86_64)
AARCH64 = Arch("aarch64", 0xC00000B7, _pack_stat_generic)
SUPPORTED = {a.name: a for a in (X86_64, AARCH64)}


def native() -> Arch:
    machine = os.uname().machine  # platform.machine(), without importing platform
    try:
        return SUPPORTED[machine]
    except KeyError:
        raise RuntimeError(f"hvfs supports x86_64 and aarch64, not {machine}") from None
