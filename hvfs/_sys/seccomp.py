"""libseccomp's identity, read without pyseccomp: importing pyseccomp looks the library up
with ``ctypes.util.find_library``, which runs ldconfig, milliseconds of every start."""

from __future__ import annotations

import ctypes

SONAME = "libseccomp.so.2"  # what find_library("seccomp") names on every distribution HVFS supports


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


def libseccomp_version(soname: str = SONAME) -> str | None:
    """The version of the libseccomp the dynamic linker finds as ``soname`` ("2.5.4"), or
    None when there is none (or it is older than 2.3, which cannot tell)."""
    try:
        library = ctypes.CDLL(soname)
        version = library.seccomp_version
    except (OSError, AttributeError):
        return None
    version.restype = ctypes.POINTER(_Version)
    found = version().contents
    return f"{found.major}.{found.minor}.{found.micro}"
