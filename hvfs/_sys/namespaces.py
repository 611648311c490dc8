"""Joining namespaces that other processes hold: setns(2) and the ioctls of nsfs."""

from __future__ import annotations

import fcntl

from hvfs._sys.libc import syscall

NS_GET_PARENT = 0xB702  # _IO(0xb7, 0x2): the parent of a user (or pid) namespace


def setns(fd: int, nstype: int) -> None:
    """Move the calling thread into the namespace ``fd`` names (a whole single-threaded
    process, for a user namespace)."""
    syscall("setns", fd, nstype)


def parent(fd: int) -> int:
    """An fd of the parent of the user namespace ``fd``. Raises PermissionError when the
    parent lies outside the caller's own user namespace."""
    return fcntl.ioctl(fd, NS_GET_PARENT)
