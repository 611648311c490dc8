"""Events: what a VM asked and what it got, as the manager publishes it after the answer.

One event per request the manager is asked about, made from the request and its response
(``event_for``) and handed to the subscribers of the VM's bus (hvfs.api.hooks). The
dispatching thread only records what the event needs (hvfs.api.ring), including what is
true only then (the paths as served, the command name, ``comm_of``); the event is made
later, on the ring's thread (``event_from_record``). The paths and flags of a request are
read here, once, so that an audit line, a fault rule's path glob and a backup's
bookkeeping all see the same ones.
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import errno
import json
import json.encoder
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic, monotonic_ns
from time import time as unix_time
from typing import Any

from hvfs import _native, api
from hvfs.api.messages import operation

# What hvfs.api.ring records of a request, for its event: a compact record (bytes, made
# by hvfs/_native/record.c, read by hvfs.api.compact), or in Python (HVFS_NATIVE=0, and
# what the compact form cannot hold) the tuple
# (vm, request, response, time, duration_us, comm, answered_by, paths); see Event.
Recorded = tuple[str, api.Request, api.Response, float, int, str, str | None, tuple[str, ...]]
Record = Recorded | bytes


@dataclass(frozen=True, slots=True)
class Event:
    """One request a VM made, and what it got. ``result`` is "ok", "continued" (the kernel
    ran the call), "waiting" (a socket call that would block; the same request comes
    again when it may go on) or an errno name; ``value`` the returned number when there is
    one; ``answered_by`` the hook that answered instead of the handler (an injected fault,
    a scanner's denial), None when the handler did."""

    time: float  # unix time when the request arrived
    vm: str
    pid: int
    comm: str
    operation: str
    paths: tuple[str, ...]
    flags: int
    result: str
    value: int | None
    duration_us: int
    answered_by: str | None = None

    def to_json(self) -> str:
        """One line of JSON, without a newline: what ``json.dumps`` of the fields makes,
        compact and not ASCII-escaped, in this order. Formatted by hand, string by string
        with json's own C escaping: a dict and the general encoder (let alone
        ``dataclasses.asdict``) cost three to ten times as much, on every audited request."""
        value = "null" if self.value is None else f"{self.value:d}"
        answered_by = "null" if self.answered_by is None else json_string(self.answered_by)
        return json_text(
            LINE_FORMAT
            % (
                repr(self.time),
                json_string(self.vm),
                self.pid,
                json_string(self.comm),
                json_string(self.operation),
                ",".join([json_string(path) for path in self.paths]),
                self.flags,
                json_string(self.result),
                value,
                self.duration_us,
                answered_by,
            )
        )

    @classmethod
    def from_json(cls, line: str | bytes) -> Event:
        """The event that to_json wrote. Raises ValueError for anything else. Keys it does
        not know are ignored: a later hvfs may add some, and this reader must still read it."""
        try:
            fields: dict[str, Any] = json.loads(line)
            known = {key: value for key, value in fields.items() if key in _FIELDS}
            event = cls(**{**known, "paths": tuple(fields["paths"])})
        except (TypeError, KeyError, AttributeError, json.JSONDecodeError) as e:
            raise ValueError(f"not an hvfs event: {e}") from None
        if not all(isinstance(p, str) for p in event.paths) or not isinstance(event.operation, str):
            raise ValueError("not an hvfs event: bad field types")
        return event


_FIELDS = frozenset(Event.__dataclass_fields__)
json_string: Callable[[str], str] = json.encoder.encode_basestring  # the C one
LINE_FORMAT = (  # an audit line, as Event.to_json, record_line and compact.compact_line write it
    '{"time":%s,"vm":%s,"pid":%d,"comm":%s,"operation":%s,"paths":[%s],"flags":%d,"result":%s,'
    '"value":%s,"duration_us":%d,"answered_by":%s}'
)
LOST = "lost"  # an event of the bus itself: events of this VM that were dropped, ``value`` of them


def errno_name(code: int) -> str:
    """``EIO`` for 5; ``E1234`` for a number Python does not name."""
    return errno.errorcode.get(code, f"E{code}")


def target_path(target: api.Target) -> str:
    """The VM path of a path or of an open file (as the VM named it when it opened it)."""
    return target.path if isinstance(target, api.OpenFile) else str(target)


def request_paths(request: api.Request) -> tuple[str, ...]:
    """The absolute VM paths a request names, the one it acts on first: (old, new) for
    rename and link, (link, target as stored) for symlink, the unix-socket path a bind,
    connect or send names (none for other addresses), one path for the others."""
    match request:
        case api.Rename():
            return (str(request.old), str(request.new))
        case api.Link():
            return (target_path(request.old), str(request.new))
        case api.Symlink():
            return (str(request.path), request.target)
        case api.Access() | api.Readlink() | api.Statfs() | api.Exec():
            return (target_path(request.path),)
        case api.Executed():
            return (request.file.path,)
        case api.Chmod() | api.Chown() | api.Utimens() | api.SetXattr() | api.RemoveXattr():
            return (target_path(request.target),)
        case api.Bind() | api.Connect() | api.Send():
            address = request.address
            return (str(address.path),) if address is not None and address.path is not None else ()
        case _:
            return (str(request.path),)


def request_flags(request: api.Request) -> int:
    """The request's flags argument: open's O_* flags, statx's and access's AT_* flags,
    rename's RENAME_* flags, setxattr's XATTR_* flags, a send's MSG_* flags; 0 for
    requests without one."""
    if isinstance(request, api.Open | api.Statx | api.Access | api.Rename | api.SetXattr | api.Send):
        return request.flags
    return 0


def _result(response: api.Response) -> tuple[str, int | None]:
    if isinstance(response, api.Errno):
        return errno_name(response.errno), None
    if isinstance(response, api.Continue):
        return "continued", None
    if isinstance(response, api.Value):
        return "ok", response.value
    if isinstance(response, api.Data):
        return "ok", len(response.data)
    if isinstance(response, api.WouldBlock):
        return "waiting", None  # the driver asks again when the socket is ready
    return "ok", None  # an fd (its number in the caller is not known yet) or a stat


def event_for(
    vm: str,
    request: api.Request,
    response: api.Response,
    *,
    time: float,
    duration_us: int,
    comm: str = "",
    answered_by: str | None = None,
    paths: tuple[str, ...] | None = None,
) -> Event:
    """The event of ``request`` from ``vm`` answered with ``response``; ``paths``, when
    given, are its paths as they were served (default: as the request names them)."""
    result, value = _result(response)
    return Event(
        time=time,
        vm=vm,
        pid=request.caller.pid,
        comm=comm,
        operation=operation(request),
        paths=request_paths(request) if paths is None else paths,
        flags=request_flags(request),
        result=result,
        value=value,
        duration_us=duration_us,
        answered_by=answered_by,
    )


def event_from_record(
    vm: str,
    request: api.Request,
    response: api.Response,
    time: float,
    duration_us: int,
    comm: str,
    answered_by: str | None,
    paths: tuple[str, ...],
) -> Event:
    """``event_for`` of what hvfs.api.ring records (its ``Record``, in that order)."""
    result, value = _result(response)
    return Event(
        time,
        vm,
        request.caller.pid,
        comm,
        operation(request),
        paths,
        request_flags(request),
        result,
        value,
        duration_us,
        answered_by,
    )


def record_line(record: Recorded) -> str:
    """``event_from_record(*record).to_json()``, the same characters, without the Event: an
    audit needs only the line, and a frozen dataclass of eleven fields costs more to make
    than its line (measured: 3.0 µs against 1.2 µs per event, on the audit's thread, under
    the GIL the requests need). The parts that depend only on the request's or the
    response's type are looked up by type. The C writer (hvfs/_native/audit.c) makes the
    same characters from the same lookups (``request_kind``, ``FIXED_RESULTS``, ``result_text``)."""
    vm, request, response, time, duration_us, comm, answered_by, paths = record
    known = _by_request.get(type(request))
    quoted, flagged = known if known is not None else request_kind(request)
    answer = type(response)
    fixed = FIXED_RESULTS.get(answer)
    if fixed is not None:
        result, value = fixed
    elif answer is api.Value:
        result, value = '"ok"', f"{response.value:d}"  # type: ignore[union-attr]
    else:
        result, value = result_text(response)
    return LINE_FORMAT % (
        repr(time),
        json_string(vm),
        request.caller.pid,
        json_string(comm),
        quoted,
        ",".join([json_string(path) for path in paths]),
        request.flags if flagged else 0,  # type: ignore[union-attr]
        result,
        value,
        duration_us,
        "null" if answered_by is None else json_string(answered_by),
    )


_FLAGGED = frozenset({api.Open, api.Statx, api.Access, api.Rename, api.SetXattr, api.Send})  # as request_flags
_by_request: dict[type, tuple[str, bool]] = {}  # a request type's operation as a JSON string, and if it has flags
_OK = ('"ok"', "null")
# Answers whose result and value are the same whatever they hold, as JSON text (see _result).
FIXED_RESULTS: dict[type, tuple[str, str]] = {
    api.Fd: _OK,
    api.StatResult: _OK,
    api.StatxResult: _OK,
    api.Continue: ('"continued"', "null"),
}


def request_kind(request: api.Request) -> tuple[str, bool]:
    """The operation of ``request``'s type as a JSON string, and whether it has flags."""
    kind = type(request)
    known = _by_request[kind] = (json_string(operation(request)), kind in _FLAGGED)
    return known


def result_text(response: api.Response) -> tuple[str, str]:
    """``_result(response)`` as the JSON text of the line's result and value."""
    text, number = _result(response)
    return json_string(text), "null" if number is None else f"{number:d}"


def _escape_surrogates(error: UnicodeError) -> tuple[str, int]:
    """An encode error handler: a lone surrogate as its JSON escape. In a line of JSON a str
    UTF-8 cannot encode is a name of the VM's that is not UTF-8 (decoded with
    surrogateescape: the byte 0xff is U+DCFF), always inside a JSON string, where the
    escape is valid: json.loads gives back the same str, os.fsencode the VM's bytes. A VM
    must not keep its calls out of the audit by naming a file so."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    return "".join(f"\\u{ord(c):04x}" for c in error.object[error.start : error.end]), error.end


JSON_SURROGATES = "hvfs.json-surrogates"
codecs.register_error(JSON_SURROGATES, _escape_surrogates)


def json_text(line: str) -> str:
    """``line`` (JSON) with any lone surrogate escaped (``_escape_surrogates``): a str that
    UTF-8, and so a file, a socket or Redis, takes."""
    if line.isascii():
        return line
    try:
        line.encode()
    except UnicodeEncodeError:
        return line.encode("utf-8", JSON_SURROGATES).decode()
    return line


def lost_event(vm: str, count: int) -> Event:
    """The event that stands for ``count`` events of ``vm`` that were dropped here."""
    return Event(unix_time(), vm, 0, "", LOST, (), 0, f"{count} events lost", count, 0, "events")


_COMM_KEPT = 8  # threads per serving thread: requests come in runs from a few threads
COMM_FRESH = 0.02  # seconds a name read is used again for the same thread (see comm_of)


class _CommFiles(threading.local):
    """``/proc/TID/comm`` of the threads this serving thread saw lately, kept open, and the
    name last read with when: an open of /proc costs three times a pread, and a pread
    still costs more than the rest of an event's recording. A kept fd names the thread,
    not its number: once the thread is gone pread fails (ESRCH) and the number is opened
    again (see hvfs.intercept.kept). One per thread, so that no thread closes an fd
    another reads."""

    def __init__(self) -> None:
        self.fds: dict[int, int] = _Fds()
        self.names: dict[int, tuple[float, str]] = {}


class _Fds(dict[int, int]):
    """A thread's kept fds, closed when the thread ends: its local's dict is dropped then,
    and this with it (a ``__del__`` of the local itself runs only when the local goes)."""

    def __del__(self) -> None:
        for fd in self.values():
            with contextlib.suppress(OSError):
                os.close(fd)


_comm_files = _CommFiles()


def comm_of(pid: int, *, again: bool = False) -> str:
    """The command name of ``pid`` (in the manager's pid namespace), "" if it is gone.
    Taken when the request is served: the thread may be gone by the time its event is
    written, or have exec'd. A name read less than COMM_FRESH ago for this thread is used
    again (a burst of requests reads it once): exec, which changes it, is a request, and
    its caller passes ``again``, which reads it and forgets it, so the new program's first
    request reads its own; a thread that renames itself (prctl) may be shown by its old
    name for COMM_FRESH. (The name is the program's own say, never evidence: any program
    can set it.) A number reused within COMM_FRESH would need pid_max pids in between."""
    files = _comm_files
    now = monotonic()
    if not again:
        known = files.names.get(pid)
        if known is not None and now - known[0] < COMM_FRESH:
            return known[1]
    name = _read_comm(files.fds, pid)
    if again or not name:
        files.names.pop(pid, None)
    else:
        if len(files.names) >= _COMM_KEPT and pid not in files.names:
            files.names.pop(next(iter(files.names)))
        files.names[pid] = (now, name)
    return name


def _read_comm(fds: dict[int, int], pid: int) -> str:
    fd = fds.get(pid)
    try:
        if fd is not None:
            try:
                return _comm(os.pread(fd, 64, 0))
            except OSError:  # that thread is gone; the number may be another's now
                del fds[pid]
                os.close(fd)
        fd = os.open(f"/proc/{pid}/comm", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        name = _comm(os.pread(fd, 64, 0))
    except OSError:
        os.close(fd)
        return ""
    if len(fds) >= _COMM_KEPT:
        os.close(fds.pop(next(iter(fds))))
    fds[pid] = fd
    return name


def _comm(text: bytes) -> str:
    return text.rstrip(b"\n").decode(errors="replace")


_AGAIN = frozenset({api.Exec, api.Executed})  # requests whose caller's name is read again (comm_of)


def python_record(
    ring: collections.deque[Any],
    capacity: int,
    vm: str,
    request: api.Request,
    response: api.Response,
    began: int,
    answered_by: str | None,
    paths: tuple[str, ...],
) -> int:
    """Append the Record of a served request (``began``: time.monotonic_ns() when it
    arrived) to ``ring``; the ring's length before, or -1 when it holds ``capacity`` (then
    nothing is appended). What hvfs/_native/record.c does in one C call (``record_request``):
    the same clocks, comm_of's rules, the same line and Event (its record is compact)."""
    size = len(ring)
    if size >= capacity:
        return -1
    duration = (monotonic_ns() - began) // 1000
    comm = comm_of(request.caller.pid, again=type(request) in _AGAIN)
    ring.append((vm, request, response, unix_time(), max(duration, 0), comm, answered_by, paths))
    return size


RecordRequest = Callable[
    [collections.deque[Any], int, str, api.Request, api.Response, int, str | None, tuple[str, ...]], int
]
record_request: RecordRequest = python_record
if _native.recorder is not None:
    _native.recorder.configure(_AGAIN, request_kind, result_text, FIXED_RESULTS, api.Value, api.Errno, api.Data)
    record_request = _native.recorder.record
