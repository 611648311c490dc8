"""bind() and connect() of unix sockets to paths.

A unix socket is a channel out of the invariant: a host process at the other end could
pass the VM a writable fd of anything. So the manager makes every socket file a VM binds
(on the VM's own socket, duplicated into the manager), remembers it, and lets a VM
connect only to such sockets, or to sockets on a mount marked ``sockets``.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat

from hvfs import api
from hvfs._sys.files import mount_id
from hvfs.manager import kernel_paths
from hvfs.manager.resolve import fd_closing, open_object, parent, proc_path
from hvfs.manager.vm import VmContext

log = logging.getLogger("hvfs.manager")


def _borrow(file: api.OpenFile) -> socket.socket:
    """The caller's socket, as a socket object over a duplicate of its fd."""
    return socket.socket(fileno=os.dup(file.fd))


def handle_bind(vm: VmContext, request: api.Bind) -> api.Response:
    """Errnos: EADDRINUSE (the name exists), ENOENT, ENOTDIR, EACCES, EROFS, EINVAL (already
    bound), ENOTSOCK, ENAMETOOLONG."""
    if vm.is_kernel_path(request.path):
        kernel_paths.check(vm, request.path, follow=None, code=errno.EACCES)
        return api.Continue()
    with parent(vm.rw_root, request.path) as (directory, last):
        if not last or last.endswith("/"):
            raise OSError(errno.EADDRINUSE if not last else errno.ENOENT, "bad socket path")
        sock = _borrow(request.socket)
        try:
            # bind() takes a path, not a dirfd; this worker's cwd is its own (CLONE_FS).
            os.fchdir(directory)
            try:
                sock.bind(last)
            finally:
                os.chdir("/")
        finally:
            sock.close()
        made = os.stat(last, dir_fd=directory, follow_symlinks=False)
    vm.sockets.add((made.st_dev, made.st_ino))
    return api.Value(0)


def handle_connect(vm: VmContext, request: api.Connect) -> api.Response:
    """Errnos: ENOENT, ECONNREFUSED (not a socket, or nobody listening), EACCES (a host
    socket on a mount not marked ``sockets``), EAGAIN, EISCONN, ENOTSOCK."""
    if vm.is_kernel_path(request.path):
        kernel_paths.check(vm, request.path, follow=True, code=errno.EACCES)
        return api.Continue()
    with fd_closing(open_object(vm.rw_root, request.path, follow=True)) as target:
        st = os.fstat(target)
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(errno.ECONNREFUSED, "not a socket")
        if (st.st_dev, st.st_ino) not in vm.sockets and mount_id(target) not in vm.socket_mounts:
            log.warning(
                "VM %s: connect to %s refused: a host socket; mark its volume 'sockets' to allow it",
                vm.name,
                request.path,
            )
            raise OSError(errno.EACCES, "a host socket")
        sock = _borrow(request.socket)
        try:
            sock.connect(proc_path(target))
        finally:
            sock.close()
    return api.Value(0)
