"""Requests that create, remove or move names: mkdir, mknod, unlink, rmdir, rename, link, symlink.

Each resolves the parent directory inside the VM's writable view and acts on one
non-following last component. A path that is the root itself gets the errno the
kernel gives for LAST_ROOT.
"""

from __future__ import annotations

import errno
import os
import stat
from contextlib import nullcontext

from hvfs import api
from hvfs._sys.files import renameat2
from hvfs.manager import kernel_paths, trail
from hvfs.manager.resolve import Closing, fd_closing, open_object, parent, parent_named, proc_path
from hvfs.manager.vm import VmContext
from hvfs.manager.world import find_own


def _for_kernel(vm: VmContext, *paths: api.VmPath) -> bool:
    """Whether the kernel is to serve the request: a path into the VM's procfs or devpts,
    which the manager's view lacks. Then no path of it may cross a magic link (EACCES)."""
    if not any(vm.is_kernel_path(path) for path in paths):
        return False
    for path in paths:
        kernel_paths.check(vm, path, follow=None, code=errno.EACCES)
    return True


def _parent(vm: VmContext, path: api.VmPath) -> Closing[tuple[int, str]]:
    """``with _parent(vm, path) as (directory, last)``: ``resolve.parent`` in the writable
    view, its target noted (``trail.name``) before the block acts on it; its directory named
    by its text where that is its name (``resolve.parent_named``), else by a readlink."""
    if not trail.noting():
        return parent(vm.rw_root, path)
    directory, last, head = parent_named(vm.rw_root, path)
    try:
        trail.name(path, directory, last, head)
    except BaseException:
        os.close(directory)
        raise
    return Closing(directory, (directory, last))


def _refuse_root(last: str, code: int) -> None:
    if not last:
        raise OSError(code, os.strerror(code))


def handle_mkdir(vm: VmContext, request: api.Mkdir) -> api.Response:
    """Errnos: EEXIST, ENOENT, ENOTDIR, EACCES, EROFS, ENOSPC, EDQUOT, EMLINK, ELOOP, ENAMETOOLONG."""
    if _for_kernel(vm, request.path):
        return api.Continue()
    with _parent(vm, request.path) as (directory, last):
        _refuse_root(last, errno.EEXIST)
        os.mkdir(last, request.mode, dir_fd=directory)
    return api.Value(0)


def handle_mknod(vm: VmContext, request: api.Mknod) -> api.Response:
    """Errnos: EINVAL (bad type), EPERM (a directory type), EEXIST, ENOENT, ENOTDIR, EACCES,
    EROFS, ENOSPC, and EPERM for device nodes, as in any user namespace: the manager never
    makes one for a VM."""
    kind = stat.S_IFMT(request.mode) or stat.S_IFREG
    if kind == stat.S_IFDIR:
        raise OSError(errno.EPERM, "mknod makes no directories")
    if kind not in (stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK):
        raise OSError(errno.EINVAL, "bad file type")
    if _for_kernel(vm, request.path):
        return api.Continue()
    with _parent(vm, request.path) as (directory, last):
        _refuse_root(last, errno.EEXIST)
        whiteout = kind == stat.S_IFCHR and request.device == 0  # overlayfs's; no CAP_MKNOD needed
        if kind in (stat.S_IFCHR, stat.S_IFBLK) and not whiteout:
            try:
                os.stat(last, dir_fd=directory, follow_symlinks=False)
            except FileNotFoundError:
                raise OSError(errno.EPERM, "device nodes are not allowed") from None
            raise OSError(errno.EEXIST, "exists")
        os.mknod(last, stat.S_IMODE(request.mode) | kind, request.device if whiteout else 0, dir_fd=directory)
    return api.Value(0)


def handle_unlink(vm: VmContext, request: api.Unlink) -> api.Response:
    """Errnos: ENOENT, EISDIR, ENOTDIR, EACCES, EPERM, EROFS, EBUSY, ELOOP, ENAMETOOLONG."""
    if _for_kernel(vm, request.path):
        return api.Continue()
    with _parent(vm, request.path) as (directory, last):
        _refuse_root(last, errno.EISDIR)
        os.unlink(last, dir_fd=directory)
    return api.Value(0)


def handle_rmdir(vm: VmContext, request: api.Rmdir) -> api.Response:
    """Errnos: ENOENT, ENOTDIR, ENOTEMPTY, EINVAL (``.``), EBUSY, EACCES, EPERM, EROFS."""
    if _for_kernel(vm, request.path):
        return api.Continue()
    with _parent(vm, request.path) as (directory, last):
        _refuse_root(last, errno.EBUSY)
        os.rmdir(last, dir_fd=directory)
    return api.Value(0)


def handle_rename(vm: VmContext, request: api.Rename) -> api.Response:
    """Errnos: ENOENT, EEXIST (NOREPLACE), ENOTEMPTY, EISDIR, ENOTDIR, EXDEV, EINVAL, EBUSY,
    EACCES, EPERM, EROFS, ENOSPC, ELOOP, ENAMETOOLONG."""
    if _for_kernel(vm, request.old, request.new):
        return api.Continue()
    with parent(vm.rw_root, request.old) as (old_dir, old_last), parent(vm.rw_root, request.new) as (new_dir, new_last):
        trail.name(request.old, old_dir, old_last)
        trail.name(request.new, new_dir, new_last)
        _refuse_root(old_last, errno.EBUSY)
        _refuse_root(new_last, errno.EBUSY)
        renameat2(old_dir, old_last, new_dir, new_last, request.flags)
    return api.Value(0)


def handle_link(vm: VmContext, request: api.Link) -> api.Response:
    """Errnos: ENOENT, EEXIST, EPERM (directories), EXDEV, EMLINK, EACCES, EROFS, ENOSPC, ELOOP."""
    if _for_kernel(vm, request.new, *([request.old] if isinstance(request.old, api.VmPath) else [])):
        return api.Continue()
    with parent(vm.rw_root, request.new) as (new_dir, new_last):
        trail.name(request.new, new_dir, new_last)
        _refuse_root(new_last, errno.EEXIST)
        if isinstance(request.old, api.OpenFile):
            found = find_own(vm, request.old)
            if found is None:
                raise OSError(errno.EXDEV, "not a file of this VM")  # on no mount of the VM, as natively
            with Closing(found[0], None) if found[0] != request.old.fd else nullcontext():
                os.link(proc_path(found[0]), new_last, dst_dir_fd=new_dir, follow_symlinks=True)
        elif request.follow:
            with fd_closing(open_object(vm.rw_root, request.old, follow=True)) as old:
                os.link(proc_path(old), new_last, dst_dir_fd=new_dir, follow_symlinks=True)
        else:
            with parent(vm.rw_root, request.old) as (old_dir, old_last):
                _refuse_root(old_last, errno.EPERM)
                os.link(old_last, new_last, src_dir_fd=old_dir, dst_dir_fd=new_dir, follow_symlinks=False)
    return api.Value(0)


def handle_symlink(vm: VmContext, request: api.Symlink) -> api.Response:
    """Errnos: EEXIST, ENOENT, ENOTDIR, EACCES, EROFS, ENOSPC, EDQUOT, ELOOP, ENAMETOOLONG."""
    if _for_kernel(vm, request.path):
        return api.Continue()
    with _parent(vm, request.path) as (directory, last):
        _refuse_root(last, errno.EEXIST)
        os.symlink(request.target, last, dir_fd=directory)
    return api.Value(0)
