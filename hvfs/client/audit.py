"""A VM's audit as Python objects: the events the audit service wrote (hvfs.services.audit,
``hvfs events``), with what tests ask of them: which files were written, read, removed,
and the requests by operation.

The audit service writes after the answers, from a queue of its own: an event of a
command that has just exited may not be in the file yet. ``sync`` makes it so: it has
the VM make one request the manager always sees (an open with O_CREAT in a directory
that does not exist: it fails, and changes nothing) and waits for its event; events of
one group are written in order, so every request before it is in the file then. Those
sentinel events (and every other of the process that makes them) are left out of
everything here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from hvfs.api.events import Event
from hvfs.errors import HvfsError
from hvfs.services.audit import format_event, read_events

SENTINEL = "/.hvfs-audit-sync-"
SYNC_TIMEOUT = 10.0
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC
_DONE = ("ok", "continued")  # the manager served it, or let the kernel run it
# Devices, not files: a ``> /dev/null`` is no file written.
DEVICES = frozenset(
    f"/dev/{name}" for name in ("null", "zero", "full", "random", "urandom", "tty", "stdin", "stdout", "stderr", "ptmx")
)


class AuditError(HvfsError):
    """The audit cannot be read, or was not asked for."""


def _writes(event: Event) -> bool:
    return event.operation == "open" and bool(event.flags & _WRITE_FLAGS) and not event.flags & os.O_PATH


@dataclass(frozen=True)
class _Source:
    path: str
    vm: str | None  # the VM whose events these are; None: every VM of the file


class Audit:
    """The audit of one VM (or of every VM of a project): ``events()`` and helpers. Every
    helper reads the file again (after a ``sync`` while the VM runs), so it sees what
    happened up to the moment it is called; ``mark()`` makes them look only after now.

    Only requests the manager is asked about are here: writes always; reads (opens for
    reading, stats) only when the VM was started with ``audit_reads`` (or strict)."""

    def __init__(self, path: str, *, vm: str | None = None, sync: Callable[[str], None] | None = None) -> None:
        self._source = _Source(path, vm)
        self._sync = sync  # makes the VM request SENTINEL+nonce; None once it has stopped
        self._kept: list[Event] | None = None  # once the file is gone with its VM
        self._skip = 0  # events before the last mark()

    @property
    def path(self) -> str:
        return self._source.path

    def sync(self) -> None:
        """Wait until the events of every request the VM made so far are in the file."""
        if self._sync is None:
            return
        nonce = os.urandom(6).hex()
        self._sync(nonce)
        deadline = time.monotonic() + SYNC_TIMEOUT
        while not any(SENTINEL + nonce in p for e in self._read() for p in e.paths):
            if time.monotonic() > deadline:
                raise AuditError(f"the audit {self.path} did not show a request of {SYNC_TIMEOUT:g}s ago")
            time.sleep(0.01)

    def _read(self) -> list[Event]:
        if self._kept is not None:
            return self._kept
        try:
            return list(read_events(self.path))
        except FileNotFoundError:
            return []
        except OSError as e:
            raise AuditError(f"the audit {self.path} cannot be read: {e.strerror}") from None

    def keep(self) -> None:
        """Read the file one last time and hold its events (the VM has stopped, and its
        file is about to go)."""
        self._kept = self._read()
        self._sync = None

    def events(self) -> list[Event]:
        """Every event of the VM since the last ``mark()``, in order."""
        self.sync()
        found = [e for e in self._read() if self._source.vm is None or e.vm == self._source.vm]
        syncing = {(e.vm, e.pid) for e in found if _internal(e)}  # the process that made a sentinel
        return [e for e in found[self._skip :] if not _internal(e) and not _made_by(e, syncing)]

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events())

    def __len__(self) -> int:
        return len(self.events())

    def mark(self) -> None:
        """Forget what happened so far: the helpers see only later events."""
        self.sync()
        self._skip = len([e for e in self._read() if self._source.vm is None or e.vm == self._source.vm])

    def by_operation(self) -> dict[str, list[Event]]:
        """The events by operation ("open", "unlink", "rename", "mkdir", "exec", …)."""
        grouped: dict[str, list[Event]] = {}
        for event in self.events():
            grouped.setdefault(event.operation, []).append(event)
        return grouped

    def written(self) -> set[str]:
        """The paths the VM wrote: opened for writing, creating or truncating, truncated, or
        renamed into, successfully. A file made by writing a temporary one and renaming
        it is here with both names. Devices (/dev/null, a terminal…) are not files."""
        found: set[str] = set()
        for event in self.events():
            if event.result not in _DONE:
                continue
            if _writes(event) or event.operation == "truncate":
                found.add(event.paths[0])
            elif event.operation == "rename" and len(event.paths) > 1:
                found.add(event.paths[1])
        return {path for path in found if path not in DEVICES and not path.startswith(("/dev/fd/", "/dev/pts/"))}

    def read(self) -> set[str]:
        """The paths the VM opened for reading only (needs ``audit_reads``)."""
        return {e.paths[0] for e in self.events() if e.operation == "open" and e.result in _DONE and not _writes(e)}

    def removed(self) -> set[str]:
        """The paths the VM unlinked or removed (rmdir), or renamed away, successfully."""
        found: set[str] = set()
        for event in self.events():
            if event.result in _DONE and event.operation in ("unlink", "rmdir", "rename"):
                found.add(event.paths[0])
        return found

    def failed(self) -> list[Event]:
        """The requests that got an errno (an injected fault among them)."""
        return [e for e in self.events() if e.result not in (*_DONE, "waiting")]

    def faulted(self) -> list[Event]:
        """The requests a fault rule answered (``hvfs_fault``, ``faults=``)."""
        return [e for e in self.events() if e.answered_by == "faults"]

    def tail(self, count: int = 20) -> list[str]:
        """The last ``count`` events, one line each, as ``hvfs events`` shows them."""
        return [format_event(e) for e in self.events()[-count:]]


def _made_by(event: Event, syncing: set[tuple[str, int]]) -> bool:
    return (event.vm, event.pid) in syncing


def _internal(event: Event) -> bool:
    return any(SENTINEL in p for p in event.paths)


def paths_of(events: Iterable[Event]) -> set[str]:
    """The first path of each event."""
    return {e.paths[0] for e in events if e.paths}
