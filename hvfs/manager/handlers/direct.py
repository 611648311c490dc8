"""A served write-open in one call: the caller's open itself, made unable to block.

The general path (``opening._open_writable``) probes with an O_PATH open, looks at what
it found, and reopens a regular file through procfs: four calls, the reopen walking
procfs. Here the write-open is made at once in the writable view, with the caller's
flags plus O_NONBLOCK and O_NOCTTY, and what it opened is looked at afterwards (one
fstat): the open itself is the check, so no other object can take the name in between.
That is safe because of what such an open can reach:

* a regular file: the file the kernel would have opened for the caller;
* a FIFO: only opened where the caller's own open would not block (a reader is there,
  or O_RDWR): the very open the kernel would have made for it, so it is handed out, not
  closed (closing it could end a waiting reader's stream); without a reader the open
  fails (ENXIO) with no effect, and the general path lets the kernel block the caller;
* a device node: never opened, since the writable view is mounted ``nodev``
  (``hvfs.manager.view``; a view that is not takes the general path for every open):
  the open fails (EACCES) before any driver sees it, and the general path lets the
  kernel open it on the boot view, for the caller's own process (/dev/tty names the
  caller's terminal, not the manager's);
* a socket: ENXIO; a directory: EISDIR.

Only write-opens come here (O_WRONLY or O_RDWR): an O_RDONLY open of a FIFO would not
block where the caller's would. Any error goes to the general path, which answers it as
before (a lease held on the file: EWOULDBLOCK here, a blocking open there); errors cost
one failed open more, successes three calls less (the probe, its close, the reopen).
"""

from __future__ import annotations

import errno
import os
import stat

from hvfs import api
from hvfs._sys.abi import RESOLVE_BENEATH, RESOLVE_IN_ROOT, RESOLVE_NO_SYMLINKS
from hvfs._sys.files import kind_and_status, open_stat
from hvfs.manager import trail
from hvfs.manager.resolve import base_directory, fd_closing, open_at, open_named, plain_name
from hvfs.manager.vm import VmContext, nodev

# The status flags F_SETFL sets; FASYNC is left out as open(2) leaves it (it is ignored there).
_STATUS = os.O_APPEND | os.O_DIRECT | os.O_NOATIME


def open_writable(vm: VmContext, request: api.Open, flags: int, mode: int) -> api.Response | None:
    """The served answer to a write-open, or None: let the general path answer."""
    if not nodev(vm):
        return None
    exclusive = flags & os.O_CREAT and flags & os.O_EXCL
    status = -1 if flags & os.O_NONBLOCK else flags & _STATUS  # the caller's, once the file is open
    try:
        if exclusive:
            fd, name, kind = _open(vm.rw_root, request, flags, mode, status)
            existed = False
        else:
            try:
                fd, name, kind = _open(vm.rw_root, request, flags & ~os.O_CREAT, 0, status)  # no mode without O_CREAT
                existed = True
            except FileNotFoundError:
                if not flags & os.O_CREAT:
                    return None
                fd, name, kind = _open(vm.rw_root, request, flags | os.O_EXCL, mode, status)
                existed = False
    except OSError:
        return None
    kind = stat.S_IFMT(kind)
    if kind not in (stat.S_IFREG, stat.S_IFIFO):
        # Unreachable where the view is nodev (a device node fails to open): still never
        # handed out, so that only the kernel opens a device for the VM.
        os.close(fd)
        return None
    if kind == stat.S_IFREG:  # a FIFO changes nothing in the tree
        trail.served(existed=existed, path=name)
        if name is not None:
            trail.answered(name)
    return api.Fd(fd, bool(flags & os.O_CLOEXEC))


def _open(root: int, request: api.Open, flags: int, mode: int, status: int) -> tuple[int, str | None, int]:
    """The open, as ``opening._open`` makes it, what it opened (``st_mode``), with the
    caller's status flags set again unless ``status`` is -1 (``files.open_stat``); and the
    file's VM path where its text is that path (as ``resolve.open_named``: found with no
    symlink on the way), for the change set and the audit, which then need no readlink of
    the answer. An absolute path (the usual one) takes one C call for all of it."""
    flags |= os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    path, resolve = request.path, request.resolve
    if resolve & (RESOLVE_BENEATH | RESOLVE_IN_ROOT):
        with fd_closing(base_directory(root, path.base, path.base_id)) as base:
            fd, kind = open_stat(base, path.name, flags, mode, resolve, status)
            return fd, None, kind
    named = trail.noting() and path.name[-1:] != "/"
    if path.name.startswith("/"):
        name = plain_name(path) if named else None
        if name is not None:
            try:
                fd, kind = open_stat(root, name, flags, mode, RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | resolve, status)
                return fd, name, kind
            except OSError as e:
                if e.errno != errno.ELOOP:  # a symlink on the way: resolved as usual below
                    raise
        fd, kind = open_stat(root, path.name, flags, mode, RESOLVE_IN_ROOT | resolve, status)
        return fd, None, kind
    found = open_named(root, path, flags, mode, resolve) if named else None
    fd, name = found if found is not None else (open_at(root, path, flags, mode, resolve), None)
    return fd, name, kind_and_status(fd, status)
