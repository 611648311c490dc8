"""Paths as the caller gave them, and the caller's own magic links among them.

A path names a file from the caller's cwd or dirfd (``located``): the manager resolves
it from there. Some spellings name the caller itself: ``/proc/self/fd/N``,
``/dev/fd/N`` and ``/dev/stdin`` name one of its open files, which an open then reopens
(``hvfs.manager.handlers.reopening``) and other calls act on; ``/proc/self/cwd`` and
``/proc/self/root`` its directories; ``/proc/self`` its own process, which in the
manager would be the manager's. Each is replaced by what it names for the caller, read
through the tracee protocol (``tracee.py``) and nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hvfs import api
from hvfs._sys.abi import AT_FDCWD
from hvfs.api.magic import OWN_FD_LINK, normal
from hvfs.intercept.decoders.tracee import Tracee
from hvfs.patterns import pattern

if TYPE_CHECKING:  # the messages load with a first request (hvfs.api)
    from hvfs.api import OpenFile, VmPath

# The caller's own magic links: glibc's lchmod and fchmodat(AT_SYMLINK_NOFOLLOW) chmod
# "/proc/self/fd/N", and O_TMPFILE files are linked in through such paths.
_PROC_SELF = pattern(r"^/proc/(?:self|thread-self)/(?P<link>fd/(?P<fd>\d+)|cwd|root)(?P<rest>/.*)?$")
_SELF = pattern(r"^/proc/(self|thread-self)(?=/|$)")
# The VM's /dev links to the caller's fds (hvfs.manager.sources.devices), recognised as
# such while they still are those links.
_DEV_FD = pattern(r"^/dev/fd/(\d+)$")
_DEV_STDIO = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}


def untranslated(name: str) -> bool:
    """Whether ``name`` is an absolute path that ``own_file`` and ``resolved`` leave as it is,
    seen from its text alone: outside /proc and /dev, and already ``normal`` (no empty or
    ``.`` component, which could hide a /proc/ or /dev/ prefix; a dotfile's ``/.x`` is
    neither)."""
    if name[:1] != "/" or name.startswith(("/proc/", "/dev/")):
        return False
    return "//" not in name and "/./" not in name and not name.endswith("/.")


def located(tracee: Tracee, dirfd: int, name: str) -> VmPath:
    """A relative ``name`` with the directory it starts from, that directory's path and identity."""
    base, identity = tracee.directory(dirfd)
    return api.VmPath(base, name, identity)


def given_path(tracee: Tracee, dirfd: int, name: str) -> VmPath:
    """``name`` with the directory a relative one starts from, nothing translated."""
    return api.VmPath("/", name) if name.startswith("/") else located(tracee, dirfd, name)


def resolved(tracee: Tracee, path: VmPath, *, magic: bool = True) -> VmPath:
    """``path`` with /proc/self/{fd/N,cwd,root} replaced by the VM path they name (when
    ``magic``), and /proc/self or /proc/thread-self by the caller's own numbers, which
    name the same in the VM's procfs for the manager too."""
    full = normal(str(path))
    if not full.startswith("/proc/"):
        return path
    translated = _through_proc(tracee, full) if magic else full
    if translated.startswith("/proc/"):
        translated = _numbered(tracee, translated)
    return path if translated == full else api.VmPath("/", translated)


def own_file(tracee: Tracee, path: VmPath) -> OpenFile | None:
    """The caller's open file, when ``path`` spells a magic link to one of its fds:
    /proc/self/fd/N, /proc/thread-self/fd/N, /dev/fd/N, /dev/stdin|stdout|stderr."""
    full = normal(str(path))
    if not full.startswith(("/proc/", "/dev/")):
        return None
    fd = own_fd(tracee, full)
    return None if fd is None else tracee.take_fd(fd)


def own_fd(tracee: Tracee, path: str) -> int | None:
    """N, when ``path`` spells a magic link to the caller's own fd N."""
    match = OWN_FD_LINK.match(path)
    if match is not None:
        return int(match.group(1))
    match = _DEV_FD.match(path)
    if match is not None:
        return int(match.group(1)) if tracee.dev_link("fd") == "/proc/self/fd" else None
    number = _DEV_STDIO.get(path)
    if number is not None and tracee.dev_link(path.removeprefix("/dev/")) == f"/proc/self/fd/{number}":
        return number
    return None


def _numbered(tracee: Tracee, path: str) -> str:
    """/proc/self... as /proc/TGID..., /proc/thread-self... as /proc/TGID/task/TID...,
    with the caller's ids in the VM's pid namespace."""
    match = _SELF.match(path)
    if match is None:
        return path
    tgid, tid = tracee.vm_ids()
    head = f"/proc/{tgid}" if match.group(1) == "self" else f"/proc/{tgid}/task/{tid}"
    return head + path[match.end() :]


def _through_proc(tracee: Tracee, path: str) -> str:
    """``/proc/self/{fd/N,cwd,root}/rest`` as the in-VM path of what it names.

    Only when the named file is reachable in the VM: an fd inherited from the host
    (stdout redirected to a host file) keeps its /proc path, which the manager then
    resolves in the VM's own procfs (``hvfs.manager.kernel_paths``).
    """
    match = _PROC_SELF.match(path)
    if match is None:
        return path
    link, fd, rest = match["link"], match["fd"], match["rest"] or ""
    if link == "root":
        return rest or "/"
    if link == "cwd":
        cwd = tracee.directory(AT_FDCWD)[0]
        return cwd.rstrip("/") + rest if rest else cwd
    if fd != str(int(fd)):  # procfs names no fd "07": the kernel's lookup fails, and so does this
        return path
    target = tracee.fd_path(int(fd))
    if target is None:
        return path
    return target.rstrip("/") + rest if rest else target
