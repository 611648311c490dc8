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

from hvfs import api
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


@contextmanager
def writable_twin(rw_root: int, file: api.OpenFile) -> Iterator[tuple[int, os.stat_result] | None]:
    """The open file's inode in the writable view, or None to act on the file itself.

    A file the VM opened itself sits on its read-only boot view; the same inode in the
    writable view is found by its path and checked by device and inode. A writable file
    (the manager handed it out for writing, or the VM inherited it) is used as it is.
    """
    if not os.fstatvfs(file.fd).f_flag & os.ST_RDONLY or not file.path.startswith("/"):
        yield None
        return
    try:
        twin = open_object(rw_root, file.path, follow=False)
    except OSError:
        yield None
        return
    with fd_closing(twin):
        st, original = os.fstat(twin), os.fstat(file.fd)
        yield (twin, st) if (st.st_dev, st.st_ino) == (original.st_dev, original.st_ino) else None
