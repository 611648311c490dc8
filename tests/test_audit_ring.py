"""Events recorded on the serving thread, made and written in batches (hvfs.api.ring): in
order, in the file on flush, never blocking for long on a full ring, and a gap said."""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from hvfs import _native, api
from hvfs.api import compact as compact_module
from hvfs.api.compact import python_lines, python_write
from hvfs.api.events import (
    COMM_FRESH,
    LOST,
    Event,
    Record,
    comm_of,
    event_for,
    event_from_record,
    lost_event,
    record_line,
)
from hvfs.api.hooks import EventBus
from hvfs.api.ring import FULL_WAIT, EventRing, Flush, Item
from hvfs.services.audit import AuditLog, add_events_command, read_events
from tests.conftest import require


def an_open(n: int) -> tuple[api.Open, api.Response]:
    caller = api.Caller(vm="vm1", pid=1000 + n)
    request = api.Open(caller=caller, path=api.VmPath("/", f"/data/f{n}"), flags=os.O_WRONLY | os.O_CREAT, mode=0o644)
    response: api.Response = api.Errno(13) if n % 3 == 0 else api.Fd(50 + n, True)
    return request, response


def an_event(vm: str, n: int) -> Event:
    return Event(float(n), vm, n, "", "mkdir", (f"/d{n}",), 0, "ok", None, n)


def record_opens(bus: EventBus, count: int) -> list[Event]:
    """Record ``count`` requests on ``bus``; the events event_for makes of them."""
    expected = []
    for n in range(count):
        request, response = an_open(n)
        served = {"time": 100.0 + n, "duration_us": n, "comm": "tar", "answered_by": None, "paths": (f"/data/f{n}",)}
        bus.record("vm1", request, response, **served)  # type: ignore[arg-type]
        expected.append(event_for("vm1", request, response, **served))  # type: ignore[arg-type]
    return expected


def test_recorded_requests_are_in_the_file_on_flush_as_event_for_makes_them(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    audit = AuditLog(str(log))
    bus = EventBus()
    audit.attach(bus)
    expected = record_opens(bus, 1000)
    bus.publish(lost_event("vm1", 0))  # a published event keeps its place after the recorded ones
    assert bus.flush(timeout=10)
    got = list(read_events(str(log)))  # without closing anything: flush is enough
    assert got[:-1] == expected
    assert got[-1].operation == LOST
    lines = log.read_bytes().splitlines()
    assert lines[0].decode() == expected[0].to_json()  # the format is the JSON line it was
    assert bus.close(timeout=10)
    audit.close()
    assert bus.statistics().dropped == 0


def test_a_full_ring_waits_a_little_then_drops_counts_and_says_so() -> None:
    gate = threading.Event()
    handed: list[tuple[list[Item], int]] = []

    def hand_out(items: list[Item], lost: int, marks: tuple[Flush, ...]) -> None:
        gate.wait(10)  # a writer stuck on a slow disk
        handed.append((items, lost))

    ring = EventRing(hand_out, capacity=8)
    first = an_event("vm0", 99)
    ring.record(first)
    deadline = time.monotonic() + 5
    while len(ring) and time.monotonic() < deadline:  # the thread took it, and is stuck handing it out
        time.sleep(0.005)
    events = [an_event(f"vm{n % 2}", n) for n in range(20)]
    waited = []
    for event in events:
        began = time.monotonic()
        ring.record(event)
        waited.append(time.monotonic() - began)
    assert len(ring) == 8
    assert ring.lost == 12
    assert max(waited) < FULL_WAIT + 0.5  # a VM is never held long
    assert sum(w >= FULL_WAIT for w in waited) == 12  # each dropped one waited for room first
    gate.set()
    assert ring.stop(timeout=10)
    items = [item for batch, _ in handed for item in batch]
    kept = [item for item in items if isinstance(item, Event) and item.operation != LOST]
    said = {item.vm: item.value for item in items if isinstance(item, Event) and item.operation == LOST}
    assert kept == [first, *events[:8]]  # in order, the first ones
    assert said == {"vm0": 6, "vm1": 6}  # the gap, by VM
    assert sum(lost for _, lost in handed) == 12


def test_a_lost_gap_is_pointed_out_by_hvfs_events(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "audit.jsonl"
    audit = AuditLog(str(log))
    request, response = an_open(1)
    audit.write_batch([event_for("vm1", request, response, time=1.0, duration_us=3), lost_event("vm1", 7)])
    audit.close()
    parser = argparse.ArgumentParser(prog="hvfs")
    add_events_command(parser.add_subparsers())
    args = parser.parse_args(["events", str(log)])
    assert args.handler(args) == 0
    out, err = capsys.readouterr()
    assert " lost " in out.splitlines()[1]
    assert "7 events are missing from" in err
    args = parser.parse_args(["events", str(log), "--summary"])
    assert args.handler(args) == 0
    out, err = capsys.readouterr()
    assert "lost: 7 events" in out
    assert "7 events are missing" in err


def test_comm_is_read_again_for_an_exec() -> None:
    me = threading.get_native_id()
    mine = Path("/proc/thread-self/comm")
    before = mine.read_text().strip()
    assert comm_of(me) == before
    try:
        mine.write_text("renamed")  # as prctl(PR_SET_NAME) or an exec would
        assert comm_of(me, again=True) == "renamed"  # an exec's caller reads it afresh
        assert comm_of(me) == "renamed"  # and the next request of the new program too
    finally:
        mine.write_text(before)
    time.sleep(COMM_FRESH)
    assert comm_of(me) == before


def test_comm_is_read_from_the_thread_that_holds_the_number_now() -> None:
    assert comm_of(threading.get_native_id()) == Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    child = subprocess.Popen(["sleep", "30"])
    try:
        deadline = time.monotonic() + 5
        while comm_of(child.pid) != "sleep" and time.monotonic() < deadline:  # until it has exec'd
            time.sleep(0.01)
        assert comm_of(child.pid) == "sleep"  # its /proc file is kept open now
    finally:
        child.kill()
        child.wait()
    time.sleep(COMM_FRESH)
    assert comm_of(child.pid) == ""  # the kept fd names that thread, gone: never a stale name


@pytest.mark.parametrize(
    "event",
    [
        Event(1714564800.25, "vm1", 7, "tar", "open", ("/a b/é", '/q"\\\x01\n'), 577, "ok", None, 12),
        Event(1, "v\u2028", 0, "", "rename", (), 0, "EACCES", -3, 0, 'sc"an'),
        Event(1e-7, "", 2**40, "c\tx", "lost", ("😀",), 2**31, "5 events lost", 5, 2**33, "events"),
    ],
)
def test_a_line_is_what_json_dumps_of_the_fields_makes(event: Event) -> None:
    fields = {name: getattr(event, name) for name in Event.__dataclass_fields__}
    assert event.to_json() == json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    assert Event.from_json(event.to_json()) == event


def _records() -> list[Record]:
    """A record of every kind of request and response an audit sees, with names JSON must escape."""
    who = api.Caller(vm="vm1", pid=4242)
    here = api.VmPath("/", '/a b/é"\\\x01\n')
    requests: list[api.Request] = [
        api.Open(caller=who, path=here, flags=os.O_WRONLY | os.O_CREAT, mode=0o644),
        api.Statx(caller=who, path=here, flags=0x100, mask=0xFFF),
        api.Stat(caller=who, path=here, follow=False),
        api.Rename(caller=who, old=here, new=api.VmPath("/", "/b"), flags=1),
        api.Unlink(caller=who, path=here),
        api.Mkdir(caller=who, path=here, mode=0o700),
        api.Access(caller=who, path=here, mode=2, flags=0x200),
    ]
    responses: list[api.Response] = [
        api.Fd(7, True),
        api.Errno(13),
        api.Errno(9999),
        api.Value(0),
        api.Value(-3),
        api.Continue(),
        api.Data(b"abc"),
        api.WouldBlock(None, 1, api.Unlink(caller=who, path=here), api.Errno(4)),  # type: ignore[arg-type]
        api.StatResult(os.stat("/")),
    ]
    return [
        (vm, request, response, when, 12, comm, by, paths)
        for request in requests
        for response in responses
        for vm, when, comm, by, paths in (
            ("vm1", 1714564800.25, "tar", None, ("/x",)),
            ("v\u2028", 1e-7, "c\tx", 'sc"an', ("😀", "/a b")),
        )
    ]


def test_a_line_made_from_the_record_is_the_events_line() -> None:
    """The audit makes its lines from the ring's records (no Event): the same characters."""
    records = _records()
    for record in records:
        assert record_line(record) == event_from_record(*record).to_json(), record
    assert len(records) == 7 * 9 * 2


def test_an_audit_writes_recorded_and_published_events_alike(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    audit = AuditLog(str(log))
    bus = EventBus()
    subscription = audit.attach(bus)
    records = _records()
    for record in records:
        vm, request, response, when, took, comm, by, paths = record
        bus.record(vm, request, response, time=when, duration_us=took, comm=comm, answered_by=by, paths=paths)
        bus.publish(event_from_record(*record))  # a service's own event, written from the Event
    assert bus.flush(timeout=10)
    lines = log.read_text().split("\n")[:-1]  # not splitlines: U+2028 is no line end in JSON lines
    assert lines == [event_from_record(*r).to_json() for r in records for _ in range(2)]
    assert bus.close(timeout=10)
    audit.close()
    assert subscription.statistics().delivered == 2 * len(records)


def _odd_records() -> list[Record]:
    """Records whose numbers and times format in ways a C formatter could get wrong."""
    who = api.Caller(vm="vm1", pid=2**70)  # beyond 64 bits
    request = api.Open(caller=who, path=api.VmPath("/", "/x"), flags=-1, mode=0)
    times: list[float] = [1, 1e22, 0.1 + 0.2, -0.0, float("inf"), float("nan"), 1e-300, 123456789.123456]
    return [
        ("vm", request, api.Value(-(2**65)), when, 2**64, "\x7f\x1f", "", ("", "\\", "\u00e9\u20ac\U0001f600"))
        for when in times
    ]


def _mixed() -> list[Record | Event]:
    """Records and a service's Events, interleaved, as a batch reaches the audit."""
    items: list[Record | Event] = []
    for record in [*_records(), *_odd_records()]:
        items.append(record)
        if len(items) % 5 == 0:
            items.append(event_from_record(*record) if record[0] == "vm1" else lost_event("vm2", 3))
    return items


def _native_audit() -> Any:
    if _native.audit_reason == f"{_native.ENVIRONMENT}=0":
        pytest.skip("HVFS_NATIVE=0: the Python writer alone")
    require(_native.audit is not None, f"the audit's C writer is not loaded: {_native.audit_reason}")
    return _native.audit


def test_the_c_writer_writes_the_python_writers_bytes(tmp_path: Path) -> None:
    """Both writers, the same records and Events, files byte for byte the same, in
    batches that do and do not divide the items evenly."""
    audit = _native_audit()
    items = _mixed()
    assert audit.lines(items) == python_lines(items)
    for per_write in (1, 7, 32, len(items) + 1):
        files = []
        for write in (audit.write, python_write):
            path = tmp_path / f"{write.__name__}-{per_write}.jsonl"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                write(fd, items, per_write)
            finally:
                os.close(fd)
            files.append(path.read_bytes())
        assert files[0] == files[1]
    lines = files[0].decode().split("\n")[:-1]
    assert len(lines) == len(items)
    assert lines[0] == record_line(items[0])  # type: ignore[arg-type]


def test_both_writers_escape_a_name_utf8_cannot_encode_alike(tmp_path: Path) -> None:
    """A name that is not UTF-8 (a lone surrogate after surrogateescape) is written as its
    JSON escape by both writers, and every line of the batch is written: a VM that names a
    file so must not keep its calls out of the audit."""
    audit = _native_audit()
    good = _records()[0]
    name = os.fsdecode(b"/x/\xff\xfe-\xc3\xa9-\x01")  # two bytes that are not UTF-8, an é, a control
    bad = (*good[:7], (name, "/y/\udc80"))
    items = [good, bad, good, bad]
    files = []
    for write in (audit.write, python_write):
        path = tmp_path / f"{write.__name__}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            write(fd, items, 3)
        finally:
            os.close(fd)
        files.append(path.read_bytes())
    assert files[0] == files[1]
    lines = files[0].decode().split("\n")[:-1]  # valid UTF-8
    assert len(lines) == len(items)
    assert '"/x/\\udcff\\udcfe-\u00e9-\\u0001"' in lines[1]
    event = Event.from_json(lines[1])
    assert [os.fsencode(path) for path in event.paths] == [b"/x/\xff\xfe-\xc3\xa9-\x01", b"/y/\x80"]
    assert event.to_json() == lines[1]  # the reader's to_json writes what the file holds


def test_the_audit_writes_through_the_c_writer_where_it_is_built(tmp_path: Path) -> None:
    """The audit's file, written on the bus's thread by the C writer, reads back as the
    events it recorded (hvfs events' reader), in order."""
    _native_audit()
    assert compact_module._native_audit is _native.audit  # the audit really takes the C path
    test_recorded_requests_are_in_the_file_on_flush_as_event_for_makes_them(tmp_path)


def test_both_writers_write_the_integers_at_64_bits_edges_alike() -> None:
    """The C writer's own digits (no snprintf) for every int of a line: each edge of a long
    long, and the numbers just past them (Python's str)."""
    audit = _native_audit()
    request = api.Open(caller=api.Caller(vm="vm1", pid=2**31 - 1), path=api.VmPath("/", "/x"), flags=0, mode=0)
    numbers = [0, -1, 1, 9, 10, -10, 2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 10**18, -(10**18)]
    items: list[Record | Event] = [
        ("vm", request, api.Value(number), 1.5, abs(number), "c", None, ()) for number in numbers
    ]
    assert audit.lines(items) == python_lines(items)
    assert [Event.from_json(line).value for line in audit.lines(items).decode().splitlines()] == numbers


def test_the_c_writer_writes_every_time_as_repr_does() -> None:
    """The C writer finds a time's shortest repr with integers, not dtoa (shortest.h):
    what repr writes for times of now, any double from 1 to 2**53 (bit patterns at
    random, seeded), decimals of a few digits, and the edges the shortcut leaves to dtoa
    (powers of two, ties, values outside its range)."""
    audit = _native_audit()
    rng = random.Random(14)
    times = [1.0, 1.5, 2.0**52, 2.0**52 + 1, 2.0**53 - 1, 2.0**53, 2.0**53 + 2, 1.0000000000000002, 1.9999999999999998]
    times += [0.5, 0.1, 1e-5, 1e16, 1e300, 5e-324, 1.25, 2.5, 0.125 + 1, 1796558690.025159, 1796558690.0]
    times += [time.time() for _ in range(100)] + [1.7e9 + rng.random() * 3e8 for _ in range(20000)]
    low, high = struct.unpack("<QQ", struct.pack("<dd", 1.0, 2.0**53))
    times += [struct.unpack("<d", struct.pack("<Q", rng.randrange(low, high)))[0] for _ in range(20000)]
    times += [round(1 + rng.random() * 1e6, rng.randrange(10)) for _ in range(5000)]
    request = api.Open(caller=api.Caller(vm="vm1", pid=1), path=api.VmPath("/", "/x"), flags=0, mode=0)
    items: list[Record | Event] = [("vm", request, api.Value(0), when, 0, "c", None, ()) for when in times]
    lines = audit.lines(items).decode().splitlines()
    assert [line.split(",", 1)[0] for line in lines] == [f'{{"time":{when!r}' for when in times]
    assert audit.lines(items) == python_lines(items)


def test_flushes_from_many_threads_each_return_once_what_came_before_is_delivered() -> None:
    """The ring counts the Flush marks it takes in, so that a batch without one is handed
    out without a look at each item: marks recorded from several threads at once, among
    events, are each found, each returns in time, after its thread's events before it
    reached both subscribers, and every VM's events arrive once, in order."""
    bus = EventBus()
    first: list[Event] = []
    second: list[Record | Event] = []
    bus.subscribe(first.extend, name="first", batch=True)
    bus.subscribe(second.extend, name="second", records=True)
    late: list[str] = []

    def serve(n: int) -> None:
        for i in range(300):
            event = an_event(f"vm{n}", i)
            bus.publish(event)
            if i % 15 == 14:
                if not bus.flush(timeout=10):
                    late.append(f"vm{n} {i}: the flush timed out")
                elif not any(e is event for e in first) or not any(e is event for e in second):
                    late.append(f"vm{n} {i}: flushed before its event was delivered")

    threads = [threading.Thread(target=serve, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert late == []
    assert bus.flush(timeout=10)
    for delivered in (first, second):
        for n in range(6):
            mine = [e for e in delivered if isinstance(e, Event) and e.vm == f"vm{n}"]
            assert [e.pid for e in mine] == list(range(300))
    assert bus.close(timeout=10)


def test_both_writers_write_failed_requests_alike_each_errno_asked_once() -> None:
    """The C writer asks Python for an Errno's result once per errno and keeps it: every
    errno there is (and unknown ones, and one with a signal) reads as the Python writer
    writes it, the first time and again."""
    audit = _native_audit()
    request = api.Unlink(caller=api.Caller(vm="vm1", pid=7), path=api.VmPath("/", "/x"))
    numbers = [*sorted(errno.errorcode), 0, 4095, 2**40]
    answers = [api.Errno(n) for n in numbers] + [api.Errno(errno.EPIPE, signal=13), api.Errno(errno.ENOENT)]
    items: list[Record | Event] = [("vm", request, answer, 1.5, 3, "c", None, ("/x",)) for answer in answers]
    for _ in range(2):
        assert audit.lines(items) == python_lines(items)
    results = [Event.from_json(line).result for line in audit.lines(items).decode().splitlines()]
    assert results[numbers.index(errno.ENOENT)] == results[-1] == "ENOENT"
