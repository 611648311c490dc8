"""What a mutation's handler resolved, kept for what names it afterwards: one resolution
per mutation.

The change set (``hvfs diff``) must know each target's VM path and whether it existed
before the handler acted; an audit event names the paths as the kernel resolved them.
Both are facts of the very resolution the handler makes (the parent directory fd it acts
in, the object fd it acts on), so the handler notes them there, once, before it acts:
the directory's name read back through procfs (never the VM's memory again) and a stat
of the last component. Resolving again for the change set cost a tenth of a served
mutation (docs/performance.md, "One resolution per mutation"), and could name another
file than the one acted on where a VM raced its own symlinks.

The trail of the request a thread serves is thread-local: the dispatch
(``Manager.handle_request``) begins one for each request the change set watches, the
handlers add to it, the dispatch reads it when the handler returns. A handler called
outside a trail notes nothing.
"""

from __future__ import annotations

import os
import stat
import threading

from hvfs import api
from hvfs.manager.resolve import fd_name


class _Here(threading.local):
    trail: Trail | None = None  # each thread's own, None until it serves a request
    # The trail of an audited request the change set does not watch (a stat, a read),
    # used again by the thread's next one: nothing keeps it past the dispatch (the event
    # takes its paths), and a new one cost an audited stat a tenth of what the audit adds.
    reused: Trail | None = None


_here = _Here()
_DELETED = " (deleted)"  # what readlink adds for a file removed since it was opened


class Name:
    """One target the handler resolved, for the request's own ``key`` (its VmPath or
    OpenFile object, compared by identity): the VM path of its directory (``head``; None
    where procfs gave no VM path), its last component (empty: ``head`` names the object
    itself), whether it existed before the handler acted and whether it was a directory.
    ``served``: the target is the very file an open's answer holds, named by the answer."""

    __slots__ = ("existed", "head", "is_dir", "key", "last", "served")

    def __init__(
        self, key: object, head: str | None, last: str, existed: bool, is_dir: bool = False, served: bool = False
    ) -> None:
        self.key = key
        self.head = head
        self.last = last
        self.existed = existed
        self.is_dir = is_dir
        self.served = served

    @property
    def path(self) -> str | None:
        """Its VM path, as the change set keeps it; None where it has none."""
        if self.head is None:
            return None
        return f"{self.head.rstrip('/')}/{self.last}" if self.last else self.head


class Trail:
    __slots__ = ("answer", "audited", "names", "watched")

    def __init__(self, audited: bool = False, watched: bool = True) -> None:
        self.names: list[Name] = []
        self.audited = audited  # the request's event names its paths (see ``naming``)
        self.watched = watched  # the change set reads ``names``
        # The request's one path where the handler found it by its text (``named``), or an
        # open's, the VM path of the file its answer holds (``answered``).
        self.answer: str | None = None

    def head_of(self, key: object) -> str | None:
        """The resolved directory of the request's ``key`` (that very object), if noted."""
        for name in self.names:
            if name.key is key and name.last:
                return name.head
        return None


def begin(watched: bool, audited: bool = False) -> Trail | None:
    """The trail of the request this thread serves now (None: nothing is noted): for the
    change set (``watched``), for an event (``audited``), or both. One for an event alone
    is the thread's previous one, emptied: read it before the thread's next ``begin``."""
    here = _here
    if watched:
        trail: Trail | None = Trail(audited, watched)
    elif audited:
        trail = here.reused
        if trail is None:
            trail = here.reused = Trail(True, False)
        else:
            trail.names.clear()
            trail.answer = None
    else:
        trail = None
    here.trail = trail
    return trail


def noting() -> bool:
    """Whether the request this thread serves has a trail: a handler that must resolve
    differently to note something (a stat: see ``located``) asks first."""
    return _here.trail is not None


def naming() -> bool:
    """Whether the request this thread serves has an event that names its paths: a handler
    that may find a name differently for it (an open: ``answered``) asks first, so that a
    request without one pays nothing for it."""
    trail = _here.trail
    return trail is not None and trail.audited


def end() -> None:
    _here.trail = None


def _current() -> Trail | None:
    return _here.trail


def _vm_path(fd: int) -> str | None:
    # Safe because: the fd is one the manager resolved in the VM's writable view, a
    # detached tree whose paths read as the VM's own; the VM's memory is not read again.
    try:
        where = fd_name(fd)
    except OSError:
        return None
    return where if where.startswith("/") else None


def name(key: api.VmPath, directory: int, last: str, head: str | None = None) -> None:
    """The handler acts on the name ``last`` in ``directory``, resolved for ``key``: note
    its VM path and what is there now. Call before acting. ``head``: the directory's VM
    path where the handler knows it (``resolve.parent_named``), else read from the fd."""
    trail = _current()
    if trail is None:
        return
    last = last.rstrip("/")
    where = head if head is not None else _vm_path(directory)
    try:
        st = os.stat(last or ".", dir_fd=directory, follow_symlinks=False)
    except OSError:
        trail.names.append(Name(key, where, last, False))
        return
    trail.names.append(Name(key, where, last, True, stat.S_ISDIR(st.st_mode)))


def resolved(key: api.VmPath, fd: int, path: str | None = None) -> None:
    """The handler acts on the object ``fd`` holds, resolved for ``key``: note its VM path
    (``path`` where the handler knows it: ``resolve.open_named``, else read from the fd)."""
    trail = _current()
    if trail is not None:
        where = (path.rstrip("/") or "/") if path is not None else _vm_path(fd)  # "d/" names d
        trail.names.append(Name(key, where, "", True))


def located(key: api.VmPath, fd: int) -> None:
    """The handler found what ``key``'s last component is, itself (an O_PATH|O_NOFOLLOW
    fd, a symlink not followed): note its directory's VM path and its name there, which
    is what an audit names (a read, whose event must name it, resolves nothing else)."""
    trail = _current()
    if trail is None:
        return
    where = _vm_path(fd)
    if where is None or where.endswith(_DELETED):
        return
    head, _, last = where.rpartition("/")
    trail.names.append(Name(key, head or "/", last, True))


def named(key: api.VmPath, name: str) -> None:
    """As ``located``, where the handler found ``key``'s last component by the absolute
    ``name`` with no symlink, ``.`` or ``..`` on the way: the text is the name, and the
    request's one path (``answer``: a request on one name is named by it at once)."""
    trail = _here.trail
    if trail is not None:
        whole = name.rstrip("/") or "/"
        if trail.watched:  # an event alone reads only ``answer`` (hvfs.manager.served)
            head, _, last = whole.rpartition("/")
            trail.names.append(Name(key, head or "/", last, True))
        trail.answer = whole


def answered(name: str) -> None:
    """An open's answer holds the file the handler found at ``name`` (a plain path found with
    no symlink on the way: hvfs.manager.resolve.open_named): its event names it, without
    a readlink of the answer."""
    trail = _current()
    if trail is not None:
        trail.answer = name


def open_file(file: api.OpenFile) -> None:
    """The handler acts on the caller's open file, named by the path the driver read."""
    trail = _current()
    if trail is not None:
        trail.names.append(Name(file, file.path if file.path.startswith("/") else None, "", True))


def served(existed: bool, path: str | None = None) -> None:
    """An open hands out the file it found (``existed``) or the one it created; ``path``:
    its VM path where the handler knows it (found by its text with no symlink on the
    way), which spares the change set a readlink of the answer."""
    trail = _current()
    if trail is not None:
        trail.names.append(Name(None, path, "", existed, served=True))
