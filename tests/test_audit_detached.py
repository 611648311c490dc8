"""What the seccomp driver's C loop records of an audited request it served, without the GIL
(hvfs/_native/detached.h, through record.c's ``record_detached``, the loop's own call with
the GIL let go), into the C Ring the dispatch's records go to (hvfs/_native/ring.h): the very
compact record the dispatch's Recorder makes of the same request, in the order the appends
were made whoever made them, a Flush after it, its full-ring wait, drop and count by VM, the
last drain at the ring's stop, and nothing where the audit went (the bus's Sink detached)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from hvfs import _native, api
from hvfs.api.compact import unpack
from hvfs.api.events import LOST, Event
from hvfs.api.hooks import EventBus
from hvfs.api.ring import FULL_WAIT, EventRing, Flush, Item, detached
from hvfs.intercept.served_stat import audit_of
from tests.test_record_raw import VM, _requests, _without_clocks

pytestmark = pytest.mark.skipif(not detached(), reason="hvfs._native._record is not built, or HVFS_AUDIT_DETACHED=0")

Recorded = list[Item]


def _ring(capacity: int = 1 << 14) -> tuple[EventRing, Any, Recorded]:
    """A ring handing out into a list, and a Sink attached to it as a bus attaches its own."""
    handed: Recorded = []
    ring = EventRing(lambda items, lost, marks: handed.extend(items), capacity=capacity)
    assert _native.recorder is not None and ring.native is not None
    sink = _native.recorder.Sink()
    sink.attach(ring.native)
    assert audit_of(object(), VM) is not None  # the prototypes a raw entry's kind reads as
    return ring, sink, handed


def _detached(sink: Any, path: str, *, vm: str = VM) -> None:
    """A stat of ``path`` by this thread, as the C loop records it."""
    record = _native.recorder.record_detached  # type: ignore[union-attr]
    record(sink, 0, 0, False, 0, threading.get_native_id(), 0, time.monotonic_ns(), vm, path.encode())


def _paths(items: Recorded) -> list[str]:
    return [unpack(item)[4][6] for item in items if isinstance(item, bytes)]


def test_a_detached_record_is_the_recorders_record() -> None:
    ring, sink, handed = _ring()
    audit = audit_of(object(), VM)
    assert audit is not None
    pid = threading.get_native_id()
    cases = _requests(pid)
    for kind, request, response, flags, name in cases:
        ring.record_served(VM, request, response, time.monotonic_ns(), None, (name,))
        errno = response.errno if isinstance(response, api.Errno) else 0
        _native.recorder.record_detached(  # type: ignore[union-attr]
            sink, kind, errno, False, 0, pid, flags, time.monotonic_ns(), VM, name.encode("utf-8", "surrogateescape")
        )
    here = api.VmPath("/", "/data/link")
    caller = api.Caller(vm=VM, pid=pid)
    others = [  # a readlink's length, any kind's continue: (kind, continued, value, request, response)
        (8, False, 11, api.Readlink(caller=caller, path=here), api.Data(b"x" * 11)),
        (0, True, 0, api.Stat(caller=caller, path=here, follow=True), api.Continue()),
    ]
    for kind, continued, value, request, response in others:
        ring.record_served(VM, request, response, time.monotonic_ns(), None, ("/data/link",))
        _native.recorder.record_detached(  # type: ignore[union-attr]
            sink, kind, 0, continued, value, pid, 0, time.monotonic_ns(), VM, b"/data/link"
        )
    assert ring.stop(timeout=10)
    records = [item for item in handed if isinstance(item, bytes)]
    assert len(records) == 2 * (len(cases) + len(others))
    for python, raw in zip(records[::2], records[1::2], strict=True):
        assert _without_clocks(raw) == _without_clocks(python)


def test_python_and_c_records_keep_the_order_they_were_made_in_and_a_flush_comes_after() -> None:
    ring, sink, handed = _ring()
    caller = api.Caller(vm=VM, pid=threading.get_native_id())
    expected = []
    for n in range(500):
        _detached(sink, f"/c{n}")
        ring.record_served(VM, api.Stat(caller=caller, path=api.VmPath("/", f"/p{n}"), follow=True),
                           api.Value(0), time.monotonic_ns(), None, (f"/p{n}",))  # fmt: skip
        expected += [f"/c{n}", f"/p{n}"]
        if n % 100 == 99:  # a mark after them: everything before it is handed out when it is done
            mark = Flush()
            ring.record(mark)
            deadline = time.monotonic() + 5
            while mark not in handed and time.monotonic() < deadline:
                time.sleep(0.002)
            assert _paths(handed[: handed.index(mark)]) == expected
    assert ring.stop(timeout=10)
    assert _paths(handed) == expected


def test_threads_recording_at_once_lose_nothing_and_keep_each_threads_order() -> None:
    ring, sink, handed = _ring()
    threads, each = 8, 2000

    def flood(k: int) -> None:
        for n in range(each):
            _detached(sink, f"/t{k}/{n}", vm=f"vm{k % 2}")

    workers = [threading.Thread(target=flood, args=(k,)) for k in range(threads)]
    for worker in workers:
        worker.start()
    for n in range(each):  # a Python thread publishing meanwhile: another VM's events
        ring.record(Event(time=0.0, vm="other", pid=1, comm="x", operation="stat", paths=(f"/o{n}",),
                          flags=0, result="ok", value=None, duration_us=0, answered_by=None))  # fmt: skip
    for worker in workers:
        worker.join()
    assert ring.stop(timeout=10)
    paths = _paths(handed)
    assert len(paths) == threads * each and ring.lost == 0
    for k in range(threads):
        assert [p for p in paths if p.startswith(f"/t{k}/")] == [f"/t{k}/{n}" for n in range(each)]
    assert [i.paths[0] for i in handed if isinstance(i, Event)] == [f"/o{n}" for n in range(each)]
    assert {unpack(record)[4][3] for record in handed if isinstance(record, bytes)} == {"vm0", "vm1"}


def test_a_full_ring_waits_a_little_then_drops_and_counts_by_vm() -> None:
    gate = threading.Event()
    handed: list[tuple[Recorded, int]] = []

    def hand_out(items: Recorded, lost: int, marks: tuple[Flush, ...]) -> None:
        gate.wait(10)  # a writer stuck on a slow disk
        handed.append((items, lost))

    ring = EventRing(hand_out, capacity=4)
    assert _native.recorder is not None and audit_of(object(), VM) is not None
    sink = _native.recorder.Sink()
    sink.attach(ring.native)
    _detached(sink, "/first")
    deadline = time.monotonic() + 5
    while len(ring) and time.monotonic() < deadline:  # the thread took it, and is stuck handing it out
        time.sleep(0.005)
    waited = []
    for n in range(10):
        began = time.monotonic()
        _detached(sink, f"/n{n}", vm="vm2" if n >= 8 else VM)
        waited.append(time.monotonic() - began)
    assert len(ring) == 4 and ring.lost == 6
    assert sum(w >= FULL_WAIT for w in waited) == 6 and max(waited) < FULL_WAIT + 0.5
    gate.set()
    assert ring.stop(timeout=10)
    items = [item for batch, _ in handed for item in batch]
    assert _paths(items) == ["/first", "/n0", "/n1", "/n2", "/n3"]
    assert sum(lost for _, lost in handed) == 6
    said = {item.vm: item.value for item in items if isinstance(item, Event) and item.operation == LOST}
    assert said == {VM: 4, "vm2": 2}


def test_a_stopped_ring_hands_out_every_entry_first() -> None:
    handed: list[Recorded] = []
    ring = EventRing(lambda items, lost, marks: handed.append(items))
    assert audit_of(object(), VM) is not None
    sink = _native.recorder.Sink()  # type: ignore[union-attr]
    sink.attach(ring.native)
    for n in range(5000):
        _detached(sink, f"/s{n}")
    assert ring.stop(timeout=10)
    assert _paths([item for batch in handed for item in batch]) == [f"/s{n}" for n in range(5000)]


def test_a_closed_bus_records_nothing_more_and_writes_what_it_had() -> None:
    bus = EventBus()
    if bus.sink is None:
        pytest.skip("the bus records with the GIL (HVFS_AUDIT_DETACHED=0)")
    got: list[Any] = []
    bus.subscribe(got.extend, name="test", batch=True, records=True)
    assert audit_of(bus, VM) is not None
    for n in range(3000):
        _detached(bus.sink, f"/b{n}")
    assert bus.close(timeout=10)  # the manager's stop: the ring's last drain, then the subscribers'
    assert _paths(got) == [f"/b{n}" for n in range(3000)]
    _detached(bus.sink, "/after")  # the audit went: the C loop's call records nothing
    assert bus.sink.recorded == 3000


def test_a_small_ring_flooded_by_c_and_python_at_once_accounts_for_every_event() -> None:
    """No deadlock between the C loop's mutex and the GIL, and no event gone unsaid: each one
    handed out or counted lost by its VM, each thread's kept ones in its order."""
    handed: Recorded = []

    def slow(items: Recorded, lost: int, marks: tuple[Flush, ...]) -> None:
        time.sleep(0.1)  # a writer slower than the VMs: the ring fills up, longer than FULL_WAIT
        handed.extend(items)

    ring = EventRing(slow, capacity=64)
    assert audit_of(object(), VM) is not None  # the prototypes a raw entry's kind reads as
    sink = _native.recorder.Sink()  # type: ignore[union-attr]
    sink.attach(ring.native)
    caller = api.Caller(vm="python", pid=threading.get_native_id())
    each = 300

    def c_thread(k: int) -> None:
        for n in range(each):
            _detached(sink, f"/t{k}/{n}", vm=f"c{k}")

    def python_thread(k: int) -> None:
        for n in range(each):
            path = f"/p{k}/{n}"
            request = api.Unlink(caller=caller, path=api.VmPath("/", path))
            ring.record_served("python", request, api.Value(0), time.monotonic_ns(), None, (path,))

    workers = [threading.Thread(target=c_thread, args=(k,)) for k in range(4)]
    workers += [threading.Thread(target=python_thread, args=(k,)) for k in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert not worker.is_alive()  # no deadlock
    assert ring.stop(timeout=10)
    paths = _paths(handed) + [p for item in handed if isinstance(item, tuple) for p in item[7]]
    said: dict[str, int] = {}
    for item in handed:
        if isinstance(item, Event) and item.operation == LOST:
            said[item.vm] = said.get(item.vm, 0) + (item.value or 0)
    assert len(paths) + sum(said.values()) == 6 * each and ring.lost == sum(said.values())
    assert ring.lost > 0  # it was full
    for k in range(4):
        kept = [p for p in paths if p.startswith(f"/t{k}/")]
        assert kept == sorted(kept, key=lambda p: int(p.rsplit("/", 1)[1]))
        assert len(kept) + said.get(f"c{k}", 0) == each
