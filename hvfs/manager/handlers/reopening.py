"""Opens through magic links: /proc/self/fd/N, /dev/stdout, /proc/PID/fd/N.

Such an open reopens an open file, not a path, and the kernel would follow the link to
wherever that file is: a host file the VM inherited as stdio or received over a socket,
on a writable host mount. So these opens are served, never continued: the manager
reopens the very file the link names (the caller's own fd, taken by the driver, or the fd
of another process reached through the VM's procfs), with the requested flags and the
caller's credentials, and hands out exactly that file.

For reading, any such file may be reopened: the VM holds it already. For writing (write
access, O_TRUNC, O_CREAT, O_TMPFILE in a directory), an object of the VM's world
(``hvfs.manager.world``); and, through the caller's own fd, anything that fd already lets
it write: its stdout redirected to a host file, a terminal, a FIFO. That gives nothing the
fd does not (it may write, truncate and clear O_APPEND already; reading needs an fd open
for reading). Anything else: EACCES, with a warning in the manager's log.
"""

from __future__ import annotations

import errno
import fcntl
import os

from hvfs import api
from hvfs._sys.abi import O_PATH
from hvfs.manager import kernel_paths
from hvfs.manager.resolve import fd_closing, proc_path
from hvfs.manager.vm import VmContext
from hvfs.manager.world import find_own


def reopen_own(vm: VmContext, file: api.OpenFile, flags: int, mode: int, writing: bool) -> api.Response:
    """Reopen the caller's own open file ``file`` (its magic link), as open(2) would."""
    if not writing:
        return _reopen(file.fd, flags, mode)
    found = find_own(vm, file)
    if found is not None:
        return _reopen_found(file, found, flags, mode)
    if _covered(fcntl.fcntl(file.fd, fcntl.F_GETFL), flags):
        return _reopen(file.fd, flags, mode)
    return _refuse(vm, file)


def _covered(held: int, wanted: int) -> bool:
    """Whether an fd open with flags ``held`` already gives what a reopen with ``wanted``
    asks for writing (O_PATH fds give nothing)."""
    if held & O_PATH:
        return False
    held_mode, wanted_mode = held & os.O_ACCMODE, wanted & os.O_ACCMODE
    if held_mode == os.O_RDONLY:
        return False
    return wanted_mode in (held_mode, os.O_RDONLY) if held_mode == os.O_WRONLY else True


def reopen_linked(vm: VmContext, path: api.VmPath, flags: int, mode: int, writing: bool) -> api.Response | None:
    """For ``/proc/PID[/task/TID]/fd/N``: reopen the file it names; None for other paths."""
    file = kernel_paths.referenced(vm, path)
    if file is None:
        return None
    with fd_closing(file.fd):
        if not writing:
            return _reopen(file.fd, flags, mode)
        found = find_own(vm, file)
        if found is None:
            return _refuse(vm, file)
        return _reopen_found(file, found, flags, mode)


def _reopen_found(file: api.OpenFile, found: tuple[int, os.stat_result], flags: int, mode: int) -> api.Response:
    fd = found[0]
    if fd == file.fd:
        return _reopen(fd, flags, mode)
    with fd_closing(fd):  # the file's twin in the writable view
        return _reopen(fd, flags, mode)


def _reopen(fd: int, flags: int, mode: int) -> api.Response:
    # Through the manager's own magic link to that file: the kernel reopens it, with the
    # caller's credentials (this worker's, switched). O_NOCTTY: a terminal opened here must
    # never become the manager's controlling terminal.
    opened = os.open(proc_path(fd), flags | os.O_CLOEXEC | os.O_NOCTTY, mode)
    return api.Fd(opened, bool(flags & os.O_CLOEXEC))


def _refuse(vm: VmContext, file: api.OpenFile) -> api.Response:
    vm.warn_once(f"reopening {file.path} for writing refused: not a file of this VM (an fd from outside it)")
    raise OSError(errno.EACCES, "not a file of this VM")
