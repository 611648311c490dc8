"""Whether an open file belongs to the VM's own world, before anything changes through it.

A VM may hold objects that came from outside: a host file given as its stdio, an fd a
host process passed over a socket on a mount marked ``sockets``. It may use them as they
were given (read them, write them if it got them writable), and nothing more: a change of
metadata through the fd (fchmod, fchown, futimens, fsetxattr, fremovexattr, the
AT_EMPTY_PATH forms) or a reopen for writing through a magic link (/proc/self/fd/N)
acts only on an object of the VM's world, which is one of:

- the same inode at its path in the VM's writable view: a file the VM opened itself on its
  read-only boot view. The change is made there, as the VM could make it by path;
- a file on one of the writable view's mounts: the manager handed it out (deleted and
  O_TMPFILE files included, which no path names any more);
- an anonymous kernel object (pipe, socket, memfd, eventfd, pidfd): it lives on a mount
  internal to the kernel, which no path reaches, so it is nobody's file. Its mount ids are
  learnt from objects of the same kinds the manager makes itself; a file system *type*
  (fstatfs magic) would not do, since a host tmpfs file has the memfd's type.

Device nodes are never of the VM's world: the VM's /dev binds the host's own inodes, so
their content is the VM's to use and their metadata is not (EPERM).
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import stat
from contextlib import AbstractContextManager, nullcontext

from hvfs import api
from hvfs._sys.files import mount_id
from hvfs._sys.process import pidfd_open
from hvfs.manager.resolve import Closing, absolute, open_object
from hvfs.manager.vm import VmContext

Found = tuple[int, os.stat_result]  # an fd to act on (maybe O_PATH) and its stat


@functools.cache
def anonymous_mounts() -> frozenset[int]:
    """The kernel's internal mounts of pipes, sockets, memfds, anonymous inodes and pidfds."""
    ids = set()
    read, write = os.pipe2(os.O_CLOEXEC)
    one, other = socket.socketpair()
    made = [read, write, os.memfd_create("hvfs-probe", os.MFD_CLOEXEC), os.eventfd(0, os.EFD_CLOEXEC)]
    made.append(pidfd_open(os.getpid()))
    try:
        for fd in (*made, one.fileno()):
            ids.add(mount_id(fd))
    finally:
        for fd in made:
            os.close(fd)
        one.close()
        other.close()
    return frozenset(ids)


def is_device(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)


def refuse_device(vm: VmContext, operation: str, path: str) -> None:
    """EPERM for a metadata change of a device node, with a warning in the manager's log."""
    vm.warn_once(f"{operation} of the device node {path} refused: its metadata is the host's")
    raise OSError(errno.EPERM, "a device node")


def own_object(vm: VmContext, file: api.OpenFile, operation: str) -> AbstractContextManager[Found]:
    """``with own_object(vm, file, "fchmod") as (fd, st)``: what a metadata change of the
    open file acts on, the file itself or its twin in the writable view. EPERM, with a
    warning in the manager's log, for a file from outside the VM or a device node."""
    found = find_own(vm, file)
    if found is None:
        vm.warn_once(f"{operation} of {file.path} refused: not a file of this VM (an fd from outside it)")
        raise OSError(errno.EPERM, "not a file of this VM")
    fd, st = found
    if is_device(st):
        if fd != file.fd:
            os.close(fd)
        refuse_device(vm, operation, file.path)
    return nullcontext(found) if fd == file.fd else Closing(fd, found)


def find_own(vm: VmContext, file: api.OpenFile) -> Found | None:
    """The open file itself when it is of the VM's world, or an O_PATH fd of its twin in
    the writable view (the caller closes it: it is not ``file.fd``); None otherwise."""
    st = os.fstat(file.fd)
    where = mount_id(file.fd)
    if where in vm.own_mounts or where in anonymous_mounts():
        return file.fd, st
    if not file.path.startswith("/"):
        return None
    try:
        twin = open_object(vm.rw_root, absolute(file.path), follow=False)
    except OSError:
        return None
    try:
        same = os.fstat(twin)
    except BaseException:
        os.close(twin)
        raise
    if (same.st_dev, same.st_ino) != (st.st_dev, st.st_ino):
        os.close(twin)
        return None
    return twin, same
