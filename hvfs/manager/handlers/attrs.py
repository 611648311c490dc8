"""Requests that change an object's metadata: chmod, chown, truncate, utimens, xattrs.

The object is resolved whole, inside the VM's root (following or not, as asked), and the
change is made through its fd or its /proc/self/fd path, never through a following
``*at`` call on a name.

A request on an open file (fchmod, fchown, futimens, fsetxattr) acts only on an object of
the VM's own world (``hvfs.manager.world``): a file the VM opened itself on its read-only
boot view is changed as the same inode in the writable view; a file the manager handed
out, or an anonymous object (pipe, socket, memfd), directly; anything else, a host file
the VM inherited or received, is refused with EPERM. Device nodes, host inodes bound into
the VM's /dev, never take a metadata change, by path or by fd (EPERM).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

from hvfs import api
from hvfs._sys.abi import AT_EMPTY_PATH, O_PATH
from hvfs._sys.files import fchownat, utimensat
from hvfs.manager import kernel_paths, trail
from hvfs.manager.resolve import Closing, chmod_fd, fd_closing, open_named, open_object, parent, proc_path
from hvfs.manager.vm import VmContext
from hvfs.manager.world import is_device, own_object, refuse_device


def _object(vm: VmContext, path: api.VmPath, follow: bool) -> Closing[tuple[int, os.stat_result]]:
    """``with _object(...) as (fd, st)``: an O_PATH fd of the object and its stat."""
    fd = open_object(vm.rw_root, path, follow=follow)
    try:
        return Closing(fd, (fd, os.fstat(fd)))
    except BaseException:
        os.close(fd)
        raise


def _noted_object(vm: VmContext, path: api.VmPath, follow: bool) -> Closing[tuple[int, os.stat_result, str | None]]:
    """``_object``, and the object's VM path where its text is that path (found with no
    symlink on the way: ``resolve.open_named``), for the trail; tried where one is kept."""
    flags = O_PATH | (0 if follow else os.O_NOFOLLOW)
    found = open_named(vm.rw_root, path, flags) if trail.noting() else None
    fd, name = found if found is not None else (open_object(vm.rw_root, path, follow=follow), None)
    try:
        return Closing(fd, (fd, os.fstat(fd), name))
    except BaseException:
        os.close(fd)
        raise


def _on_target(
    vm: VmContext,
    target: api.Target,
    follow: bool,
    operation: str,
    act: Callable[[int, os.stat_result], None],
    *,
    noted: bool = True,
) -> api.Response:
    """``act(fd, st)`` on what the target names: an O_PATH fd or an open file, which it
    must treat alike (through /proc/self/fd/N or AT_EMPTY_PATH). ``noted``: the target is
    the request's own (not a file reached through the VM's procfs), for the change set."""
    if isinstance(target, api.OpenFile):
        if noted:
            trail.open_file(target)
        with own_object(vm, target, operation) as (fd, st):
            act(fd, st)
        return api.Value(0)
    if vm.is_kernel_path(target):
        return _on_kernel_path(vm, target, follow, operation, act)
    with _noted_object(vm, target, follow) as (fd, st, name):
        if is_device(st):
            refuse_device(vm, operation, str(target))
        trail.resolved(target, fd, name)
        act(fd, st)
    return api.Value(0)


def _on_kernel_path(
    vm: VmContext, path: api.VmPath, follow: bool, operation: str, act: Callable[[int, os.stat_result], None]
) -> api.Response:
    """The VM's procfs and devpts: through a magic link to an fd, the change acts on that
    file if it is the VM's own; anything else the kernel does, if no magic link is crossed."""
    file = kernel_paths.referenced(vm, path) if follow else None
    if file is None:
        kernel_paths.check(vm, path, follow=follow, code=errno.EPERM)
        return api.Continue()
    with fd_closing(file.fd):
        return _on_target(vm, file, follow, operation, act, noted=False)


def handle_chmod(vm: VmContext, request: api.Chmod) -> api.Response:
    """Errnos: ENOENT, ENOTDIR, EACCES, EPERM, EROFS, ELOOP, EBADF (O_PATH fd), EOPNOTSUPP
    (a symlink with AT_SYMLINK_NOFOLLOW)."""

    def act(fd: int, st: os.stat_result) -> None:
        if stat.S_ISLNK(st.st_mode):
            raise OSError(errno.EOPNOTSUPP, "symlinks have no mode")
        chmod_fd(fd, request.mode)

    return _on_target(vm, request.target, request.follow, "chmod", act)


def handle_chown(vm: VmContext, request: api.Chown) -> api.Response:
    """Errnos: ENOENT, ENOTDIR, EACCES, EPERM, EROFS, ELOOP, EINVAL (an id the VM cannot map)."""

    def act(fd: int, st: os.stat_result) -> None:
        fchownat(fd, "", request.uid, request.gid, AT_EMPTY_PATH)

    return _on_target(vm, request.target, request.follow, "chown", act)


def handle_truncate(vm: VmContext, request: api.Truncate) -> api.Response:
    """Errnos: ENOENT, EISDIR, EINVAL (not a regular file, negative length), EACCES, EROFS,
    ETXTBSY, EFBIG."""
    if request.length < 0:
        raise OSError(errno.EINVAL, "negative length")
    if vm.is_kernel_path(request.path):
        file = kernel_paths.referenced(vm, request.path)
        if file is None:
            kernel_paths.check(vm, request.path, follow=True, code=errno.EACCES)
            return api.Continue()
        with fd_closing(file.fd), own_object(vm, file, "truncate") as (fd, st):
            return _truncate(fd, st, request.length)
    with _object(vm, request.path, True) as (fd, st):
        trail.resolved(request.path, fd)
        return _truncate(fd, st, request.length)


def _truncate(fd: int, st: os.stat_result, length: int) -> api.Response:
    if stat.S_ISDIR(st.st_mode):
        raise OSError(errno.EISDIR, "is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "not a regular file")
    # By path, not by opening it: an open for writing would add open and close events
    # that inotify watchers of a native truncate() never see.
    os.truncate(proc_path(fd), length)
    return api.Value(0)


def handle_utimens(vm: VmContext, request: api.Utimens) -> api.Response:
    """Errnos: ENOENT, ENOTDIR, EACCES, EPERM, EROFS, ELOOP, EINVAL (bad nanoseconds)."""

    def act(fd: int, st: os.stat_result) -> None:
        utimensat(fd, "", request.times, AT_EMPTY_PATH)

    return _on_target(vm, request.target, request.follow, "utimens", act)


def _xattr_on_path(
    vm: VmContext, target: api.VmPath, follow: bool, operation: str, act: Callable[[str, bool], None]
) -> api.Response:
    if vm.is_kernel_path(target):
        file = kernel_paths.referenced(vm, target) if follow else None
        if file is None:
            kernel_paths.check(vm, target, follow=follow, code=errno.EPERM)
            return api.Continue()
        with fd_closing(file.fd), own_object(vm, file, operation) as (fd, _st):
            act(proc_path(fd), True)
        return api.Value(0)
    with _object(vm, target, follow) as (fd, st):
        if is_device(st):
            refuse_device(vm, operation, str(target))
        trail.resolved(target, fd)
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
            "setxattr",
            lambda fd, st: os.setxattr(proc_path(fd), request.name, request.value, request.flags),
        )
    return _xattr_on_path(
        vm,
        request.target,
        request.follow,
        "setxattr",
        lambda path, follow: os.setxattr(path, request.name, request.value, request.flags, follow_symlinks=follow),
    )


def handle_removexattr(vm: VmContext, request: api.RemoveXattr) -> api.Response:
    """Errnos: ENOENT, ENODATA, ENOTSUP, EPERM, EACCES, EROFS, ERANGE."""
    if isinstance(request.target, api.OpenFile):
        return _on_target(
            vm,
            request.target,
            True,
            "removexattr",
            lambda fd, st: os.removexattr(proc_path(fd), request.name),
        )
    return _xattr_on_path(
        vm,
        request.target,
        request.follow,
        "removexattr",
        lambda path, follow: os.removexattr(path, request.name, follow_symlinks=follow),
    )
