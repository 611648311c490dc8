"""VMs' and groups' state directories made and removed by renaming kept empty ones (issue 14).

Each VM has a state directory (``vms/ID/``, with ``staging/``, where its views are built
on a tmpfs of their own), each group one (``groups/GID/``, made on the run's path, with
its ``group.json``). On this project's ext4 machines a ``mkdir`` or a new file costs
0.1-1 ms of the manager's CPU and an ``rmdir`` as much (ext4 looks for a free inode not
recently deleted: the more files come and go, the longer), against 0.014 ms for a
``rename``: a warm run made three directories and two files and removed them. So a VM's
directory, emptied when the VM is forgotten, is kept under a name of its own
(``vms/.free-RANDOM``, at most ``KEPT``) and renamed to the next VM's; a group's
likewise, its ``group.json`` truncated to nothing to be the next group's
``group.json.tmp`` (whose first write then opens a file that exists). A VM's ``vm.json``
and ``exit`` become the next VM's ``vm.json.tmp`` and ``.exit`` the same way, emptied
(the two files its spare's making and its shim's exit would otherwise make: two inodes
of the three a run made on ext4; the third, the shim's socket, a ``bind`` must make). Directories are
kept while the manager makes spares (``keep``: a configuration run lately), and removed
when none is and at the manager's exit (``drop``).

What keeps one VM or run from seeing another's: only an emptied directory is kept (a VM's
entries removed but its ``vm.json`` and ``exit`` emptied and renamed to the names that
are only ever written, never read, its ``staging/`` kept only if empty and no mount
point; a group's ``group.json`` emptied, and a group with anything else removed), owned by the manager's
uid and writable by no other (all of it beneath ``vms/`` and ``groups/``, 0700); and it
is never given back its old name (names are random), so what refers to the old VM's
paths (its shim unlinks its socket as it ends) finds nothing. Anything else is removed as
before. A manager killed leaves its kept ones to the next manager: its sweep
(daemon._sweep_vms: unclaimed, and older than it waits) and its resumption of groups.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading

from hvfs.hypervisor.layout import Layout, remove_tree

KEPT = 4  # directories kept at once: the few VMs that end between two spares' making
FREE = ".free-"
WRITABLE = stat.S_IWGRP | stat.S_IWOTH  # a directory others may write to is not kept
_kept: dict[str, list[str]] = {}  # layout.vms or layout.groups: the names kept, for this process
_lock = threading.Lock()


def make(layout: Layout, vmid: str) -> None:
    """``vms/VMID/staging/``, from a kept directory when there is one (a VM started again,
    whose directory exists, keeps its own)."""
    with _lock:
        names = _kept.get(layout.vms)
        name = names.pop() if names else None
    if name is not None:
        try:
            os.rename(os.path.join(layout.vms, name), layout.vm(vmid))
            os.utime(layout.vm(vmid))  # new to the sweep, as a directory made now
            return
        except OSError:  # VMID exists, or the kept one is gone: made as before
            with contextlib.suppress(OSError):
                remove_tree(os.path.join(layout.vms, name))
    os.makedirs(layout.staging(vmid), mode=0o700, exist_ok=True)


def remove(layout: Layout, vmid: str) -> None:
    """Remove VM ``vmid``'s state directory: emptied and kept for the next VM while fewer
    than KEPT are, otherwise removed (``remove_tree``; its OSError as that one's)."""
    path = layout.vm(vmid)
    with _lock:
        room = layout.vms in _kept and len(_kept[layout.vms]) < KEPT
    if room and _emptied(path):
        name = FREE + os.urandom(6).hex()
        try:
            os.rename(path, os.path.join(layout.vms, name))
        except OSError:
            pass
        else:
            with _lock:
                _kept.setdefault(layout.vms, []).append(name)
            return
    remove_tree(path)


def keep(layout: Layout) -> None:
    """Keep the directories of the VMs that end from now on, until ``drop``: while spares
    are made (spares.Spares: a configuration was run and not left idle)."""
    with _lock:
        _kept.setdefault(layout.vms, [])
        _kept.setdefault(layout.groups, [])


def kept(layout: Layout) -> set[str]:
    """The names of the directories this manager keeps (not the sweep's)."""
    with _lock:
        return set(_kept.get(layout.vms, ()))


def drop(layout: Layout) -> None:
    """Remove the directories kept, and keep none until ``keep`` (no spares are made, or
    the manager exits)."""
    for parent in (layout.vms, layout.groups):
        with _lock:
            names = _kept.pop(parent, [])
        for name in names:
            with contextlib.suppress(OSError):
                remove_tree(os.path.join(parent, name))


def make_group(layout: Layout, gid: str) -> None:
    """``groups/GID/``, from a kept one when there is one: with an empty ``group.json.tmp``,
    so that the group's first ``write_json``, on the run's path, makes no file either (a
    group started again keeps its own)."""
    path = layout.group(gid)
    with _lock:
        names = _kept.get(layout.groups)
        name = names.pop() if names and not os.path.isdir(path) else None
    if name is not None:
        try:
            os.rename(os.path.join(layout.groups, name), path)
            return
        except OSError:
            with contextlib.suppress(OSError):
                remove_tree(os.path.join(layout.groups, name))
    os.makedirs(path, mode=0o700, exist_ok=True)


def remove_group(layout: Layout, gid: str) -> None:
    """Remove group ``gid``'s state directory, or keep it emptied: its ``group.json``,
    truncated to nothing, becomes the next group's ``group.json.tmp``; a group with more
    (a project's logs, cgroups) is removed."""
    path = layout.group(gid)
    with _lock:
        room = layout.groups in _kept and len(_kept[layout.groups]) < KEPT
    if room and _emptied_group(path):
        name = FREE + os.urandom(6).hex()
        with contextlib.suppress(OSError):
            os.rename(path, os.path.join(layout.groups, name))
            with _lock:
                _kept.setdefault(layout.groups, []).append(name)
            return
    with contextlib.suppress(OSError):
        remove_tree(path)


def _emptied_group(path: str) -> bool:
    try:
        own = os.lstat(path)
        if not stat.S_ISDIR(own.st_mode) or own.st_uid != os.geteuid() or own.st_mode & WRITABLE:
            return False
        names = os.listdir(path)
        if not set(names) <= {"group.json", "group.json.tmp"}:
            return False
        for name in names:
            if not stat.S_ISREG(os.lstat(os.path.join(path, name)).st_mode):
                return False
        temporary = os.path.join(path, "group.json.tmp")
        if "group.json" in names:
            os.rename(os.path.join(path, "group.json"), temporary)
        if names:  # nothing of this group's run is kept; truncated through an fd closed now, since
            # ext4 flushes a file truncated to nothing at its next close: the next group's write
            fd = os.open(temporary, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                os.ftruncate(fd, 0)
            finally:
                os.close(fd)
        return True
    except OSError:
        return False


# A VM's files kept, emptied, under the names that are written before being renamed
# (write_json's temporary, the shim's .exit in shim.c): a later VM's write opens them.
REUSED = {"vm.json": "vm.json.tmp", "exit": ".exit"}


def _emptied(path: str) -> bool:
    """Whether ``path`` is now an empty VM directory of ours: its entries removed but an
    empty ``staging/`` on the same file system (no mount point), and ``REUSED``'s files
    emptied under their new names."""
    try:
        own = os.lstat(path)
        if not stat.S_ISDIR(own.st_mode) or own.st_uid != os.geteuid() or own.st_mode & WRITABLE:
            return False
        staging = False
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.name == "staging" and entry.is_dir(follow_symlinks=False):
                    found = entry.stat(follow_symlinks=False)
                    if found.st_dev != own.st_dev or found.st_mode & WRITABLE or os.listdir(entry.path):
                        return False
                    staging = True
                elif entry.is_dir(follow_symlinks=False):
                    return False
                elif entry.name not in REUSED and entry.name not in REUSED.values():  # those below
                    with contextlib.suppress(FileNotFoundError):  # its shim's socket, as the shim ends
                        os.unlink(entry.path)
        for name, temporary in REUSED.items():
            here, there = os.path.join(path, name), os.path.join(path, temporary)
            if _emptied_file(here, own):
                os.rename(here, there)
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(here)
            if not _emptied_file(there, own):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(there)
        return staging
    except OSError:
        return False


def _emptied_file(path: str, directory: os.stat_result) -> bool:
    """Whether ``path`` is a file of ours that no other may write, with one link, now
    emptied; False (and left as it is) if it is anything else or missing."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):  # never opened: a FIFO, a device, a link
            return False
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        found = os.fstat(fd)
        if (
            not stat.S_ISREG(found.st_mode)
            or found.st_uid != directory.st_uid
            or found.st_dev != directory.st_dev
            or found.st_mode & WRITABLE
            or found.st_nlink != 1
        ):
            return False
        os.ftruncate(fd, 0)  # nothing of the VM's is kept
        return True
    finally:
        os.close(fd)
