"""Paths through another process's procfs links, as the VM paths they name.

``/proc/PID/root/etc/passwd`` names ``/etc/passwd``; ``/proc/PID/cwd/x`` and
``/proc/PID/fd/N/x`` name ``x`` in that process's directory. Left to the kernel, such a
path is read again from the VM's memory once the manager has decided (CONTINUE), and
opens whatever it names by then: a file the manager never saw. Translated, the file is
opened and handed out by the manager like any other. (The driver already translates the
caller's own ``/proc/self`` links; these name other processes, by their pid in the VM.)

The links are read through the VM's own procfs, with the caller's credentials, so the
kernel checks that the caller may follow them as it would natively.
"""

from __future__ import annotations

import errno
import os
import re

from hvfs import api
from hvfs._sys.abi import O_PATH, RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS
from hvfs._sys.files import openat2
from hvfs.manager.resolve import fd_closing, open_object

_THROUGH_LINK = re.compile(r"^/proc/(\d+)(/task/\d+)?/(root|cwd|fd/\d+)(/.*)?$")
_DELETED = " (deleted)"


def through_proc(vm_root: int, path: api.VmPath) -> api.VmPath | None:
    """The VM path that ``/proc/PID[/task/TID]/{root,cwd,fd/N}[/REST]`` names, or None
    when ``path`` is no such path, or is a link alone whose object has no VM path (a
    pipe, a deleted file: the kernel opens those links itself). Raises OSError: ENOENT
    (no such process or fd), EACCES (the caller may not follow the link, or REST starts
    from a directory that no VM path reaches)."""
    match = _THROUGH_LINK.match(str(path))
    if match is None:
        return None
    pid, task, link, rest = match.group(1), match.group(2) or "", match.group(3), match.group(4) or ""
    if link == "root":
        return api.VmPath("/", rest or "/")  # one root for the whole VM: chroot is refused
    process = f"proc/{pid}{task}"  # the VM's own procfs, where its pids are
    directory = openat2(vm_root, process, O_PATH | os.O_DIRECTORY, 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    with fd_closing(directory):
        target = os.readlink(link, dir_fd=directory)  # the VM's own path: its views read so
        named = os.stat(link, dir_fd=directory)
    if target.startswith("/") and not target.endswith(_DELETED) and _reaches(vm_root, target, named):
        return api.VmPath("/", target.rstrip("/") + rest if rest else target)
    if rest:
        raise OSError(errno.EACCES, f"{link} of process {pid} names no path in the VM")
    return None


def _reaches(vm_root: int, target: str, named: os.stat_result) -> bool:
    """Whether ``target`` names, in the VM, the object the link names."""
    try:
        found = open_object(vm_root, api.VmPath("/", target))
    except OSError:
        return False
    with fd_closing(found):
        reached = os.fstat(found)
    return (reached.st_dev, reached.st_ino) == (named.st_dev, named.st_ino)
