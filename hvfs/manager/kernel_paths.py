"""Paths into the VM's own kernel mounts (its procfs, its devpts), which the manager's
writable view holds only as empty placeholders.

A request on such a path is the kernel's to serve, on the VM's boot view. But procfs has
magic links: ``/proc/PID/fd/N``, ``cwd``, ``root`` and ``map_files`` reach an open file
wherever it is, a host file the VM inherited or received included, and on a writable
mount. So a change is never let through a magic link:

- ``/proc/PID/fd/N`` (and ``/proc/PID/task/TID/fd/N``) is served from the open file it
  names, which the manager reaches through the VM's own procfs, from the VM's root: the
  fd directory resolved by the kernel inside that root, then the one link followed by the
  kernel. A change acts on that file only if it is of the VM's world
  (``hvfs.manager.world``).
- Any other kernel path is resolved first by the kernel, in the VM's root and scoped to
  it (``RESOLVE_IN_ROOT``), where crossing a magic link fails with EXDEV: only a path
  that crosses none is let through. The driver has replaced /proc/self and
  /proc/thread-self by the caller's numbers, which name the same for the manager.

What the kernel then re-reads on CONTINUE is the VM's memory again; DESIGN.md says what
that leaves open, and hvfs/_native/served_dev.h why a continued write-open (a device
under /dev, which the C loop continues where ``opening._open_writable`` would) reaches
nothing whatever path the kernel reads then: every mount of the boot view is read-only, a
magic link reaches only what the VM holds open, a read-only fd from a read-only mount
(tests/adversarial/test_served_dev_races.py).
"""

from __future__ import annotations

import errno
import os

from hvfs import api
from hvfs._sys.abi import O_PATH, RESOLVE_BENEATH, RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS
from hvfs._sys.files import openat2
from hvfs.api.magic import fd_link
from hvfs.manager.resolve import fd_closing, open_at, split
from hvfs.manager.vm import VmContext


def referenced(vm: VmContext, path: api.VmPath) -> api.OpenFile | None:
    """For ``/proc/PID[/task/TID]/fd/N``: an O_PATH fd of the file it names (the caller
    closes ``.fd``); None for any other path. Raises the kernel's errno (ENOENT: no such
    process or fd; EACCES: the caller may not look at that process's fds)."""
    link = fd_link(str(path))
    if link is None:
        return None
    directory, number = link
    scoped = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS
    with fd_closing(openat2(vm.vm_root, directory, O_PATH | os.O_DIRECTORY, 0, scoped)) as fds:
        # One component, which is the magic link itself: followed by the kernel, as the
        # caller's own open would follow it, with the caller's credentials.
        fd = os.open(number, O_PATH | os.O_CLOEXEC, dir_fd=fds)
    try:
        where = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        where = str(path)
    return api.OpenFile(fd=fd, path=where)


def check(vm: VmContext, path: api.VmPath, *, follow: bool | None, code: int, resolve: int = 0) -> None:
    """Let a change through ``path`` reach the kernel only if resolving it in the VM
    crosses no magic link: the whole path (following its last component or not), or its
    parent only when ``follow`` is None (the call acts on a name). Raises ``code`` with a
    warning when it does, and the kernel's errno when the path does not resolve."""
    target = path
    if follow is None:
        head, _last = split(path.name)
        target = api.VmPath(path.base, head) if head else api.VmPath("/", path.base)
    flags = O_PATH | (os.O_NOFOLLOW if follow is False else 0)
    try:
        # Scoped the way open_at scopes every lookup; the caller's other restrictions kept.
        os.close(open_at(vm.vm_root, target, flags, 0, resolve & ~(RESOLVE_BENEATH | RESOLVE_IN_ROOT)))
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        vm.warn_once(f"a change through {path} refused: it goes through a procfs magic link")
        raise OSError(code, "through a magic link") from None
