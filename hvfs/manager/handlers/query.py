"""Reads served in strict mode (stat, statx, readlink, chdir and exec checks, lookups),
plus the two reads the boot view would get wrong in any mode: access(W_OK) and statfs,
which must see a writable mount as writable.

Reads resolve in the VM's own root, so results (mount ids included) are exactly the
native ones. A lookup that fails may still succeed for the VM itself through
/proc/self, which names the manager here: the kernel gets those on the boot view.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TypeVar

from hvfs import api
from hvfs._sys.abi import AT_EACCESS, AT_EMPTY_PATH, AT_SYMLINK_NOFOLLOW, O_PATH, STATFS
from hvfs._sys.files import faccessat, fstatfs, mount_id, statx
from hvfs.manager import trail
from hvfs.manager.handlers.opening import RETRY_IN_VM
from hvfs.manager.resolve import ForeignBase, fd_closing, open_named, open_object, writable_twin
from hvfs.manager.vm import VmContext


class _ContinueInVm(Exception):
    pass


def _object(vm: VmContext, root: int, path: api.Target, follow: bool) -> AbstractContextManager[int]:
    """An O_PATH fd of the object, or of an open file's twin in the writable view."""
    if isinstance(path, api.OpenFile):
        return _open_file(vm, path)
    if vm.is_kernel_path(path):
        raise _ContinueInVm()
    try:
        fd = _located(root, path, follow) if trail.noting() else open_object(root, path, follow=follow)
    except OSError as e:
        if e.errno in RETRY_IN_VM or isinstance(e, ForeignBase):
            raise _ContinueInVm() from e
        raise
    return fd_closing(fd)


def _located(root: int, path: api.VmPath, follow: bool) -> int:
    """open_object, with the name of the path's last component itself noted for the
    request's event (hvfs.manager.trail). A ``resolve.plain_name`` path is first found as
    asked with no symlink at all on the way (one openat2, as open_object's): where there
    is none (the usual stat), its text is its name. Else its last component is found
    without following it, and followed only if it is a symlink, so that the name read
    back is its own."""
    found = open_named(root, path, O_PATH if follow else O_PATH | os.O_NOFOLLOW)
    if found is not None:
        trail.named(path, found[1])
        return found[0]
    found = open_named(root, path, O_PATH | os.O_NOFOLLOW) if follow else None  # the symlink is the last one
    if found is not None:
        trail.named(path, found[1])
        fd = found[0]
    else:
        fd = open_object(root, path, follow=False)
        trail.located(path, fd)
    if follow and stat.S_ISLNK(os.fstat(fd).st_mode):
        os.close(fd)
        fd = open_object(root, path, follow=True)
    return fd


@contextmanager
def _open_file(vm: VmContext, file: api.OpenFile) -> Iterator[int]:
    with writable_twin(vm.rw_root, file) as twin:
        yield file.fd if twin is None else twin[0]


R = TypeVar("R")


def _continue_if_needed(handler: Callable[[VmContext, R], api.Response]) -> Callable[[VmContext, R], api.Response]:
    @functools.wraps(handler)
    def wrapper(vm: VmContext, request: R) -> api.Response:
        try:
            return handler(vm, request)
        except _ContinueInVm:
            return api.Continue()

    return wrapper


@_continue_if_needed
def handle_stat(vm: VmContext, request: api.Stat) -> api.Response:
    """Errnos: EACCES, ENAMETOOLONG (missing paths are left to the kernel)."""
    with _object(vm, vm.vm_root, request.path, request.follow) as fd:
        return api.StatResult(os.fstat(fd))


@_continue_if_needed
def handle_statx(vm: VmContext, request: api.Statx) -> api.Response:
    """Errnos: EACCES, EINVAL (bad flags or mask bits)."""
    follow = not request.flags & AT_SYMLINK_NOFOLLOW
    with _object(vm, vm.vm_root, request.path, follow) as fd:
        return api.StatxResult(statx(fd, "", AT_EMPTY_PATH | (request.flags & ~AT_SYMLINK_NOFOLLOW), request.mask))


@_continue_if_needed
def handle_statfs(vm: VmContext, request: api.Statfs) -> api.Response:
    """Errnos: EACCES. Served from the writable view: ST_RDONLY only where the mount is.
    On a copy-on-write mount (an image), the overlay alone would report its upper layer,
    often an empty memory file system (``df /`` would show nothing used): see
    ``_image_statfs``."""
    with _object(vm, vm.rw_root, request.path, True) as fd:
        raw = fstatfs(fd)
        image = vm.images.get(mount_id(fd)) if vm.images else None
        return api.StatfsResult(raw if image is None else _image_statfs(raw, fstatfs(image)))


def _image_statfs(overlay: bytes, image: bytes) -> bytes:
    """The image's file system as a whole, as a user expects of ``df`` or
    ``shutil.disk_usage``: used is what the image's file system uses plus what the VM
    wrote (the overlay reports its upper layer), free is the room left for writes (the
    upper layer's); the type, id, flags and name length stay the overlay's own."""
    kind, _bsize, blocks, bfree, bavail, files, ffree, fsid, namelen, frsize, flags, spare = STATFS.unpack(overlay)
    _, _, i_blocks, i_bfree, _, i_files, i_ffree, _, _, i_frsize, _, _ = STATFS.unpack(image)
    unit = i_frsize or 1
    scale = (frsize or 1) / unit  # the upper layer's counts in the image's block size
    used = i_blocks - i_bfree + int((blocks - bfree) * scale)
    free, available = int(bfree * scale), int(bavail * scale)
    files_used = i_files - i_ffree + files - ffree
    combined = (used + free, free, available, files_used + ffree, ffree)
    return STATFS.pack(kind, i_frsize, *combined, fsid, namelen, i_frsize, flags, spare)


@_continue_if_needed
def handle_access(vm: VmContext, request: api.Access) -> api.Response:
    """Errnos: EACCES, EROFS (W_OK on a read-only mount), ETXTBSY. The manager's dispatch
    runs this with the caller's real ids unless AT_EACCESS is given."""
    follow = not request.flags & AT_SYMLINK_NOFOLLOW
    with _object(vm, vm.rw_root, request.path, follow) as fd:
        if request.mode:
            faccessat(fd, "", request.mode, AT_EACCESS | AT_EMPTY_PATH)
    return api.Value(0)


@_continue_if_needed
def handle_readlink(vm: VmContext, request: api.Readlink) -> api.Response:
    """Errnos: EINVAL (not a symlink), EACCES."""
    with _object(vm, vm.vm_root, request.path, False) as fd:
        if not stat.S_ISLNK(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a symlink")
        return api.Data(os.fsencode(os.readlink("", dir_fd=fd)))


@_continue_if_needed
def handle_chdir(vm: VmContext, request: api.Chdir) -> api.Response:
    """Errnos: ENOTDIR, EACCES. Checked, then continued: the kernel keeps the cwd."""
    with _object(vm, vm.vm_root, request.path, True) as fd:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.ENOTDIR, "not a directory")
        faccessat(fd, "", os.X_OK, AT_EACCESS | AT_EMPTY_PATH)
    return api.Continue()


@_continue_if_needed
def handle_exec(vm: VmContext, request: api.Exec) -> api.Response:
    """Errnos: EACCES (not a regular file, or not executable). Checked, then continued:
    only the kernel can load a program, and it checks an open file itself."""
    if isinstance(request.path, api.OpenFile):
        return api.Continue()
    with _object(vm, vm.vm_root, request.path, request.follow) as fd:
        kind = stat.S_IFMT(os.fstat(fd).st_mode)
        if kind == stat.S_IFLNK:
            raise OSError(errno.ELOOP, "a symlink, and AT_SYMLINK_NOFOLLOW")
        if kind != stat.S_IFREG:
            raise OSError(errno.EACCES, "not a regular file")
        faccessat(fd, "", os.X_OK, AT_EACCESS | AT_EMPTY_PATH)
    return api.Continue()


def handle_executed(vm: VmContext, request: api.Executed) -> api.Response:
    """Errnos: none. The kernel has run the exec; the manager has nothing to do, its
    services judge the file (a hook answers EACCES to have the process killed)."""
    return api.Value(0)


@_continue_if_needed
def handle_lookup(vm: VmContext, request: api.Lookup) -> api.Response:
    """Errnos: EACCES. Checked, then continued: the kernel gives the answer."""
    with _object(vm, vm.vm_root, request.path, request.follow):
        pass
    return api.Continue()
