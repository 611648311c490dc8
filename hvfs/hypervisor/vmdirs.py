"""VMs' state directories made and removed by renaming kept empty ones (issue 14).

Each VM has a state directory (``vms/ID/``, with ``staging/``, where its views are built
on a tmpfs of their own). On this project's ext4 machines a ``mkdir`` costs 0.5-1 ms of
the manager's CPU and an ``rmdir`` 0.5 (ext4 looks for a free inode not recently deleted:
the more VMs come and go, the longer), against 0.02 ms for a ``rename``: a warm run made
two and removed two, a third of its spare's making. So a VM's directory, emptied when the
VM is forgotten, is kept under a name of its own (``vms/.free-RANDOM``, at most ``KEPT``)
and renamed to the next VM's, while the manager makes spares (``keep``: a configuration
run lately; ``drop`` when none is, and at the manager's exit).

What keeps one VM from seeing another's: only an emptied directory is kept (every entry
the VM had removed; ``staging/`` kept only if empty and no mount point), owned by the
manager's uid and writable by no other (all of it beneath ``vms/``, 0700); and it is
never given back its old name (names are random), so what refers to the old VM's paths
(its shim unlinks its socket as it ends) finds nothing. Anything else is removed as
before. A manager killed leaves them to the next manager's sweep (daemon._sweep_vms:
unclaimed, and older than it waits).
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
_kept: dict[str, list[str]] = {}  # layout.vms: the names kept, for this process
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


def kept(layout: Layout) -> set[str]:
    """The names of the directories this manager keeps (not the sweep's)."""
    with _lock:
        return set(_kept.get(layout.vms, ()))


def drop(layout: Layout) -> None:
    """Remove the directories kept, and keep none until ``keep`` (no spares are made, or
    the manager exits)."""
    with _lock:
        names = _kept.pop(layout.vms, [])
    for name in names:
        with contextlib.suppress(OSError):
            remove_tree(os.path.join(layout.vms, name))


def _emptied(path: str) -> bool:
    """Whether ``path`` is now an empty VM directory of ours: its entries removed but an
    empty ``staging/`` on the same file system (no mount point)."""
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
                else:
                    with contextlib.suppress(FileNotFoundError):  # its shim's socket, as the shim ends
                        os.unlink(entry.path)
        return staging
    except OSError:
        return False
