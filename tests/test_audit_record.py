"""A served request's record, taken on the serving thread in one call (hvfs/_native/record.c,
or hvfs.api.events.python_record where it is not built): the same event either way, the
command name by comm_of's rules, and a full ring waited on, then a gap counted and said."""

from __future__ import annotations

import collections
import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hvfs import _native, api
from hvfs.api import events as events_module
from hvfs.api.compact import event_from_item, item_line, python_lines
from hvfs.api.events import COMM_FRESH, LOST, Event, comm_of, event_from_record, python_record
from hvfs.api.hooks import EventBus
from hvfs.api.ring import FULL_WAIT, Flush, Item
from tests.conftest import require

Recorder = Callable[..., int]


def _c_recorder() -> Any:
    if _native.recorder_reason == f"{_native.ENVIRONMENT}=0":
        pytest.skip("HVFS_NATIVE=0: the Python recorder alone")
    require(_native.recorder is not None, f"the audit's C recorder is not loaded: {_native.recorder_reason}")
    return _native.recorder


@pytest.fixture(params=["c", "python"])
def recorder(request: pytest.FixtureRequest) -> Recorder:
    return _c_recorder().record if request.param == "c" else python_record  # type: ignore[no-any-return]


@pytest.fixture(params=["c", "python"])
def comm(request: pytest.FixtureRequest) -> Callable[..., str]:
    if request.param == "c":
        return _c_recorder().comm  # type: ignore[no-any-return]
    return lambda pid, again=False: comm_of(pid, again=again)


def test_the_dispatch_records_through_the_c_recorder_where_it_is_built() -> None:
    recorder = _c_recorder()
    assert events_module.record_request is recorder.record
    bus = EventBus()
    bus.subscribe(lambda items: None, name="audit", records=True)
    assert type(bus.record_served) is recorder.Recorder  # no Python on the serving thread
    assert bus.record_served is bus._ring.record_served
    bus.subscribe(lambda items: None, name="watcher", prompt=True)
    assert bus.record_served.prompt  # the ring's prompt, held in C too
    assert bus.close(timeout=10)
    bus.record_served(
        "vm1", api.Unlink(caller=api.Caller(vm="vm1", pid=1), path=api.VmPath("/", "/x")), api.Value(0), 0, None, ()
    )


def test_both_recorders_make_the_same_record(recorder: Recorder) -> None:
    """The tuple the writers read, its clocks the request's (time.time() then, the µs since
    ``began``), the caller's name its /proc comm; appended where there is room, else -1."""
    me = threading.get_native_id()
    who = api.Caller(vm="vm1", pid=me)
    request = api.Open(caller=who, path=api.VmPath("/", "/d/f"), flags=os.O_RDONLY, mode=0)
    response = api.Errno(2)
    ring: collections.deque[Any] = collections.deque()
    before = time.time()
    began = time.monotonic_ns() - 5_000_000  # it arrived 5 ms ago
    assert recorder(ring, 2, "vm1", request, response, began, None, ("/d/f",)) == 0
    assert recorder(ring, 2, "vm1", request, response, began, "scan", ()) == 1
    assert recorder(ring, 2, "vm1", request, response, began, None, ()) == -1  # full: not appended
    after = time.time()
    assert len(ring) == 2
    name = Path("/proc/thread-self/comm").read_text().rstrip("\n")
    for record, by, paths in zip(ring, (None, "scan"), (("/d/f",), ()), strict=True):
        event = event_from_item(record)
        when, took = event.time, event.duration_us
        assert event == Event(when, "vm1", me, name, "open", paths, os.O_RDONLY, "ENOENT", None, took, by)
        assert type(when) is float and before <= when <= after
        assert type(took) is int and 5_000 <= took < 5_000 + (after - before) * 1e6 + 1_000
        assert item_line(record) == event.to_json()


def test_the_c_recorder_reads_the_name_again_for_an_exec() -> None:
    """An exec's record reads its caller's name afresh (the new program's), and forgets it."""
    record = _c_recorder().record
    me = threading.get_native_id()
    who = api.Caller(vm="vm1", pid=me)
    mine = Path("/proc/thread-self/comm")
    before = mine.read_text().strip()
    ring: collections.deque[Any] = collections.deque()
    stat = api.Stat(caller=who, path=api.VmPath("/", "/x"), follow=True)
    execute = api.Exec(caller=who, path=api.VmPath("/", "/bin/true"))
    record(ring, 10, "vm1", stat, api.Errno(2), 0, None, ())
    try:
        mine.write_text("renamed")  # as an exec does
        record(ring, 10, "vm1", stat, api.Errno(2), 0, None, ())  # within COMM_FRESH: the name known
        record(ring, 10, "vm1", execute, api.Continue(), 0, None, ())
        record(ring, 10, "vm1", stat, api.Errno(2), 0, None, ())
    finally:
        mine.write_text(before)
    assert [event_from_item(r).comm for r in ring] == [before, before, "renamed", "renamed"]
    time.sleep(COMM_FRESH)  # the name cached is this thread's no more


def test_the_name_is_read_again_for_an_exec(comm: Callable[..., str]) -> None:
    me = threading.get_native_id()
    mine = Path("/proc/thread-self/comm")
    before = mine.read_text().strip()
    assert comm(me) == before
    try:
        mine.write_text("renamed")  # as prctl(PR_SET_NAME) or an exec would
        assert comm(me) == before  # a burst of requests reads it once per COMM_FRESH
        assert comm(me, True) == "renamed"  # an exec's caller reads it afresh
        assert comm(me) == "renamed"  # and the next request of the new program too
    finally:
        mine.write_text(before)
    time.sleep(COMM_FRESH)
    assert comm(me) == before


def test_the_name_is_read_from_the_thread_that_holds_the_number_now(comm: Callable[..., str]) -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        deadline = time.monotonic() + 5
        while comm(child.pid) != "sleep" and time.monotonic() < deadline:  # until it has exec'd
            time.sleep(0.01)
        assert comm(child.pid) == "sleep"  # its /proc file is kept open now
    finally:
        child.kill()
        child.wait()
    time.sleep(COMM_FRESH)
    assert comm(child.pid) == ""  # the kept fd names that thread, gone: never a stale name


def test_a_serving_thread_keeps_a_few_names_and_closes_their_files_when_it_ends(comm: Callable[..., str]) -> None:
    """Names of many threads through one serving thread: each right, at most a few files
    kept open, and none left once that thread ended."""
    children = [subprocess.Popen(["sleep", "30"]) for _ in range(12)]
    names: list[str] = []
    opened: list[int] = []

    def serve() -> None:
        deadline = time.monotonic() + 5
        for child in children:
            while comm(child.pid) != "sleep" and time.monotonic() < deadline:
                time.sleep(0.01)
            names.append(comm(child.pid))
        opened.append(_comm_files())

    before = _comm_files()
    try:
        thread = threading.Thread(target=serve)
        thread.start()
        thread.join(10)
    finally:
        for child in children:
            child.kill()
            child.wait()
    assert names == ["sleep"] * len(children)
    assert 0 < opened[0] - before <= 8
    # join returns once the thread's Python is done; its thread-local files are closed by
    # its destructors after that, as the OS thread exits (a loaded machine showed the gap).
    deadline = time.monotonic() + 5
    while _comm_files() != before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _comm_files() == before


def _comm_files() -> int:
    """This process's fds open on a /proc/TID/comm."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}").endswith("/comm")
    return count


def test_a_full_ring_holds_a_served_request_a_little_then_drops_counts_and_says_so() -> None:
    """record_served on a full ring: waits up to FULL_WAIT for room, then the event is lost,
    counted, and a "lost" event of its VM stands in its place; what was kept is in order."""
    gate = threading.Event()
    delivered: list[Item] = []

    bus = EventBus()
    bus.subscribe(delivered.extend, name="audit", records=True)
    ring = bus._ring
    assert ring is not None
    ring.capacity = 8  # what a full ring is: the dispatch's recorder reads it
    hand_out = ring._hand_out

    def stuck(items: list[Item], lost: int, marks: tuple[Flush, ...]) -> None:
        gate.wait(10)  # a subscriber's queue that takes nothing: the ring's thread waits
        hand_out(items, lost, marks)

    ring._hand_out = stuck
    who = api.Caller(vm="vm1", pid=threading.get_native_id())
    bus.record_served("vm1", api.Unlink(caller=who, path=api.VmPath("/", "/first")), api.Value(0), 0, None, ())
    deadline = time.monotonic() + 5
    while len(ring) and time.monotonic() < deadline:  # taken, and stuck on its way out
        time.sleep(0.005)
    waited = []
    requests = [api.Unlink(caller=who, path=api.VmPath("/", f"/f{n}")) for n in range(12)]
    for request in requests:
        began = time.monotonic()
        bus.record_served(f"vm{1 + len(waited) % 2}", request, api.Value(0), 0, None, (str(request.path),))
        waited.append(time.monotonic() - began)
    assert len(ring) == 8
    assert ring.lost == 4
    assert sum(w >= FULL_WAIT for w in waited) == 4  # each lost one waited for room first
    assert max(waited) < FULL_WAIT + 0.5  # a VM is never held long
    gate.set()
    assert bus.flush(timeout=10)
    kept = [event_from_item(item).paths for item in delivered if not isinstance(item, Event)]
    said = {item.vm: item.value for item in delivered if isinstance(item, Event) and item.operation == LOST}
    assert kept[1:] == [(str(request.path),) for request in requests[:8]]  # in order, the first ones
    assert said == {"vm1": 2, "vm2": 2}
    assert bus.statistics().lost == 4
    assert bus.close(timeout=10)


def test_the_c_recorders_compact_record_reads_as_the_request_and_its_answer() -> None:
    """The C recorder keeps plain bytes, nothing of the request's objects: for every kind of
    request and answer an audit sees, names JSON must escape and names that are not UTF-8,
    its line (C writer and Python writer alike) is the line of the Record tuple of the same
    request, and its lazy Event that line's Event; what the compact form cannot hold (a
    number beyond 64 bits) is recorded as the tuple."""
    from tests.test_audit_ring import _records

    record = _c_recorder().record
    audit = _native.audit
    require(audit is not None, f"the audit's C writer is not loaded: {_native.audit_reason}")
    not_utf8 = os.fsdecode(b"/x/\xff\xfe-\xc3\xa9-\x01")
    cases = [(vm, request, response, by, paths) for vm, request, response, _, _, _, by, paths in _records()]
    cases.append(("vm1", cases[0][1], api.Value(0), None, (not_utf8, "/y/\udc80", "\ud800")))
    ring: collections.deque[Any] = collections.deque()
    for vm, request, response, by, paths in cases:
        assert record(ring, len(cases) + 1, vm, request, response, time.monotonic_ns(), by, paths) == len(ring) - 1
    items = list(ring)
    assert all(type(item) is bytes for item in items)
    assert audit.lines(items) == python_lines(items)
    lines = audit.lines(items).decode().split("\n")[:-1]
    for item, line, (vm, request, response, by, paths) in zip(items, lines, cases, strict=True):
        event = event_from_item(item)
        same = (vm, request, response, event.time, event.duration_us, event.comm, by, paths)
        assert audit.lines([item]) == python_lines([same]) == f"{line}\n".encode()  # the tuple's bytes
        assert line == event.to_json()
        assert event == event_from_record(*same)  # the Event a subscriber gets, field for field
        assert Event.from_json(line) == event and event.paths == paths
    beyond = api.Open(caller=api.Caller(vm="vm1", pid=1), path=api.VmPath("/", "/x"), flags=2**64, mode=0)
    for request, response in ((beyond, api.Value(0)), (cases[0][1], api.Value(2**63))):
        ring.clear()
        record(ring, 2, "vm1", request, response, time.monotonic_ns(), None, ("/x",))
        (kept,) = ring
        assert type(kept) is tuple and kept[1] is request and kept[2] is response
        assert audit.lines([kept]) == python_lines([kept])
    ring.clear()  # a path that is no str: recorded as it is, never raised on the serving thread
    record(ring, 2, "vm1", cases[0][1], api.Value(0), time.monotonic_ns(), None, (b"/x",))
    assert type(ring[0]) is tuple and ring[0][7] == (b"/x",)


def test_a_slow_subscriber_drops_served_records_and_says_whose() -> None:
    """Served requests' records (compact where C records them) that find a subscriber's
    queue full are dropped and counted by their VM, read from the record, and said in the
    stream in their place; the Events it gets are the requests', in order."""
    bus = EventBus()
    gate, entered = threading.Event(), threading.Event()
    got: list[Event] = []

    def slow(event: Event) -> None:
        entered.set()
        gate.wait(10)
        got.append(event)

    subscription = bus.subscribe(slow, name="slow", queue_size=4)
    who = api.Caller(vm="vm1", pid=threading.get_native_id())
    served = [api.Unlink(caller=who, path=api.VmPath("/", f"/f{n}")) for n in range(11)]
    bus.record_served("vm1", served[0], api.Value(0), 0, None, (str(served[0].path),))
    assert entered.wait(5)  # the subscriber holds the first; its queue is empty
    for n, request in enumerate(served[1:], start=1):
        bus.record_served(f"vm{1 + n % 2}", request, api.Value(0), 0, None, (str(request.path),))
    deadline = time.monotonic() + 5  # handed out in a batch, a little later
    while subscription.statistics().dropped < 6 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert subscription.statistics().dropped == 6
    gate.set()
    assert bus.close(timeout=10)
    kept = [e for e in got if e.operation != LOST]
    assert [e.paths for e in kept] == [(str(r.path),) for r in served[:5]]  # 4 fit in the queue
    assert all(e.operation == "unlink" and e.result == "ok" and e.pid == who.pid for e in kept)
    said = sorted((e.vm, e.value) for e in got if e.operation == LOST)
    assert said == [("vm1", 3), ("vm2", 3)]
