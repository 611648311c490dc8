"""Path resolution in a VM's views: always the kernel's, always inside the VM's root.

``openat2`` with ``RESOLVE_IN_ROOT`` from the VM's root fd handles ``..``, symlinks
(absolute ones included), mount crossings and ``O_CREAT`` through dangling symlinks
exactly as the kernel does for the VM. An ``*at`` call is only ever given a parent fd
resolved this way and a single, non-following last component, so nothing can reach the
manager's own root.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from hvfs._sys.files import O_PATH, RESOLVE_IN_ROOT, openat2


def split(path: str) -> tuple[str, str]:
    """``'/a/b/c/'`` → ``('/a/b', 'c/')``; the root gives ``('/', '')``.

    A trailing slash stays on the last component, where the kernel gives it its meaning
    (``unlink("f/")`` is ENOTDIR).
    """
    stripped = path.rstrip("/")
    if not stripped:
        return "/", ""
    head, _, last = stripped.rpartition("/")
    return head or "/", last + ("/" if len(stripped) < len(path) else "")


@contextmanager
def fd_closing(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def open_object(root: int, path: str, *, follow: bool = True) -> int:
    """An O_PATH fd of what ``path`` names under ``root`` (the symlink itself when not following)."""
    return openat2(root, path, O_PATH | (0 if follow else os.O_NOFOLLOW), 0, RESOLVE_IN_ROOT)


@contextmanager
def parent(root: int, path: str) -> Iterator[tuple[int, str]]:
    """The directory holding ``path``'s last component, and that component."""
    head, last = split(path)
    fd = openat2(root, head, O_PATH | os.O_DIRECTORY, 0, RESOLVE_IN_ROOT)
    try:
        yield fd, last
    finally:
        os.close(fd)


def proc_path(fd: int) -> str:
    """A path that names the object of ``fd`` itself, through procfs."""
    return f"/proc/self/fd/{fd}"
