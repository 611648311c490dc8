"""The audit log: every event as one JSON line in a file, and ``hvfs events`` to read it.

Integration: for ``hvfs run --audit FILE``, the service (``Audit``) does, once::

    audit = AuditLog(FILE)       # when it is attached: a VM that never starts leaves no file
    audit.attach(bus)            # a subscriber whose thread is the file's one writer
    ...
    bus.close(); audit.close()   # at exit: drain the queue, then close the file

and hvfs/cli.py registers the reader with ``add_events_command(subparsers)``.

The events come in batches (hvfs.api.ring: a request only records what its event needs;
the event and its line are made later, off the request path), every ``INTERVAL`` or
sooner, and by the VM's exit (``EventBus.flush``). Lines are written whole, a few dozen
per write(2) on an O_APPEND descriptor, so a reader following the file never sees half a
line except at the very end, which it waits to complete. An event that could not be
recorded in time (the disk slower than the VMs' requests for long) is dropped, counted
(``statistics().dropped``, ``--stats``), and said in the file by a "lost" event, which
``hvfs events`` points out.

The format stays JSON lines (``Event.to_json``; a request's line is made straight from the
bus's record by ``record_line``, the same characters, without the Event, or in C by
hvfs/_native/audit.c where it is built, the same bytes): what costs is
not the format but work on the serving thread, and JSON is what jq, a log shipper and
every earlier hvfs read.
"""

from __future__ import annotations

import argparse
import fnmatch
import io
import os
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from hvfs import deferred
from hvfs.api.compact import write_lines
from hvfs.api.events import LOST, Event, Record
from hvfs.api.flagnames import flag_names
from hvfs.api.hooks import EventBus, Files, Subscription
from hvfs.api.ring import RECORDS_CHUNK
from hvfs.services.audit_summary import summarize, write_summary
from hvfs.services.commands import ServiceError, Subparsers, guarded
from hvfs.services.describe import OPERATIONS, READ, SERVICE_EVENTS
from hvfs.services.units import format_time

log = deferred.logger("hvfs.services")

EVENT_OPERATIONS = (OPERATIONS - {READ}) | SERVICE_EVENTS  # "read" names opens in fault rules; events say "open"
LINES_PER_WRITE = RECORDS_CHUNK  # a batch the bus hands over, in one write


class AuditLog:
    """Implements an event subscriber that appends each event to ``path`` as a JSON line.

    The file is created with mode 0600 (it names every path the VMs touch) or appended
    to; or, ``given``, it is that fd (a copy of it: the caller keeps its own), which
    the user's front opened so (hvfs.hypervisor.frontrun). Raises OSError when it
    cannot be opened; write() raises OSError too, which the bus logs and counts as a
    failed delivery.
    """

    def __init__(self, path: str, given: int | None = None) -> None:
        self.path = path
        if given is not None:
            self._fd = os.dup(given)  # close-on-exec, as os.dup makes it
        else:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def write(self, event: Event) -> None:
        self.write_batch([event])

    def write_batch(self, events: Sequence[Record | Event]) -> None:
        """Append ``events`` (Events, or the bus's Records of them: their lines are the
        same), a few dozen lines per write (hvfs.api.compact.write_lines: in C where it is
        built): each write lets the GIL go, so that a request never waits behind a long batch."""
        write_lines(self._fd, events, LINES_PER_WRITE)

    def attach(self, bus: EventBus, *, queue_size: int = 1 << 16) -> Subscription:
        return bus.subscribe(self.write_batch, name="audit", queue_size=queue_size, records=True)

    def close(self) -> None:
        os.close(self._fd)


@dataclass(frozen=True, slots=True)
class AuditStatistics:
    written: int  # events in the file ("lost" events included)
    dropped: int  # lost: the ring or the queue was full (a disk slower than the VMs' requests)
    failed: int  # not written: the write failed (logged)


class Audit:
    """Implements hvfs.services.base.Service: an AuditLog subscribed to the bus of its VMs."""

    name = "audit"

    def __init__(self, path: str, given: int | None = None, *, opens: bool = True) -> None:
        """``opens``: without ``given``, open ``path`` (False: a client was to open it as
        the user, and did not, or a manager took the group back without its fd: nothing
        is recorded, as the manager may not open it with its own rights)."""
        self.path = path
        self.given = given  # the fd the user's front opened at path (the caller's, copied at attach)
        self.opens = opens
        self.log: AuditLog | None = None
        self._subscription: Subscription | None = None

    def attach(self, bus: EventBus, files: Files) -> None:
        if self.given is None and not self.opens:
            log.warning("audit: %s was not opened by the user for these VMs; their events are not recorded", self.path)
            return
        self.log = AuditLog(self.path, self.given)
        self._subscription = self.log.attach(bus)

    def statistics(self) -> AuditStatistics:
        if self._subscription is None:
            return AuditStatistics(0, 0, 0)
        stats = self._subscription.statistics()
        return AuditStatistics(stats.delivered, stats.dropped, stats.failed)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events to show: all of the given conditions hold (an empty one holds always)."""

    vms: frozenset[str] = frozenset()
    operations: frozenset[str] = frozenset()
    path: str | None = None  # an fnmatch glob that one of the event's paths must match

    def matches(self, event: Event) -> bool:
        if self.vms and event.vm not in self.vms:
            return False
        if self.operations and event.operation not in self.operations:
            return False
        return self.path is None or any(fnmatch.fnmatchcase(p, self.path) for p in event.paths)


def read_events(
    path: str, *, follow: bool = False, poll: float = 0.1, stop: threading.Event | None = None
) -> Iterator[Event]:
    """The events in the audit file ``path``, in order. With ``follow``, wait for the file
    to appear and then for new lines, until ``stop`` is set (or forever). Lines that are
    not events (a crash's torn last line, another program's output) are skipped with a
    warning naming the line. Raises OSError when the file cannot be read (without
    ``follow``, when it does not exist)."""
    stop = stop or threading.Event()
    while follow and not os.path.exists(path):
        if stop.wait(poll):
            return
    with open(path, "rb", buffering=0) as f:
        pending = b""
        number = 0
        while True:
            chunk = f.read(1 << 16)
            if not chunk:
                if not follow or stop.wait(poll):
                    break
                continue
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                number += 1
                event = _parse(line, path, number)
                if event is not None:
                    yield event
        if pending and not follow:  # a last line without its newline, complete or not
            event = _parse(pending, path, number + 1)
            if event is not None:
                yield event


def _parse(line: bytes, path: str, number: int) -> Event | None:
    if not line.strip():
        return None
    try:
        return Event.from_json(line)
    except ValueError as e:
        log.warning("%s:%d: skipped: %s", path, number, e)
        return None


def format_event(event: Event) -> str:
    """One human-readable line: time, VM, pid and command, operation, paths, flags by name
    (none when there are none), result, µs."""
    outcome = event.result if event.value is None else f"{event.result}={event.value}"
    if event.answered_by:
        outcome += f" (by {event.answered_by})"
    paths = " -> ".join(event.paths)
    where = f"{event.pid}/{event.comm}" if event.comm else str(event.pid)
    names = flag_names(event.operation, event.flags)
    flags = f" flags={names}" if names else ""
    when = format_time(event.time)
    return f"{when} {event.vm} {where} {event.operation} {paths}{flags} {outcome} {event.duration_us}µs"


def show_events(events: Iterable[Event], selected: EventFilter, *, as_json: bool) -> int:
    """Print the selected events, one per line, flushed as they come; returns how many. A
    name that is not UTF-8 is printed as its bytes, as ls and find print it (JSON lines
    carry its escape instead: ``Event.to_json``)."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="surrogateescape")
    shown = 0
    for event in events:
        if selected.matches(event):
            sys.stdout.write((event.to_json() if as_json else format_event(event)) + "\n")
            sys.stdout.flush()
            shown += 1
    return shown


def _operation(text: str) -> str:
    if text not in EVENT_OPERATIONS:
        raise argparse.ArgumentTypeError(f"unknown operation {text!r}; one of: {', '.join(sorted(EVENT_OPERATIONS))}")
    return text


def add_events_command(subparsers: Subparsers) -> argparse.ArgumentParser:
    """Define ``hvfs events FILE [--follow] [--vm VM] [--op OP] [--path GLOB] [--summary]
    [--json]`` (``--audit FILE`` too, as ``hvfs run`` spells it); ``args.handler(args)``
    runs it."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "events",
        help="show the events of an audit log",
        description="Show the events that hvfs run --audit FILE recorded, optionally filtered; "
        "--follow shows new ones as a running manager writes them.",
    )
    parser.add_argument("file", metavar="FILE", nargs="?", help="the audit log (JSON lines)")
    parser.add_argument("--audit", metavar="FILE", help="the audit log, as hvfs run --audit names it (or FILE)")
    parser.add_argument("-f", "--follow", action="store_true", help="wait for new events (Ctrl-C to stop)")
    parser.add_argument("--vm", action="append", default=[], help="only this VM's events (repeatable)")
    parser.add_argument("--op", action="append", default=[], type=_operation, help="only this operation (repeatable)")
    parser.add_argument("--path", metavar="GLOB", help="only events with a path matching GLOB (fnmatch: * matches /)")
    parser.add_argument(
        "--summary",
        action="store_true",
        help="per VM: files written, read, removed, renamed; requests and errors by operation",
    )
    parser.add_argument("--json", action="store_true", help="print events as JSON lines (a summary as JSON)")
    parser.set_defaults(handler=guarded(_events))
    return parser


def _events(args: argparse.Namespace) -> int:
    if args.file and args.audit and args.file != args.audit:
        raise ServiceError(f"two audit logs given ({args.file} and --audit {args.audit}); give one")
    path = args.file or args.audit
    if not path:
        raise ServiceError("no audit log given; name the file hvfs run --audit wrote: hvfs events FILE")
    if args.summary and args.follow:
        raise ServiceError("--summary reads the log to its end; drop --follow")
    selected = EventFilter(frozenset(args.vm), frozenset(args.op), args.path)
    lost = LostCount()
    events = lost.counting(read_events(path, follow=args.follow))
    if args.summary:
        write_summary(summarize(e for e in events if selected.matches(e)), sys.stdout, as_json=args.json)
    else:
        show_events(events, selected, as_json=args.json)
    if lost.count:
        sys.stderr.write(
            f"hvfs events: {lost.count} events are missing from {path} (the audit could not keep up with the "
            f'requests; "lost" events say where): write the audit to a faster disk\n'
        )
    return 0


class LostCount:
    """How many events the log says it lost (its "lost" events), whatever is shown."""

    def __init__(self) -> None:
        self.count = 0

    def counting(self, events: Iterable[Event]) -> Iterator[Event]:
        for event in events:
            if event.operation == LOST:
                self.count += event.value or 0
            yield event
