"""bind() and connect(): the manager performs them on the caller's socket.

A unix socket is a channel out of the invariant: a host process at the other end could
pass the VM a writable fd of anything. So the manager makes every socket file a VM binds
(on the VM's own socket, duplicated into the manager), remembers it, and lets a VM reach
by path only such sockets, or sockets on a mount marked ``sockets``.

Decisions rest only on what the VM can no longer change: the socket's own domain and
type (read from the duplicated fd, never from the fd number, which another thread may
point at another socket) and the address bytes read once. Connects, of every family,
are performed here with those bytes, never continued: had the kernel run the call again,
it would have looked the fd and the address up again. Binds of sockets other than unix
ones do continue: whatever a race could make the kernel run then (a unix bind) names a
file on the read-only boot view (EROFS), in the VM's procfs or devpts, or an abstract
name in the VM's own network namespace, none of which reaches the host.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import os
import select
import stat
from types import TracebackType

from hvfs import api, deferred
from hvfs._sys import sockets
from hvfs._sys.abi import AF_UNIX, AT_EACCESS, AT_EMPTY_PATH, SA_FAMILY
from hvfs._sys.files import faccessat, mount_id
from hvfs.manager import kernel_paths
from hvfs.manager.resolve import fd_closing, open_object, parent, proc_path
from hvfs.manager.vm import VmContext

log = deferred.logger("hvfs.manager")

_FAMILY = SA_FAMILY.pack(AF_UNIX)


def unix_address(name: bytes) -> bytes:
    """A sockaddr_un for the path ``name``, NUL-terminated as the kernel stores one."""
    return _FAMILY + name + b"\0"


def reach(vm: VmContext, address: api.SocketAddress) -> tuple[bytes, int]:
    """A sockaddr for the unix socket at ``address.path`` if the caller may reach it, and
    the fd it names, which the caller of this function closes after the call.

    The socket file is found in the VM's writable view as the caller would find it, and
    named to the kernel as ``/proc/self/fd/N``: the very inode checked, which no rename
    or symlink swap can change. Write permission on it is checked as the kernel checks
    it for a connect or send. Errnos: ENOENT, ENOTDIR, ELOOP, EACCES (no write
    permission; a host socket on a mount not marked ``sockets``; a name through /proc),
    ECONNREFUSED (not a socket)."""
    assert address.path is not None
    if vm.is_kernel_path(address.path):
        _warn_once(vm, address.path, "a name through /proc or /dev/pts")
        raise OSError(errno.EACCES, "a socket named through a kernel file system")
    target = open_object(vm.rw_root, address.path, follow=True)
    try:
        st = os.fstat(target)
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(errno.ECONNREFUSED, "not a socket")
        if (st.st_dev, st.st_ino) not in vm.sockets and mount_id(target) not in vm.socket_mounts:
            _warn_once(vm, address.path, "a host socket; mark its volume 'sockets' to allow it")
            raise OSError(errno.EACCES, "a host socket")
        faccessat(target, "", os.W_OK, AT_EMPTY_PATH | AT_EACCESS)  # the effective ids: the caller's, on this worker
    except BaseException:
        os.close(target)
        raise
    return unix_address(os.fsencode(proc_path(target))), target


_warned: set[tuple[str, str]] = set()
_WARNED_MAX = 1024


def _warn_once(vm: VmContext, path: api.VmPath, why: str) -> None:
    """Log a refusal once per VM and path: a VM that retries must not flood the log."""
    key = (vm.name, str(path))
    if key in _warned:
        return
    if len(_warned) >= _WARNED_MAX:
        _warned.clear()
    _warned.add(key)
    log.warning("VM %s: unix socket %s refused: %s", vm.name, path, why)


def handle_bind(vm: VmContext, request: api.Bind) -> api.Response:
    """Errnos: the kernel's for the socket and the address (EINVAL: already bound, a bad
    length or family; EADDRINUSE), and for a path EADDRINUSE (the name exists), ENOENT,
    ENOTDIR, EACCES, EROFS, ENAMETOOLONG."""
    fd, address = request.socket.fd, request.address
    domain, _ = sockets.kind(fd)
    if domain != AF_UNIX:
        return api.Continue()  # nothing a race can make of it reaches the host: see above
    if address.path is not None and vm.is_kernel_path(address.path):
        kernel_paths.check(vm, address.path, follow=None, code=errno.EACCES)  # no magic link crossed
        return api.Continue()
    if address.path is None:
        sockets.bind(fd, address.raw)  # abstract, unnamed (autobind) or refused by the kernel
        return api.Value(0)
    with parent(vm.rw_root, address.path) as (directory, last):
        if not last or last.endswith("/"):
            raise OSError(errno.EADDRINUSE if not last else errno.ENOENT, "bad socket path")
        # bind() takes a path, not a dirfd; this worker's cwd is its own (CLONE_FS).
        os.fchdir(directory)
        try:
            sockets.bind(fd, unix_address(os.fsencode(last)))
        finally:
            os.chdir("/")
        made = os.stat(last, dir_fd=directory, follow_symlinks=False)
    vm.sockets.add((made.st_dev, made.st_ino))
    return api.Value(0)


def handle_connect(vm: VmContext, request: api.Connect) -> api.Response:
    """Errnos: the kernel's for the socket and the address (EINVAL, EAFNOSUPPORT, EISCONN,
    EINPROGRESS and EALREADY for a non-blocking socket, ECONNREFUSED, ENETUNREACH, EINTR…),
    and for a unix path as ``reach``."""
    fd, address = request.socket.fd, request.address
    domain, _ = sockets.kind(fd)
    if request.resumed:
        return _finish(request)
    if domain == AF_UNIX and address.path is not None:
        raw, target = reach(vm, address)
        with fd_closing(target):
            return _connect(request, raw, unix=True)
    return _connect(request, address.raw, unix=domain == AF_UNIX)  # no family but unix looks up paths


def _connect(request: api.Connect, raw: bytes, *, unix: bool) -> api.Response:
    """connect(2) without blocking a worker: a blocking caller's wait is the driver's."""
    fd = request.socket.fd
    with _NonBlocking(fd) as blocking:
        try:
            sockets.connect(fd, raw)
        except OSError as e:
            if not blocking:
                raise
            interrupted = api.Errno(errno.EINTR)
            if e.errno in (errno.EINPROGRESS, errno.EALREADY):  # a blocking connect waits for it
                return api.WouldBlock(fd, select.POLLOUT, dataclasses.replace(request, resumed=True), interrupted)
            if e.errno == errno.EAGAIN and unix:  # the listener's backlog is full: try again
                return api.WouldBlock(fd, 0, request, interrupted)
            raise
    return api.Value(0)


def _finish(request: api.Connect) -> api.Response:
    """The end of a connect that was in progress: its error, or 0 once connected."""
    fd = request.socket.fd
    error = sockets.take_error(fd)
    if error:
        return api.Errno(error)
    if sockets.is_connected(fd):
        return api.Value(0)
    # Not yet (the driver asks again after a while too): connect again, which the kernel
    # answers EALREADY while the first attempt runs.
    again = dataclasses.replace(request, resumed=False)
    return api.WouldBlock(fd, select.POLLOUT, again, api.Errno(errno.EINTR))


class _NonBlocking:
    """O_NONBLOCK on the socket's open file for one call, if it lacked it; gives whether
    the caller's call blocks. The flag is the open file's, shared with the VM's fds: a
    VM thread that changes the flags in these microseconds may see its change undone, a
    race it can only play against itself."""

    __slots__ = ("_blocking", "_fd")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._blocking = False

    def __enter__(self) -> bool:
        flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
        self._blocking = not flags & os.O_NONBLOCK
        if self._blocking:
            fcntl.fcntl(self._fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        return self._blocking

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._blocking:
            fcntl.fcntl(self._fd, fcntl.F_SETFL, fcntl.fcntl(self._fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
