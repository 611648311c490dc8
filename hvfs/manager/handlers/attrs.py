"""Requests that change an object's metadata: chmod, chown, truncate, utimens, xattrs.

The object is resolved whole, inside the VM's root (following or not, as asked), and the
change is made through its fd or its /proc/self/fd path, never through a following
``*at`` call on a name.

A request on an open file (fchmod, fchown, futimens, fsetxattr) acts on that file
directly when it is writable: the manager handed it out for writing, or the VM inherited
it. A file the VM opened itself sits on its read-only boot view; the request then acts on
the same inode in the writable view, found by its path and checked by device and inode.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

from hvfs import api
from hvfs._sys.files import AT_EMPTY_PATH, fchownat, utimensat
from hvfs.manager.resolve import Closing, open_object, parent, proc_path, writable_twin
from hvfs.manager.vm import VmContext


def _object(vm: VmContext, path: api.VmPath, follow: bool) -> Closing[tuple[int, os.stat_result]]:
    """``with _object(...) as (fd, st)``: an O_PATH fd of the object and its stat."""
    fd = open_object(vm.rw_root, path, follow=follow)
    try:
        return Closing(fd, (fd, os.fstat(fd)))
    except BaseException:
        os.close(fd)
        raise


def _on_target(
    vm: VmContext,
    target: api.Target,
    follow: bool,
    on_fd: Callable[[int], None],
    on_path: Callable[[int, os.stat_result], None],
) -> api.Response:
    if isinstance(target, api.OpenFile):
        with writable_twin(vm.rw_root, target) as twin:
            if twin is None:
                on_fd(target.fd)
            else:
                on_path(*twin)
        return api.Value(0)
    if vm.is_kernel_path(target):
        return api.Continue()
    with _object(vm, target, follow) as (fd, st):
        on_path(fd, st)
    return api.Value(0)


def handle_chmod(vm: VmContext, request: api.Chmod) -> api.Response:
    """Errnos: ENOENT, ENOTDIR, EACCES, EPERM, EROFS, ELOOP, EBADF (O_PATH fd), EOPNOTSUPP
    (a symlink with AT_SYMLINK_NOFOLLOW)."""

    def on_path(fd: int, st: os.stat_result) -> None:
        if stat.S_ISLNK(st.st_mode):
            raise OSError(errno.EOPNOTSUPP, "symlinks have no mode")
        os.chmod(proc_path(fd), request.mode)

    return _on_target(vm, request.target, request.follow, lambda fd: os.fchmod(fd, request.mode), on_path)


def handle_chown(vm: VmContext, request: api.Chown) -> api.Response:
    """Errnos: ENOENT, ENOTDIR, EACCES, EPERM, EROFS, ELOOP, EINVAL (an id the VM cannot map)."""

    def on_fd(fd: int) -> None:
        os.fchown(fd, request.uid, request.gid)

    def on_path(fd: int, st: os.stat_result) -> None:
        fchownat(fd, "", request.uid, request.gid, AT_EMPTY_PATH)

    return _on_target(vm, request.target, request.follow, on_fd, on_path)


def handle_truncate(vm: VmContext, request: api.Truncate) -> api.Response:
    """Errnos: ENOENT, EISDIR, EINVAL (not a regular file, negative length), EACCES, EROFS,
    ETXTBSY, EFBIG."""
    if vm.is_kernel_path(request.path):
        return api.Continue()
    if request.length < 0:
        raise OSError(errno.EINVAL, "negative length")
    with _object(vm, request.path, True) as (fd, st):
        if stat.S_ISDIR(st.st_mode):
            raise OSError(errno.EISDIR, "is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        # By path, not by opening it: an open for writing would add open and close
        # events that inotify watchers of a native truncate() never see.
        os.truncate(proc_path(fd), request.length)
    return api.Value(0)


def handle_utimens(vm: VmContext, request: api.Utimens) -> api.Response:
    """Errnos: ENOENT, ENOTDIR, EACCES, EPERM, EROFS, ELOOP, EINVAL (bad nanoseconds)."""

    def on_fd(fd: int) -> None:
        utimensat(fd, None, request.times, 0)

    def on_path(fd: int, st: os.stat_result) -> None:
        utimensat(fd, "", request.times, AT_EMPTY_PATH)

    return _on_target(vm, request.target, request.follow, on_fd, on_path)


def _xattr_on_path(vm: VmContext, target: api.VmPath, follow: bool, act: Callable[[str, bool], None]) -> api.Response:
    if vm.is_kernel_path(target):
        return api.Continue()
    with _object(vm, target, follow) as (fd, st):
        if not stat.S_ISLNK(st.st_mode):
            act(proc_path(fd), True)
            return api.Value(0)
    # A symlink's own xattrs: through its parent, without following the last component.
    with parent(vm.rw_root, target) as (directory, last):
        act(f"{proc_path(directory)}/{last}", False)
    return api.Value(0)


def handle_setxattr(vm: VmContext, request: api.SetXattr) -> api.Response:
    """Errnos: ENOENT, EEXIST (XATTR_CREATE), ENODATA (XATTR_REPLACE), ENOTSUP, EPERM,
    EACCES, EROFS, ERANGE, E2BIG, ENOSPC."""
    if isinstance(request.target, api.OpenFile):
        return _on_target(
            vm,
            request.target,
            True,
            lambda fd: os.setxattr(fd, request.name, request.value, request.flags),
            lambda fd, st: os.setxattr(proc_path(fd), request.name, request.value, request.flags),
        )
    return _xattr_on_path(
        vm,
        request.target,
        request.follow,
        lambda path, follow: os.setxattr(path, request.name, request.value, request.flags, follow_symlinks=follow),
    )


def handle_removexattr(vm: VmContext, request: api.RemoveXattr) -> api.Response:
    """Errnos: ENOENT, ENODATA, ENOTSUP, EPERM, EACCES, EROFS, ERANGE."""
    if isinstance(request.target, api.OpenFile):
        return _on_target(
            vm,
            request.target,
            True,
            lambda fd: os.removexattr(fd, request.name),
            lambda fd, st: os.removexattr(proc_path(fd), request.name),
        )
    return _xattr_on_path(
        vm,
        request.target,
        request.follow,
        lambda path, follow: os.removexattr(path, request.name, follow_symlinks=follow),
    )
