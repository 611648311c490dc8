"""Requests that create, remove or move names: mkdir, mknod, unlink, rmdir, rename, link, symlink.

Each resolves the parent directory inside the VM's writable view and acts on one
non-following last component. A path that is the root itself gets the errno the
kernel gives for LAST_ROOT.
"""

from __future__ import annotations

import errno
import os
import stat

from hvfs import api
from hvfs._sys.files import renameat2
from hvfs.manager.resolve import fd_closing, open_object, parent, proc_path, writable_twin
from hvfs.manager.vm import VmContext


def _refuse_root(last: str, code: int) -> None:
    if not last:
        raise OSError(code, os.strerror(code))


def handle_mkdir(vm: VmContext, request: api.Mkdir) -> api.Response:
    """Errnos: EEXIST, ENOENT, ENOTDIR, EACCES, EROFS, ENOSPC, EDQUOT, EMLINK, ELOOP, ENAMETOOLONG."""
    if vm.is_kernel_path(request.path):
        return api.Continue()
    with parent(vm.rw_root, request.path) as (directory, last):
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
    if vm.is_kernel_path(request.path):
        return api.Continue()
    with parent(vm.rw_root, request.path) as (directory, last):
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
    if vm.is_kernel_path(request.path):
        return api.Continue()
    with parent(vm.rw_root, request.path) as (directory, last):
        _refuse_root(last, errno.EISDIR)
        os.unlink(last, dir_fd=directory)
    return api.Value(0)


def handle_rmdir(vm: VmContext, request: api.Rmdir) -> api.Response:
    """Errnos: ENOENT, ENOTDIR, ENOTEMPTY, EINVAL (``.``), EBUSY, EACCES, EPERM, EROFS."""
    if vm.is_kernel_path(request.path):
        return api.Continue()
    with parent(vm.rw_root, request.path) as (directory, last):
        _refuse_root(last, errno.EBUSY)
        os.rmdir(last, dir_fd=directory)
    return api.Value(0)


def handle_rename(vm: VmContext, request: api.Rename) -> api.Response:
    """Errnos: ENOENT, EEXIST (NOREPLACE), ENOTEMPTY, EISDIR, ENOTDIR, EXDEV, EINVAL, EBUSY,
    EACCES, EPERM, EROFS, ENOSPC, ELOOP, ENAMETOOLONG."""
    if vm.is_kernel_path(request.old) or vm.is_kernel_path(request.new):
        return api.Continue()
    with parent(vm.rw_root, request.old) as (old_dir, old_last), parent(vm.rw_root, request.new) as (new_dir, new_last):
        _refuse_root(old_last, errno.EBUSY)
        _refuse_root(new_last, errno.EBUSY)
        renameat2(old_dir, old_last, new_dir, new_last, request.flags)
    return api.Value(0)


def handle_link(vm: VmContext, request: api.Link) -> api.Response:
    """Errnos: ENOENT, EEXIST, EPERM (directories), EXDEV, EMLINK, EACCES, EROFS, ENOSPC, ELOOP."""
    old_is_kernel = isinstance(request.old, str) and vm.is_kernel_path(request.old)
    if old_is_kernel or vm.is_kernel_path(request.new):
        return api.Continue()
    with parent(vm.rw_root, request.new) as (new_dir, new_last):
        _refuse_root(new_last, errno.EEXIST)
        if isinstance(request.old, api.OpenFile):
            with writable_twin(vm.rw_root, request.old) as twin:
                source = request.old.fd if twin is None else twin[0]
                os.link(proc_path(source), new_last, dst_dir_fd=new_dir, follow_symlinks=True)
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
    if vm.is_kernel_path(request.path):
        return api.Continue()
    with parent(vm.rw_root, request.path) as (directory, last):
        _refuse_root(last, errno.EEXIST)
        os.symlink(request.target, last, dir_fd=directory)
    return api.Value(0)
