"""A VM's change set as a tarball (``hvfs export``): what it added or changed, read from
its writable view beneath its root, and an OCI whiteout (``DIR/.wh.NAME``) for each path
it removed. Nothing is followed: a symlink is exported as a symlink, devices and sockets
are skipped (the manager never makes a device for a VM)."""

from __future__ import annotations

import os
import posixpath
import stat
import tarfile
from typing import BinaryIO

from hvfs import api
from hvfs.manager.resolve import parent
from hvfs.manager.vm import VmContext

WHITEOUT = ".wh."


def _info(name: str, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode, info.uid, info.gid, info.mtime = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, int(st.st_mtime)
    return info


def _add(tar: tarfile.TarFile, context: VmContext, path: str) -> bool:
    name = path.lstrip("/")
    try:
        with parent(context.rw_root, api.VmPath("/", path)) as (directory, last):
            st = os.stat(last, dir_fd=directory, follow_symlinks=False)
            info = _info(name, st)
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif stat.S_ISLNK(st.st_mode):
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(last, dir_fd=directory)
                tar.addfile(info)
            elif stat.S_ISFIFO(st.st_mode):
                info.type = tarfile.FIFOTYPE
                tar.addfile(info)
            elif stat.S_ISREG(st.st_mode):
                fd = os.open(last, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=directory)
                with os.fdopen(fd, "rb") as content:
                    info.size = os.fstat(fd).st_size
                    tar.addfile(info, content)
            else:
                return False
    except OSError:
        return False  # gone or changed since: the set is of a running VM
    return True


def write_tarball(context: VmContext, out: BinaryIO) -> int:
    """Write ``context``'s changes to ``out``; the number of entries written."""
    written = 0
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for change in context.changes.changes():
            if change.kind == "D":
                head, last = posixpath.split(change.path)
                info = tarfile.TarInfo(posixpath.join(head, WHITEOUT + last).lstrip("/"))
                info.mode = 0o644
                tar.addfile(info)
                written += 1
            elif _add(tar, context, change.path):
                written += 1
    return written
