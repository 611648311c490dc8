"""The bus's records read: a served request's compact record, what hvfs/_native/record.c
makes on the serving thread (the layout is hvfs/_native/compact.h's), made into the
audit's lines (``write_lines``: in C, hvfs/_native/audit.c, where it is built, else
``python_write``) and, for the subscribers that want Events, into Events lazily on their
own threads (``event_from_item``). A record made in Python is the Record tuple
(hvfs.api.events); both forms give the same line and the same Event.

The record holds plain numbers and bytes, nothing of the request's objects: kept until
the writer wrote it, a Record tuple kept the request and its answer alive, thousands of
them, and each request then paid for fresh memory (see compact.h).
"""

from __future__ import annotations

import functools
import json
import os
import struct
from collections.abc import Sequence

from hvfs import _native, api
from hvfs.api.events import (
    FIXED_RESULTS,
    JSON_SURROGATES,
    LINE_FORMAT,
    Event,
    Record,
    event_from_record,
    json_string,
    record_line,
    request_kind,
    result_text,
)

# CompactHead: time, pid, flags, duration_us, the number of fields, the magic.
HEAD = struct.Struct("=dqqqII")
MAGIC = 0x31465648
NONE = 0xFFFFFFFF  # the length of an absent answered_by
OPERATION, RESULT, VALUE, VM, COMM, BY, PATHS = range(7)

Compact = tuple[float, int, int, int, list[str | None]]  # time, pid, flags, duration_us, fields


def unpack(record: bytes) -> Compact:
    """The numbers and fields of a compact record: the operation, result and value as JSON
    text, then the VM, the command name, answered_by (None) and the paths as str (a lone
    surrogate as it was). Raises ValueError for bytes that are not one."""
    if len(record) < HEAD.size:
        raise ValueError("not a compact record")
    time, pid, flags, duration_us, count, magic = HEAD.unpack_from(record)
    if magic != MAGIC or count < PATHS or HEAD.size + 4 * count > len(record):
        raise ValueError("not a compact record")
    lengths = struct.unpack_from(f"={count}I", record, HEAD.size)
    at = HEAD.size + 4 * count
    fields: list[str | None] = []
    for i, length in enumerate(lengths):
        if i == BY and length == NONE:
            fields.append(None)
            continue
        if at + length > len(record):
            raise ValueError("not a compact record")
        fields.append(record[at : at + length].decode("utf-8", "surrogatepass"))
        at += length
    if at != len(record):
        raise ValueError("not a compact record")
    return time, pid, flags, duration_us, fields


def record_vm(item: Record | Event) -> str:
    """The VM of a recorded item (a record or an Event)."""
    if isinstance(item, Event):
        return item.vm
    if isinstance(item, bytes):
        return unpack(item)[4][VM] or ""
    return item[0]


def event_from_item(item: Record | Event) -> Event:
    """The Event of a record (either form), or the Event itself."""
    if isinstance(item, Event):
        return item
    if not isinstance(item, bytes):
        return event_from_record(*item)
    time, pid, flags, duration_us, fields = unpack(item)
    value = fields[VALUE]
    return Event(
        time,
        fields[VM] or "",
        pid,
        fields[COMM] or "",
        _json_string(fields[OPERATION]),
        tuple(path or "" for path in fields[PATHS:]),
        flags,
        _json_string(fields[RESULT]),
        None if value == "null" else int(value or 0),
        duration_us,
        fields[BY],
    )


@functools.lru_cache(maxsize=256)
def _json_string(text: str | None) -> str:
    """An operation's or a result's JSON text (a few kinds, each read once) as its str."""
    value = json.loads(text or '""')
    if not isinstance(value, str):
        raise ValueError(f"not an hvfs event: {text!r} is not a JSON string")
    return value


def compact_line(record: bytes) -> str:
    """The line of a compact record: what hvfs/_native/compact_line.h writes."""
    time, pid, flags, duration_us, fields = unpack(record)
    by = fields[BY]
    return LINE_FORMAT % (
        repr(time),
        json_string(fields[VM] or ""),
        pid,
        json_string(fields[COMM] or ""),
        fields[OPERATION],
        ",".join([json_string(path or "") for path in fields[PATHS:]]),
        flags,
        fields[RESULT],
        fields[VALUE],
        duration_us,
        "null" if by is None else json_string(by),
    )


def item_line(record: Record) -> str:
    """The line of a record of either form."""
    return compact_line(record) if isinstance(record, bytes) else record_line(record)


def python_lines(items: Sequence[Record | Event]) -> bytes:
    """The audit's lines of ``items`` (the bus's Records and Events), each with its newline."""
    lines = [
        item.to_json() if type(item) is Event else item_line(item)  # type: ignore[arg-type]
        for item in items
    ]
    lines.append("")
    return "\n".join(lines).encode("utf-8", JSON_SURROGATES)


def write_lines(fd: int, items: Sequence[Record | Event], per_write: int) -> None:
    """Append the lines of ``items`` to ``fd``, ``per_write`` lines per write(2), each
    write whole: in C (hvfs/_native/audit.c; the write without the GIL) where it is
    built, else in Python (``python_write``); the same bytes, a name that is not UTF-8
    escaped (``_escape_surrogates``). Raises OSError (the write), as both paths do."""
    if _native_audit is not None:
        _native_audit.write(fd, items, per_write)
    else:
        python_write(fd, items, per_write)


def python_write(fd: int, items: Sequence[Record | Event], per_write: int) -> None:
    """``write_lines`` in Python: the fallback (HVFS_NATIVE=0, or audit.c not built)."""
    for start in range(0, len(items), per_write):
        view = memoryview(python_lines(items[start : start + per_write]))
        while view:  # a short write happens only on a full disk or a signal
            view = view[os.write(fd, view) :]


_native_audit = _native.audit
if _native_audit is not None:
    _native_audit.configure(
        request_kind, result_text, FIXED_RESULTS, api.Value, api.Errno
    )  # an Errno's text: by its errno
