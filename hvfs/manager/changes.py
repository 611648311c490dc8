"""What a VM changed, from what the manager served it (``hvfs diff``, ``hvfs run --diff``).

Every served mutation notes the path it acted on, as the kernel resolved it in the VM's
writable view (the directory fd the handler used, read back through procfs, never the
VM's memory again), and whether that path existed before the VM first changed it:

- A: it did not exist before the first change and exists now;
- C: it existed and exists now (content, metadata, or replaced);
- D: it existed and is gone.

A path added and then removed leaves nothing. A rename is a removal of the old name and an
addition (or change) of the new. The record is bounded (``LIMIT`` paths): past it, new
paths are counted as lost and the set says it is truncated.

Exactness and its limits are in docs/changes.md: writes through an fd opened before are
not requests; a VM racing its own symlinks between the pre-check and the handler can
make the "existed before" of its own path wrong, never name a path outside the VM.
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hvfs import _native as native
from hvfs import api
from hvfs._sys.abi import RENAME_EXCHANGE, TMPFILE_BIT
from hvfs._sys.lines import write_lines
from hvfs.manager.resolve import fd_closing, open_object, parent, proc_path
from hvfs.manager.trail import Name

LIMIT = 100_000  # paths per VM: some 20 MB at worst; a VM making millions of files is truncated
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC
_NAME_CHANGES = ("Mkdir", "Mknod", "Unlink", "Rmdir", "Symlink")
_ATTR_CHANGES = ("Chmod", "Chown", "Utimens", "SetXattr", "RemoveXattr")


@functools.cache
def watched() -> frozenset[type]:
    """The requests that change a name or a file, which a change set notes: by name, as the
    messages load with a first request (hvfs.api)."""
    names = ("Open", "Rename", "Link", "Truncate", *_NAME_CHANGES, *_ATTR_CHANGES)
    return frozenset(getattr(api, name) for name in names)


@dataclass(frozen=True, slots=True)
class Change:
    """One change a VM made: its kind and its VM path."""

    kind: str  # "A", "C" or "D"
    path: str


class ChangeSet:
    """The paths one VM changed: for each, whether it existed before its first change
    and whether it exists now. Thread-safe; a dict update per served mutation.

    The C loops note what they serve without the GIL, in a queue (``c_note``,
    hvfs/_native/note_queue.h) that every operation here drains first, under the lock: a
    note C queued before it answered is seen by every reader after that answer, and applied
    before any note or move made here after it, as if it had been made here."""

    def __init__(self, limit: int = LIMIT) -> None:
        self._paths: dict[str, tuple[bool, bool]] = {}
        self._lock = threading.Lock()
        self._limit = limit
        self._lost = 0  # changes to paths not recorded, past the limit
        self._queue: object | None = None  # note_queue.h's, once a C loop notes here

    def c_note(self) -> tuple[object, Callable[[str, bool, bool], None]] | Callable[[str, bool, bool], None]:
        """What a C loop notes with (write_open.h note_change): (its queue, ``note``, for a
        note the full queue cannot take); ``note`` alone where the C loops are not built."""
        compiled = native.hotpath or native.tracer
        if compiled is None:
            return self.note
        with self._lock:
            if self._queue is None:
                self._queue = compiled.note_queue()
            return (self._queue, self.note)

    def _drain_locked(self) -> None:
        if self._queue is not None:
            for path, existed, exists, repeats in (native.hotpath or native.tracer).drain_notes(self._queue):
                self._note_locked(path, existed, exists, repeats)

    def note(self, path: str, existed: bool, exists: bool) -> None:
        with self._lock:
            self._drain_locked()
            self._note_locked(path, existed, exists)

    def _note_locked(self, path: str, existed: bool, exists: bool, repeats: int = 0) -> None:
        """One note, and ``repeats`` more of the same path that exists, which C folded into it
        (hvfs/_native/note_queue.h): each changes nothing once the path is held, and counts
        as lost where the path was not, as this note would have."""
        entry = self._paths.get(path)
        if entry is not None:
            self._paths[path] = (entry[0], exists)
        elif len(self._paths) < self._limit:
            self._paths[path] = (existed, exists)
        else:
            self._lost += 1 + repeats

    def moved_away(self, directory: str) -> None:
        """A directory was renamed or replaced: what was noted beneath it is gone from there."""
        prefix = directory.rstrip("/") + "/"
        with self._lock:
            self._drain_locked()
            for path, (existed, _) in list(self._paths.items()):
                if path.startswith(prefix):
                    self._paths[path] = (existed, False)

    @property
    def lost(self) -> int:
        """Changes to paths not recorded, past the limit."""
        with self._lock:
            self._drain_locked()
            return self._lost

    @property
    def truncated(self) -> bool:
        return self.lost > 0

    def _snapshot(self) -> tuple[list[tuple[str, tuple[bool, bool]]], int]:
        with self._lock:
            self._drain_locked()
            return list(self._paths.items()), self._lost

    def changes(self) -> list[Change]:
        """Sorted by path, as ``docker diff``; the parent of a path added or removed is
        shown changed (its entries changed), unless it was itself added or is "/"."""
        return self._changes_of(self._snapshot()[0])

    @staticmethod
    def _changes_of(items: list[tuple[str, tuple[bool, bool]]]) -> list[Change]:
        kinds: dict[str, str] = {}
        for path, (existed, exists) in items:
            if existed or exists:
                kinds[path] = "C" if existed and exists else "A" if exists else "D"
        for path, kind in list(kinds.items()):
            if kind == "C":
                continue
            up = posixpath.dirname(path)
            while up != "/" and up not in kinds:
                kinds[up] = "C"
                up = posixpath.dirname(up)
        return [Change(kinds[p], p) for p in sorted(kinds)]

    def document(self, budget: int | None = None) -> dict[str, Any]:
        """As ``hvfs diff --json`` prints it; with ``budget``, only the first changes whose
        paths fit in that many bytes, the rest counted in ``omitted`` (a control message
        has a bounded size)."""
        items, lost = self._snapshot()  # the changes and the count lost, of one moment
        changes = self._changes_of(items)
        shown = changes
        if budget is not None:
            for n, change in enumerate(changes):
                budget -= len(change.path) + 32  # its JSON around it
                if budget < 0:
                    shown = changes[:n]
                    break
        return {
            "changes": [{"kind": c.kind, "path": c.path} for c in shown],
            "omitted": len(changes) - len(shown),
            "truncated": lost > 0,
            "lost": lost,
        }


def render(document: dict[str, Any]) -> str:
    """docker diff's format: one ``K PATH`` line per change, sorted; then what is missing."""
    lines = [f"{c['kind']} {c['path']}" for c in document.get("changes", [])]
    if document.get("omitted"):
        lines.append(f"({document['omitted']} more changes: see hvfs diff or hvfs export)")
    if document.get("truncated"):
        lines.append(f"(truncated: {document.get('lost', 0)} more changes were not recorded, past {LIMIT} paths)")
    return "".join(line + "\n" for line in lines)


def write(changes: ChangeSet, fd: int, *, as_json: bool) -> None:
    """The whole change set to ``fd`` (the client's stdout or stderr), as text or JSON, each
    line whole beside what the client prints there meanwhile (hvfs._sys.lines); a path's
    bytes as its name has them."""
    document = changes.document()
    text = json.dumps(document, indent=2) + "\n" if as_json else render(document)
    write_lines(fd, os.fsencode(text))


# -- what the dispatch calls (Manager.handle_request) ------------------------------------


@dataclass(frozen=True, slots=True)
class Pending:
    """What a mutation's targets were before the handler acted: (path, existed, is_dir).
    ``served``: an open's target is the very file its answer holds, whatever its path."""

    targets: tuple[tuple[str, bool, bool], ...]
    served: bool = False


def record(changes: ChangeSet, request: api.Request, names: list[Name], response: api.Response) -> None:
    """Note what a served mutation changed, from the targets its handler noted: ``noted``
    then ``after``, with the usual case, an open that found or made the file its answer
    holds, by its known name (``Name.served``), noted at once: the same entry, without the
    ``Pending`` in between (a tenth of the dispatch's own time per served open)."""
    if not names:
        return
    first, head = names[0], names[0].head
    if first.served and head and head[0] == "/" and type(response) is api.Fd and type(request) is api.Open:
        changes.note(head, first.existed, True)  # a served Name's head is its whole path (trail.served)
        return
    pending = noted(request, names)
    if pending is not None:
        after(changes, pending, request, response)


def noted(request: api.Request, names: list[Name]) -> Pending | None:
    """The targets the handler noted as it resolved them (``hvfs.manager.trail``): what
    ``before`` finds by resolving them again, which only a replayed request still needs."""
    if not names:
        return None
    first = names[0]
    if isinstance(request, api.Open):
        if first.served:
            return Pending(((first.path or "", first.existed, False),), served=True)
        return Pending(((first.path, True, False) if first.path is not None else ("", False, False),))
    if first.path is None:
        return None
    return Pending(tuple((n.path, n.existed, n.is_dir) if n.path is not None else ("", False, False) for n in names))


def _vm_path(directory: int, last: str) -> str:
    # Safe because: the fd is one the manager resolved in the VM's writable view, a
    # detached tree whose paths read as the VM's own; the VM's memory is not read again.
    head = os.readlink(proc_path(directory))
    return posixpath.join(head, last.rstrip("/")) if last else head


def _named(root: int, path: api.VmPath) -> tuple[str, bool, bool] | None:
    """The resolved VM path of ``path``'s last component, whether it exists, and whether it is a directory."""
    with parent(root, path) as (directory, last):
        where = _vm_path(directory, last)
        if not where.startswith("/"):
            return None
        try:
            st = os.stat(last.rstrip("/") or ".", dir_fd=directory, follow_symlinks=False)
        except OSError:
            return where, False, False
    return where, True, (st.st_mode & 0o170000) == 0o040000


def _object(root: int, target: api.Target, follow: bool) -> tuple[str, bool, bool] | None:
    if isinstance(target, api.OpenFile):
        return (target.path, True, False) if target.path.startswith("/") else None
    try:
        with fd_closing(open_object(root, target, follow=follow)) as fd:
            where = os.readlink(proc_path(fd))
    except OSError:
        return None
    return (where, True, False) if where.startswith("/") else None


def before(root: int, request: api.Request) -> Pending | None:
    """The targets of a mutation, resolved again; None if the request changes nothing or
    cannot be resolved. For a request a dead manager may have served already (no handler
    runs, so nothing is noted). Never raises: it must not change the answer."""
    try:
        found: list[tuple[str, bool, bool] | None]
        match request:
            case api.Open(flags=flags) if flags & WRITE_FLAGS and not flags & TMPFILE_BIT:
                via = request.via
                found = [
                    _object(root, request.path, not flags & os.O_NOFOLLOW) if via is None else _object(root, via, True)
                ]
            case api.Rename():
                found = [_named(root, request.old), _named(root, request.new)]
            case api.Link() | api.Mkdir() | api.Mknod() | api.Unlink() | api.Rmdir() | api.Symlink():
                found = [_named(root, request.new if isinstance(request, api.Link) else request.path)]
            case api.Truncate():
                found = [_object(root, request.path, True)]
            case api.Chmod() | api.Chown() | api.Utimens() | api.SetXattr() | api.RemoveXattr():
                found = [_object(root, request.target, request.follow)]
            case _:
                return None
    except OSError:
        return None
    if found[0] is None and not isinstance(request, api.Open):
        return None
    return Pending(tuple(t if t is not None else ("", False, False) for t in found))


def after(changes: ChangeSet, pending: Pending, request: api.Request, response: api.Response) -> None:
    """Note what a mutation the handler served (a Value or an Fd) changed."""
    if not isinstance(response, api.Value | api.Fd):
        return
    first = pending.targets[0]
    match request:
        case api.Open():
            if not isinstance(response, api.Fd):
                return
            where = first[0] if pending.served else ""  # the served file's name, when the handler knew it
            if not where:
                try:
                    where = os.readlink(proc_path(response.fd))  # the file the VM got, wherever its path led
                except OSError:
                    return
            if where.startswith("/"):
                changes.note(where, first[1] and (pending.served or first[0] == where), True)
        case api.Unlink() | api.Rmdir():
            changes.note(first[0], first[1], False)
        case api.Rename():
            new = pending.targets[1]
            if isinstance(request, api.Rename) and request.flags & RENAME_EXCHANGE:
                changes.note(first[0], first[1], True)
            else:
                if first[2]:
                    changes.moved_away(first[0])
                if new[2]:
                    changes.moved_away(new[0])
                changes.note(first[0], first[1], False)
            changes.note(new[0], new[1], True)
        case _:
            changes.note(first[0], first[1], True)
