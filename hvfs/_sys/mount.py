"""Mount-table calls: mount(2), umount2, pivot_root and the new mount API."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from hvfs._sys.abi import AT_EMPTY_PATH, AT_FDCWD, AT_RECURSIVE
from hvfs._sys.libc import syscall, typed_syscall

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19

MNT_DETACH = 2

OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = 0o2000000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


# The new mount API, typed (a view's making issues some sixty of these: ctypes converts
# the arguments in C rather than each in Python, as ``syscall`` does).
_open_tree = typed_syscall("open_tree", ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
_mount_setattr = typed_syscall(
    "mount_setattr", ctypes.c_int, ctypes.c_char_p, ctypes.c_uint, ctypes.c_void_p, ctypes.c_size_t
)
_move_mount = typed_syscall("move_mount", ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
_fsopen = typed_syscall("fsopen", ctypes.c_char_p, ctypes.c_uint)
_fsconfig = typed_syscall("fsconfig", ctypes.c_int, ctypes.c_uint, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int)
_fsmount = typed_syscall("fsmount", ctypes.c_int, ctypes.c_uint, ctypes.c_uint)


def _bytes(value: str | bytes | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    syscall("mount", _bytes(source), _bytes(target), _bytes(fstype), flags, _bytes(data))


def umount(target: str, flags: int = MNT_DETACH) -> None:
    syscall("umount2", _bytes(target), flags)


def pivot_root(new_root: str, put_old: str) -> None:
    syscall("pivot_root", _bytes(new_root), _bytes(put_old))


def clone_tree(path: str | int, *, recursive: bool = True, readonly: bool = False) -> int:
    """A detached copy of the mount tree at ``path`` (a path, or an fd of its root);
    ``readonly`` makes every mount of the copy read-only before anyone can see it."""
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    if isinstance(path, int):
        tree = _open_tree(path, b"", flags | AT_EMPTY_PATH)
    else:
        tree = _open_tree(AT_FDCWD, _bytes(path), flags)
    if readonly:
        try:
            set_readonly(tree)
        except BaseException:
            os.close(tree)
            raise
    return tree


def set_readonly(tree_fd: int, *, recursive: bool = True) -> None:
    """Make every mount of the tree ``tree_fd`` read-only (only its top one, without ``recursive``)."""
    attr = _MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    _mount_setattr(tree_fd, b"", flags, ctypes.byref(attr), ctypes.sizeof(attr))


def set_writable(tree_fd: int) -> None:
    """Undo ``set_readonly`` on every mount of the tree ``tree_fd``."""
    attr = _MountAttr(0, MOUNT_ATTR_RDONLY, 0, 0)
    _mount_setattr(tree_fd, b"", AT_EMPTY_PATH | AT_RECURSIVE, ctypes.byref(attr), ctypes.sizeof(attr))


def set_nodev(tree_fd: int) -> None:
    """Make every mount of the tree ``tree_fd`` refuse to open device nodes (MOUNT_ATTR_NODEV)."""
    attr = _MountAttr(MOUNT_ATTR_NODEV, 0, 0, 0)
    _mount_setattr(tree_fd, b"", AT_EMPTY_PATH | AT_RECURSIVE, ctypes.byref(attr), ctypes.sizeof(attr))


def make_private(tree_fd: int) -> None:
    """Make every mount of the detached tree ``tree_fd`` private: a clone of a shared
    mount stays in its peer group, so that what is mounted on the clone would appear on
    the original (and an unmount of the original's children would take the clone's)."""
    attr = _MountAttr(0, 0, MS_PRIVATE, 0)
    _mount_setattr(tree_fd, b"", AT_EMPTY_PATH | AT_RECURSIVE, ctypes.byref(attr), ctypes.sizeof(attr))


def _attach_tree(tree_fd: int, target_fd: int) -> None:
    _move_mount(tree_fd, b"", target_fd, b"", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)


@contextmanager
def attached(tree_fd: int, target_fd: int) -> Iterator[int]:
    """``with attached(tree, target) as root:`` attach the detached tree ``tree`` (from
    ``clone_tree`` or ``new_mount``, which this takes over) on the directory or file
    ``target`` (an O_PATH fd), and yield it: inside the block the fd names the attached
    mount's root, so what goes inside it can be made or resolved from it. The fd is
    closed on leaving, whatever happens; the mount stays where it was attached.

    This is the one way a source or a view puts a file system in place."""
    try:
        _attach_tree(tree_fd, target_fd)
        yield tree_fd
    finally:
        os.close(tree_fd)


def attach(tree_fd: int, target_fd: int) -> None:
    """``attached`` for a tree nothing more is done with: attach it, close its fd."""
    with attached(tree_fd, target_fd):
        pass


FSOPEN_CLOEXEC = 1
FSMOUNT_CLOEXEC = 1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_SET_FD = 5
FSCONFIG_CMD_CREATE = 6


def new_mount(fstype: str, options: Mapping[str, str | int | None], attributes: int = 0) -> int:
    """A new, detached mount of ``fstype`` (fsopen/fsconfig/fsmount): the fd of its root.

    An option whose value is None is a flag, an int an fd (``FSCONFIG_SET_FD``: overlayfs's
    ``lowerdir+`` on recent kernels; older ones answer EINVAL). Put it in place with
    ``attached`` or ``attach``.
    """
    context = _fsopen(_bytes(fstype), FSOPEN_CLOEXEC)
    try:
        for key, value in options.items():
            if value is None:
                _fsconfig(context, FSCONFIG_SET_FLAG, _bytes(key), None, 0)
            elif isinstance(value, int):
                _fsconfig(context, FSCONFIG_SET_FD, _bytes(key), None, value)
            else:
                _fsconfig(context, FSCONFIG_SET_STRING, _bytes(key), _bytes(value), 0)
        _fsconfig(context, FSCONFIG_CMD_CREATE, None, None, 0)
        return _fsmount(context, FSMOUNT_CLOEXEC, attributes)
    finally:
        os.close(context)
