"""The open family: open, openat, creat and openat2."""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import os
import stat

from hvfs import api
from hvfs._sys.abi import (
    O_PATH,
    RESOLVE_BENEATH,
    RESOLVE_IN_ROOT,
    RESOLVE_NO_MAGICLINKS,
    RESOLVE_NO_SYMLINKS,
    TMPFILE_BIT,
)
from hvfs._sys.files import openat2
from hvfs.manager import kernel_paths, trail
from hvfs.manager.handlers import direct, reopening
from hvfs.manager.procfs import through_proc
from hvfs.manager.resolve import (
    ForeignBase,
    base_directory,
    fd_closing,
    open_at,
    open_named,
    open_object,
    proc_path,
)
from hvfs.manager.vm import VmContext

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | TMPFILE_BIT
# What open(2) and openat(2) keep of the flags (the kernel's VALID_OPEN_FLAGS); openat2
# refuses anything else with EINVAL, where the older calls ignore it.
VALID_OPEN_FLAGS = (
    os.O_ACCMODE
    | os.O_CREAT
    | os.O_EXCL
    | os.O_NOCTTY
    | os.O_TRUNC
    | os.O_APPEND
    | os.O_NONBLOCK
    | os.O_SYNC
    | os.O_DSYNC
    | fcntl.FASYNC
    | os.O_DIRECT
    | os.O_LARGEFILE
    | os.O_DIRECTORY
    | os.O_NOFOLLOW
    | os.O_NOATIME
    | os.O_CLOEXEC
    | O_PATH
    | TMPFILE_BIT
)
# openat2 resolutions that never follow a magic link (scoped ones fail with EXDEV on one).
NO_MAGIC = RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH | RESOLVE_IN_ROOT
O_PATH_FLAGS = os.O_DIRECTORY | os.O_NOFOLLOW | O_PATH | os.O_CLOEXEC
# Lookups that fail in the writable view may still succeed in the VM: a path through
# /proc/self (say /dev/stdout) names the caller there, and the manager here. The kernel
# answers those on the boot view, where it also fails the same way if the path is bad.
RETRY_IN_VM = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)


def normalized(request: api.Open) -> tuple[int, int]:
    """Flags and mode as the kernel sees them for this call."""
    flags, mode = request.flags, request.mode
    if request.legacy:
        flags &= VALID_OPEN_FLAGS
        if flags & O_PATH:
            flags &= O_PATH_FLAGS
        mode = mode & 0o7777 if flags & (os.O_CREAT | TMPFILE_BIT) else 0
    return flags, mode


def _open(root: int, request: api.Open, flags: int, mode: int = 0) -> int:
    """openat2 of the request's path under ``root``: from the dirfd when the caller asked
    for RESOLVE_BENEATH or RESOLVE_IN_ROOT, else resolved as the kernel resolves it."""
    if request.resolve & (RESOLVE_BENEATH | RESOLVE_IN_ROOT):
        with fd_closing(base_directory(root, request.path.base, request.path.base_id)) as base:
            return openat2(base, request.path.name, flags, mode, request.resolve)
    return open_at(root, request.path, flags, mode, request.resolve)


def _found(root: int, request: api.Open, flags: int, mode: int = 0) -> tuple[int, str | None]:
    """``_open``, and the VM path of what it opened where the request's text is that path:
    an audited open (``trail.naming``) of a ``resolve.plain_name`` path without a trailing ``/``
    is tried first with no symlink on the way (``resolve.open_named``), which spares its
    event the readlink of the answer (2 µs); a symlink on the way costs that attempt, then
    the usual resolution."""
    if trail.naming() and not request.resolve & (RESOLVE_BENEATH | RESOLVE_IN_ROOT) and request.path.name[-1:] != "/":
        found = open_named(root, request.path, flags, mode, request.resolve)
        if found is not None:
            return found
    return _open(root, request, flags, mode), None


def _valid_how(request: api.Open) -> None:
    """openat2 checks its arguments before any lookup; let the kernel do it, on no file."""
    try:
        os.close(openat2(-1, "", request.flags, request.mode, request.resolve))
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.E2BIG):
            raise


def handle_open(vm: VmContext, request: api.Open) -> api.Response:
    """Errnos: those of openat2(2) in the VM's views — EACCES, EEXIST, EISDIR, ENOENT,
    ENOTDIR, ELOOP, EROFS, ENOSPC, EDQUOT, ETXTBSY, EINVAL, ENAMETOOLONG, EMFILE, ENFILE —
    and ENOSYS for an openat2 left to the kernel while reads are judged (``_continued``)."""
    if not request.legacy:
        _valid_how(request)
    flags, mode = normalized(request)
    if flags & O_PATH:
        return _continued(vm, request, flags)  # ADDFD cannot carry O_PATH files
    writing = bool(flags & WRITE_FLAGS)
    if request.via is not None:
        if writing and not flags & TMPFILE_BIT:
            trail.open_file(request.via)
        return reopening.reopen_own(vm, request.via, flags, mode, writing)
    if vm.is_kernel_path(request.path):
        return _open_kernel_path(vm, request, flags, mode, writing)
    if writing:
        return _open_writable(vm, request, flags, mode)
    return _open_readable(vm, request, flags)


def _continued(vm: VmContext, request: api.Open, flags: int) -> api.Response:
    """Let the kernel open it on the boot view: it reads the path again from the VM's
    memory, where another thread may have put another one since the manager looked.

    While a service judges what the VM reads, that must never open content the manager
    did not hand out. An open(2) or openat(2) carries its flags in a register, which no
    other thread can change: write-only and O_PATH opens give no content (an O_PATH fd is
    read only by opening it again, a request the manager sees). What is left are the
    objects the kernel must open itself (procfs, devpts, devices, FIFOs): README,
    "Limits". An openat2 carries its flags in memory, where O_PATH may turn into O_RDONLY
    by the time the kernel reads them: refused with ENOSYS, which makes callers fall back
    to openat.
    """
    if vm.reads_judged and not request.legacy:
        raise OSError(errno.ENOSYS, "openat2 left to the kernel while reads are judged")
    return api.Continue()


def _retry_in_vm(vm: VmContext, request: api.Open, flags: int, error: OSError) -> api.Response:
    """A lookup that failed in the manager's view may succeed in the VM's, through its
    /proc/self (/dev/stdin, /etc/mtab → ../proc/self/mounts), which names the manager
    here. While reads are judged, a path that cannot be one of those (a torn read of a
    path another thread is rewriting, say) gets the manager's errno, never the kernel's
    second reading of the VM's memory."""
    if vm.reads_judged and flags & os.O_ACCMODE != os.O_WRONLY and not _may_need_the_callers_proc(vm, request):
        raise error
    return _continued(vm, request, flags)


def _may_need_the_callers_proc(vm: VmContext, request: api.Open) -> bool:
    """A path under /proc or /dev (their links into /proc/self), or ending in a symlink."""
    path = str(request.path)
    if path.startswith(("/proc/", "/dev/")):
        return True
    try:
        last = open_object(vm.vm_root, request.path, follow=False)
    except OSError:
        return False
    with fd_closing(last):
        return stat.S_ISLNK(os.fstat(last).st_mode)


def _open_kernel_path(vm: VmContext, request: api.Open, flags: int, mode: int, writing: bool) -> api.Response:
    """The VM's procfs and devpts: a magic link to an fd is reopened by the manager; any
    other path the kernel opens, for writing only if it crosses no magic link."""
    if not request.resolve & NO_MAGIC:
        served = reopening.reopen_linked(vm, request.path, flags, mode, writing)
        if served is not None:
            if writing and not flags & TMPFILE_BIT:
                # A file of the VM opened already: it existed unless a change noted it first.
                trail.served(existed=True)
            return served
    translated = None if request.resolve else through_proc(vm.vm_root, request.path)
    if translated is not None:  # /proc/PID/{root,cwd}/…: the VM path it names
        return handle_open(vm, dataclasses.replace(request, path=translated))
    if writing:
        kernel_paths.check(
            vm, request.path, follow=not flags & os.O_NOFOLLOW, code=errno.EACCES, resolve=request.resolve
        )
    return _continued(vm, request, flags)


def _open_writable(vm: VmContext, request: api.Open, flags: int, mode: int) -> api.Response:
    if flags & os.O_ACCMODE != os.O_RDONLY and not flags & TMPFILE_BIT and not _under_dev(request.path):
        served = direct.open_writable(vm, request, flags, mode)
        if served is not None:
            return served
    try:
        probe, name = _found(vm.rw_root, request, O_PATH | (flags & os.O_NOFOLLOW))
    except OSError as e:
        if isinstance(e, ForeignBase):
            vm.warn_once(f"a write relative to {request.path.base} refused: a directory from outside the VM")
            raise
        if e.errno == errno.ENOENT and flags & os.O_CREAT:
            return _create(vm, request, flags, mode)
        if e.errno in RETRY_IN_VM:
            # Through a symlink into the VM's procfs or devpts (/dev/ptmx): the kernel's,
            # if it crosses no magic link to reach it.
            follow = not flags & os.O_NOFOLLOW
            kernel_paths.check(vm, request.path, follow=follow, code=errno.EACCES, resolve=request.resolve)
            return _retry_in_vm(vm, request, flags, e)
        raise
    with fd_closing(probe):
        kind = stat.S_IFMT(os.fstat(probe).st_mode)
        if kind == stat.S_IFREG:
            if flags & os.O_CREAT and flags & os.O_EXCL:
                raise OSError(errno.EEXIST, "exists")
            trail.served(existed=True)
            fd = os.open(proc_path(probe), flags & ~(os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW) | os.O_CLOEXEC)
            if name is not None:
                trail.answered(name)
            return _hand_out(vm, request, fd, flags)
        if kind in (stat.S_IFDIR, stat.S_IFLNK):
            # EISDIR or ELOOP from the kernel, or an O_TMPFILE in the directory.
            if not flags & TMPFILE_BIT:
                trail.served(existed=True)
            return _hand_out(vm, request, _open(vm.rw_root, request, flags, mode), flags)
        return _continued(vm, request, flags)  # devices, FIFOs, sockets: nothing in the tree changes


def _under_dev(path: api.VmPath) -> bool:
    """A path under /dev names a device node nearly always, which the one-call open only
    fails to open on the nodev writable view (EACCES) before the general path lets the
    kernel open it: a write to /dev/null would pay that failed open each time."""
    name = path.name if path.name.startswith("/") else path.base
    return name.startswith("/dev/") or name == "/dev"


def _create(vm: VmContext, request: api.Open, flags: int, mode: int) -> api.Response:
    # O_NONBLOCK: if a FIFO took the name meanwhile, opening it must not block a worker.
    fd, name = _found(vm.rw_root, request, flags | os.O_NONBLOCK, mode)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return _continued(vm, request, flags)
    trail.served(existed=False)
    if name is not None:
        trail.answered(name)
    if not flags & os.O_NONBLOCK:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return _hand_out(vm, request, fd, flags)


def _hand_out(vm: VmContext, request: api.Open, fd: int, flags: int) -> api.Response:
    """An fd from the writable view goes out only if the caller may write through it:
    a read-only fd from a writable mount could be reopened for writing via /proc."""
    if flags & os.O_ACCMODE != os.O_RDONLY:
        return api.Fd(fd, bool(flags & os.O_CLOEXEC))
    with fd_closing(fd):
        written = os.fstat(fd)
        twin = _open(vm.vm_root, request, flags & ~(WRITE_FLAGS | os.O_EXCL))
        same = os.fstat(twin)
        if (same.st_dev, same.st_ino) != (written.st_dev, written.st_ino):
            os.close(twin)
            raise OSError(errno.ENOENT, "replaced while opening")
        return api.Fd(twin, bool(flags & os.O_CLOEXEC))


def _open_readable(vm: VmContext, request: api.Open, flags: int) -> api.Response:
    """Strict mode: a read-only open, served from the VM's own read-only view."""
    try:
        probe, name = _found(vm.vm_root, request, O_PATH | (flags & os.O_NOFOLLOW))
    except OSError as e:
        if isinstance(e, ForeignBase):  # the kernel reads through the caller's own directory fd
            if vm.reads_judged:
                raise OSError(errno.EACCES, "a directory from outside the VM, while reads are judged") from e
            return api.Continue()
        if e.errno in RETRY_IN_VM:
            return _retry_in_vm(vm, request, flags, e)
        raise
    with fd_closing(probe):
        kind = stat.S_IFMT(os.fstat(probe).st_mode)
        if kind not in (stat.S_IFREG, stat.S_IFDIR):
            return _continued(vm, request, flags)
        fd = os.open(proc_path(probe), flags & ~os.O_NOFOLLOW | os.O_CLOEXEC)
        if name is not None:
            trail.answered(name)
        return api.Fd(fd, bool(flags & os.O_CLOEXEC))
