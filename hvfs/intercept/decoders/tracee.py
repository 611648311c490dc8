"""The tracee: what a decoder may ask of the thread whose call it decodes.

This protocol is the whole of what the decoders (and the syscall table that carries them)
need from a driver, so that every driver can reuse them: the seccomp driver implements it
for a notification (``hvfs.intercept.tracee.Tracee``), a ptrace driver would implement it
for a stopped tracee, and a unit test for a fake. A driver that implements these eleven
members gets every decoder; it then sends the request to the manager and applies the
answer in its own way.

Contract, for every implementation:

* A tracee is one call of one thread, from the moment the driver got the call until it
  answers. ``pid`` names the thread as the manager's pid namespace sees it.
* Every read comes from that thread as it was during the call. A driver that cannot
  hold the thread still (seccomp: another thread may exit and its number be reused)
  proves it afterwards, before acting on the request (seccomp's ``NOTIF_ID_VALID``);
  the decoders never check anything themselves.
* A malformed call (a bad pointer, a path too long, a bad fd) raises ``CallError`` with
  the errno the kernel gives; it is answered as the kernel would, without the manager.
* A thread that is gone, or whose call was cancelled, raises ``TargetGone``: nothing is
  answered (no one waits for the answer). Never an errno: it is the driver's business.
* Nothing here changes the thread: an fd taken is duplicated, never removed.
"""

# Annotations evaluated, not ``from __future__ import annotations``: a NamedTuple's string
# annotations are compiled one by one at import (tests/test_startup.py).

import os
from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:  # annotations only: the messages load with a first request
    from hvfs.api import Caller, Credentials, OpenFile


class TargetGone(Exception):
    """The thread died, or its call was cancelled: there is no one to answer."""


class CallError(Exception):
    """The call is malformed; answer with ``errno`` as the kernel would, without the manager."""

    def __init__(self, code: int) -> None:
        super().__init__(os.strerror(code))
        self.errno = code


class Identity(NamedTuple):
    """Who a thread is, beyond the credentials a request acts with (SCM_CREDENTIALS checks)."""

    tgid: int  # in the manager's pid namespace
    own_tgid: int  # in the thread's own (innermost) pid namespace
    uids: tuple[int, int, int]  # real, effective, saved, as the manager sees them
    gids: tuple[int, int, int]
    capabilities: int  # effective


class Tracee(Protocol):
    """The thread a call came from, as the decoders see it (the contract above)."""

    @property
    def pid(self) -> int:
        """The thread's id in the manager's pid namespace."""
        ...

    # Memory.

    def read(self, address: int, size: int) -> bytes:
        """``size`` bytes at ``address``; EFAULT for a NULL or unreadable address."""
        ...

    def read_path(self, address: int, *, empty_ok: bool = False) -> str:
        """The NUL-terminated string at ``address``, ``os.fsdecode``d: EFAULT, ENAMETOOLONG
        past PATH_MAX, and ENOENT for an empty one unless ``empty_ok``."""
        ...

    # Files.

    def take_fd(self, fd: int, *, path_ok: bool = True) -> "OpenFile":
        """The thread's ``fd``, duplicated into the manager (the tracee closes it once the
        call is answered): EBADF if it has no such fd, or if it is an O_PATH fd and
        ``path_ok`` is False (calls that act on an open file only, as the kernel's)."""
        ...

    def directory(self, dirfd: int) -> tuple[str, tuple[int, int]]:
        """The VM path of the directory ``dirfd`` is open on (of the cwd for AT_FDCWD), and
        its (device, inode): which directory it is. EBADF for no such fd (ENOENT for a cwd
        that is gone), ENOTDIR for an fd that no path names (a pipe, a socket), ENOENT for a
        directory removed since."""
        ...

    def fd_path(self, fd: int) -> str | None:
        """The VM path of the file the thread's ``fd`` is open on, when that very file
        (same device and inode) is at that path in the thread's root; None otherwise (no
        such fd, a pipe, a deleted file, a host file the VM inherited)."""
        ...

    def dev_link(self, name: str) -> str | None:
        """What the VM's ``/dev/NAME`` is a symlink to now, as the thread sees it; None if
        it is not a symlink, or is missing."""
        ...

    # Who the thread is.

    def credentials(self) -> "Credentials":
        """Its credentials now (fsuid, fsgid, groups, umask, capabilities), as the manager's
        user namespace numbers the ids."""
        ...

    def caller(self, vm: str) -> "Caller":
        """Who asks, for a request of the VM ``vm``: this thread and its ``credentials``."""
        ...

    def identity(self) -> Identity:
        """Its thread group and its real, effective and saved ids."""
        ...

    def vm_ids(self) -> tuple[int, int]:
        """Its process and thread ids in the VM's pid namespace (what /proc/self and
        /proc/thread-self name in the VM)."""
        ...

    def id_map(self, kind: str) -> list[tuple[int, int, int]]:
        """Its user namespace's ``uid_map`` (``kind`` "uid") or ``gid_map`` ("gid"): (first
        id inside, first id as the manager sees it, count) ranges."""
        ...
