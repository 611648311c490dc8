"""Applying a staged mount to its host directory (``hvfs run --commit-on-success``).

A staged mount is an overlay of the host directory whose upper layer holds what the VM
changed: a tree the VM made, so everything in it is hostile input (symlinks, hard links,
device nodes, whiteouts, names chosen to mislead), and the host directory itself may be
changed meanwhile by others (another VM that binds it, a host process).

So the host side is only ever reached from an fd of the host directory, one component at
a time: directories are entered with openat2 ``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
RESOLVE_NO_XDEV`` (a symlink swapped in, or a mount, stops that entry with ELOOP or
EXDEV), and every change is an ``*at`` call on one name in such a directory, none of
which follows a last-component symlink (files are written to a fresh ``O_EXCL`` name and
renamed over the old one). Regular files are copied (hard links become copies), symlinks
are made again as symlinks with their text, FIFOs made again; devices and sockets are
refused; a whiteout removes the name beneath the host directory; an opaque directory
replaces the host's. What cannot be applied is reported, never forced.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from dataclasses import dataclass, field

from hvfs._sys.abi import O_PATH, RESOLVE_BENEATH, RESOLVE_NO_SYMLINKS, RESOLVE_NO_XDEV
from hvfs._sys.files import openat2

BENEATH = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV
OPAQUE = "user.overlay.opaque"  # overlayfs with userxattr (the manager's are): a directory that hides the lower
TEMPORARY = ".hvfs-commit-"
MAX_REPORTED = 20


@dataclass
class CommitReport:
    applied: int = 0
    replaced: int = 0  # a file or symlink found where the VM made a directory, removed (not followed)
    refused: list[str] = field(default_factory=list)  # "PATH: why"

    def refuse(self, path: str, why: str) -> None:
        self.refused.append(f"{path}: {why}")


def _enter(directory: int, name: str) -> int:
    return openat2(directory, name, O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, 0, BENEATH)


def _open_dir(directory: int, name: str) -> int:
    return openat2(directory, name, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, 0, BENEATH)


def _remove(directory: int, name: str) -> None:
    """Remove ``name`` in ``directory`` whatever it is; a directory is emptied first,
    entered only beneath without following anything."""
    try:
        os.unlink(name, dir_fd=directory)
        return
    except FileNotFoundError:
        return
    except IsADirectoryError:
        pass
    except OSError as e:
        if e.errno != errno.EPERM:  # Linux answers EISDIR, some file systems EPERM
            raise
    inner = _open_dir(directory, name)
    try:
        for entry in os.scandir(inner):
            _remove(inner, entry.name)
    finally:
        os.close(inner)
    os.rmdir(name, dir_fd=directory)


def _temporary(directory: int, make: object) -> str:
    for _ in range(100):
        name = TEMPORARY + os.urandom(6).hex()
        try:
            make(name)  # type: ignore[operator]
            return name
        except FileExistsError:
            continue
    raise OSError(errno.EEXIST, "no free temporary name")


def _replace(directory: int, temporary: str, name: str) -> None:
    """Rename ``temporary`` over ``name``; a directory in the way is removed first."""
    try:
        os.rename(temporary, name, src_dir_fd=directory, dst_dir_fd=directory)
    except OSError as e:
        if e.errno not in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=directory)
            raise
        _remove(directory, name)
        os.rename(temporary, name, src_dir_fd=directory, dst_dir_fd=directory)


def _copy_file(upper: int, host: int, name: str, st: os.stat_result) -> None:
    source = openat2(upper, name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0, BENEATH)
    try:
        holder: list[int] = []

        def make(candidate: str) -> None:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            holder.append(os.open(candidate, flags, 0o600, dir_fd=host))

        temporary = _temporary(host, make)
        target = holder[0]
        try:
            with open(source, "rb", closefd=False) as reader, open(target, "wb", closefd=False) as writer:
                shutil.copyfileobj(reader, writer, 1 << 20)
            _own(target, st)
            os.fchmod(target, stat.S_IMODE(st.st_mode))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=host)
            raise
        finally:
            os.close(target)
    finally:
        os.close(source)
    _replace(host, temporary, name)


def _own(fd: int, st: os.stat_result) -> None:
    """The staged owner where the manager may give it (root); otherwise the manager's."""
    if os.geteuid() == 0:
        with contextlib.suppress(OSError):
            os.fchown(fd, st.st_uid, st.st_gid)


def _is_opaque(upper: int, name: str) -> bool:
    fd = openat2(upper, name, O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, 0, BENEATH)
    try:
        return os.getxattr(f"/proc/self/fd/{fd}", OPAQUE) == b"y"
    except OSError:
        return False
    finally:
        os.close(fd)


def _directory(upper: int, host: int, name: str, st: os.stat_result, where: str, report: CommitReport) -> None:
    if _is_opaque(upper, name):
        _remove(host, name)
    try:
        os.mkdir(name, 0o700, dir_fd=host)
    except FileExistsError:
        try:
            inner = _enter(host, name)
            os.close(inner)
        except OSError as e:
            if e.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
            _remove(host, name)  # a file or a symlink where the VM made a directory
            report.replaced += 1
            os.mkdir(name, 0o700, dir_fd=host)
    target = _open_dir(host, name)
    source = _open_dir(upper, name)
    try:
        _own(target, st)
        os.fchmod(target, stat.S_IMODE(st.st_mode))
        apply_directory(source, target, where, report)
    finally:
        os.close(target)
        os.close(source)


def _apply_entry(upper: int, host: int, name: str, where: str, report: CommitReport) -> None:
    st = os.stat(name, dir_fd=upper, follow_symlinks=False)
    kind = stat.S_IFMT(st.st_mode)
    if kind == stat.S_IFCHR and st.st_rdev == 0:  # overlayfs's whiteout: the VM removed it
        _remove(host, name)
    elif kind == stat.S_IFDIR:
        _directory(upper, host, name, st, where, report)
    elif kind == stat.S_IFREG:
        _copy_file(upper, host, name, st)
    elif kind == stat.S_IFLNK:
        text = os.readlink(name, dir_fd=upper)
        temporary = _temporary(host, lambda candidate: os.symlink(text, candidate, dir_fd=host))
        _replace(host, temporary, name)
    elif kind == stat.S_IFIFO:
        temporary = _temporary(host, lambda candidate: os.mkfifo(candidate, stat.S_IMODE(st.st_mode), dir_fd=host))
        _replace(host, temporary, name)
    else:
        report.refuse(where, "devices and sockets are not applied")
        return
    report.applied += 1


def apply_directory(upper: int, host: int, where: str, report: CommitReport) -> None:
    """Apply the staged directory ``upper`` (an fd) to the host directory ``host`` (an fd)."""
    for entry in sorted(os.scandir(upper), key=lambda e: e.name):
        path = f"{where.rstrip('/')}/{entry.name}"
        if entry.name.startswith(TEMPORARY):
            report.refuse(path, "a name hvfs keeps for itself")
            continue
        try:
            _apply_entry(upper, host, entry.name, path, report)
        except OSError as e:
            report.refuse(path, f"{e.strerror or e} (not applied)")


def apply_staged(upper: int, host: str, target: str) -> CommitReport:
    """Apply the upper layer (an fd of it) of the mount at ``target`` to the host directory ``host``."""
    report = CommitReport()
    try:
        destination = os.open(host, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        report.refuse(target, f"{host}: {e.strerror}")
        return report
    try:
        apply_directory(upper, destination, target, report)
    finally:
        os.close(destination)
    return report
