"""Restoring: a file, or a whole tree, as it was at a time, into a directory.

``select`` chooses what to restore; ``restore_into(store, selection, dir_fd)`` writes it
under a directory fd, so the same code restores into a host directory (``hvfs backup
restore --to DIR``) or, through the manager, into a running VM's writable view. A file
lands as ``dir_fd/BASENAME``; a tree as ``dir_fd/RELATIVE`` below the chosen prefix.

A file restored as of a time is its newest content at or before it, even if it was
removed since (getting back a deleted file is the point); a tree restored as of a time
is exactly the files that existed then, each with its content then.

Every file is written to a temporary name in its directory and renamed over its target,
so a reader sees the old file or the restored one, never a half-written one. Directories
on the way are opened with O_NOFOLLOW one by one: a symlink in the target tree fails the
restore (ELOOP) rather than leading the write elsewhere.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import secrets
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from hvfs.services.backup.index import BackupIndex, Version
from hvfs.services.backup.store import BlobStore
from hvfs.services.units import format_time


class RestoreError(Exception):
    """Nothing to restore, or an ambiguous choice; the message says what to give."""


@dataclass(frozen=True, slots=True)
class Selection:
    vm: str
    path: str
    at: float
    tree: bool  # path is a directory prefix; versions are the files under it
    versions: tuple[Version, ...]

    def relative(self, version: Version) -> str:
        """Where ``version`` lands below the target directory."""
        base = self.path if self.tree else posixpath.dirname(self.path)
        return posixpath.relpath(version.path, base)


def select(index: BackupIndex, path: str, *, vm: str | None = None, at: float | None = None) -> Selection:
    """What restoring ``path`` (absolute VM path) as of ``at`` (default: now) writes: the
    file, if ``path`` had content then, else every file under it. ``vm`` may be omitted
    when one VM only has versions there. Raises RestoreError."""
    if not path.startswith("/"):
        raise RestoreError(f"{path!r} is not an absolute VM path")
    path = posixpath.normpath(path)
    at = time.time() if at is None else at
    if vm is None:
        vms = index.vms_with(path)
        if not vms:
            raise RestoreError(f"no backup of {path}; 'hvfs backup list' shows what there is")
        if len(vms) > 1:
            raise RestoreError(
                f"{path} has versions from several VMs ({', '.join(vms)}): choose one with --vm "
                "(runs of hvfs run given one --name keep one history)"
            )
        vm = vms[0]
    version = index.content_at(vm, path, at)
    if version is not None:
        return Selection(vm, path, at, False, (version,))
    tree = index.tree_at(vm, path, at)
    if not tree:
        raise RestoreError(f"no version of {path} in VM {vm} at or before {format_time(at)}")
    return Selection(vm, path, at, True, tuple(tree))


def restore_into(store: BlobStore, selection: Selection, dir_fd: int) -> list[str]:
    """Write the selected versions below ``dir_fd``, with their mode and mtime; returns the
    relative paths written. Raises OSError (ELOOP for a symlink on the way) and
    store.CorruptBlob; files written before a failure stay."""
    written = []
    for version in selection.versions:
        relative = selection.relative(version)
        write_version(store, version, dir_fd, relative)
        written.append(relative)
    return written


def restore_as_tar(store: BlobStore, selection: Selection, out: BinaryIO) -> list[str]:
    """Write the selected versions to ``out`` as a tar stream, with the same relative
    paths as restore_into; returns them. A running VM takes it through its manager, so
    the restore is one more change the manager sees (``… --to - | hvfs exec VM tar -x``)."""
    written = []
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        for version in selection.versions:
            if version.hash is None:
                raise ValueError(f"{version.path} was removed at that version: there is no content")
            relative = selection.relative(version)
            member = tarfile.TarInfo(relative)
            data = store.read(version.hash)  # checked against its hash before any of it is sent
            member.size, member.mode, member.mtime = len(data), version.mode & 0o7777, version.mtime_ns / 1e9
            archive.addfile(member, io.BytesIO(data))
            written.append(relative)
    return written


def write_version(store: BlobStore, version: Version, dir_fd: int, relative: str) -> None:
    """Write one version at ``relative`` below ``dir_fd`` (see the module's docstring)."""
    if version.hash is None:
        raise ValueError(f"{version.path} was removed at that version: there is no content")
    if any(part in ("", ".", "..") for part in relative.split("/")):
        raise ValueError(f"refusing to restore to {relative!r}: not a plain relative path")
    *directories, name = relative.split("/")
    with _directory(dir_fd, directories) as parent:
        temporary = f".{name}.restore-{secrets.token_hex(4)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temporary, flags, 0o600, dir_fd=parent)
        try:
            store.copy_to(version.hash, fd)
            os.fchmod(fd, version.mode)
            os.utime(fd, ns=(version.mtime_ns, version.mtime_ns))
            os.fsync(fd)
            os.rename(temporary, name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=parent)
            raise
        finally:
            os.close(fd)


@contextlib.contextmanager
def _directory(dir_fd: int, names: list[str]) -> Iterator[int]:
    """An fd on ``dir_fd/names…``, made (mode 0755) where missing, never through a symlink."""
    current = os.dup(dir_fd)
    try:
        for name in names:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=current)
            following = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=current)
            os.close(current)
            current = following
        yield current
    finally:
        os.close(current)
