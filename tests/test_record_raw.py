"""record.c's ``record_raw`` (hvfs/_native/record_raw.h), what the driver's C loop records an
audited VM's served stat, open, unlink, mkdir, rmdir or metadata change with (an errno answered in C
too): the very compact record the dispatch's Recorder
makes for the same request (all but the time and the duration), into the same ring, with
the ring's full-ring wait, drop and count; nothing where the bus has no Recorder."""

from __future__ import annotations

import os
import threading
import time

import pytest

from hvfs import _native, api
from hvfs.api.compact import unpack
from hvfs.api.ring import FULL_WAIT, EventRing, Flush, Item
from hvfs.intercept.served_stat import audit_of

pytestmark = pytest.mark.skipif(_native.recorder is None, reason="hvfs._native._record is not built")

VM = "vm1"


def _requests(pid: int) -> list[tuple[int, api.Request, api.Response, int, str]]:
    """(kind, request, response, flags, name) of each kind C serves, as the dispatch has them
    (an Errno response: C answered that errno)."""
    caller = api.Caller(vm=VM, pid=pid)
    here = api.VmPath("/", "/data/file")
    held = api.OpenFile(3, "/data/held")
    writing = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    return [
        (0, api.Stat(caller=caller, path=here, follow=False), api.StatResult(os.stat("/")), 0, "/data/file"),
        (1, api.Statx(caller=caller, path=here, flags=0x100, mask=0x7FF), api.StatxResult(b"x" * 256), 0x100, "/d"),
        (2, api.Open(caller=caller, path=here, flags=os.O_RDONLY | os.O_CLOEXEC), api.Fd(-1, True), 0o2000000, "/é"),
        (2, api.Open(caller=caller, path=here, flags=0x40000000), api.Fd(-1, False), 0x40000000, "/\udcff"),
        (2, api.Open(caller=caller, path=here, flags=writing), api.Fd(-1, True), writing, "/data/new"),
        (2, api.Open(caller=caller, path=here, flags=writing), api.Errno(17), writing, "/data/file"),
        (3, api.Unlink(caller=caller, path=here), api.Value(0), 0, "/data/gone"),
        (4, api.Chmod(caller=caller, target=held, mode=0o640), api.Value(0), 0, "/data/held"),
        (4, api.Chmod(caller=caller, target=held, mode=0o640), api.Errno(1), 0, "/data/held"),
        (5, api.Chown(caller=caller, target=held, uid=1, gid=2), api.Value(0), 0, "/data/held"),
        (6, api.Utimens(caller=caller, target=held, times=None), api.Errno(30), 0, "/data/held"),
        (4, api.Chmod(caller=caller, target=here, mode=0o750), api.Value(0), 0, "/data/file"),  # by path
        (11, api.Mkdir(caller=caller, path=here, mode=0o755), api.Value(0), 0, "/data/made"),
        (11, api.Mkdir(caller=caller, path=here, mode=0o755), api.Errno(17), 0, "/data/made"),
        (12, api.Rmdir(caller=caller, path=here), api.Value(0), 0, "/data/made"),
    ]


def _without_clocks(record: bytes) -> tuple[object, ...]:
    _, pid, flags, _, fields = unpack(record)
    return pid, flags, tuple(fields)


def test_a_raw_record_is_the_recorders_record() -> None:
    handed: list[Item] = []
    ring = EventRing(lambda items, lost, marks: handed.extend(items))
    bus_like = type("Bus", (), {"record_served": ring.record_served})()
    audit = audit_of(bus_like, VM)
    assert audit is not None
    _, vm, record_raw, prototypes = audit
    failed = type(prototypes[7][1])  # served_audit.h AUDIT_FAILED: C makes the Errno of its errno
    assert failed is api.Errno
    pid = threading.get_native_id()  # a live thread: its command name is read from /proc
    cases = _requests(pid)
    for kind, request, response, flags, name in cases:
        began = time.monotonic_ns()
        ring.record_served(VM, request, response, began, None, (name,))
        errno = response.errno if isinstance(response, api.Errno) else 0
        raw = failed(errno) if errno else prototypes[kind][1]
        record_raw(ring.record_served, vm, prototypes[kind][0], raw, pid, flags, began, name)  # type: ignore[operator]
    assert ring.stop(timeout=10)
    records = [item for item in handed if isinstance(item, bytes)]
    assert len(records) == 2 * len(cases)
    for python, raw in zip(records[::2], records[1::2], strict=True):
        assert _without_clocks(raw) == _without_clocks(python)
    assert [unpack(record)[4][6] for record in records[1::2]] == [case[4] for case in cases]
    operations = {unpack(record)[4][0] for record in records[1::2]}
    assert operations >= {'"unlink"', '"chmod"', '"chown"', '"utimens"', '"mkdir"', '"rmdir"'}
    assert {unpack(record)[4][1] for record in records[1::2]} >= {'"EEXIST"', '"EPERM"', '"EROFS"'}


def test_no_recorder_records_nothing() -> None:
    prototypes = audit_of(object(), VM)
    assert prototypes is not None
    _, vm, record_raw, pairs = prototypes
    assert record_raw(lambda *args: None, vm, *pairs[0], 1, 0, 0, "/x") is None  # type: ignore[operator]


def test_a_full_ring_waits_a_little_then_drops_and_counts() -> None:
    gate = threading.Event()
    handed: list[tuple[list[Item], int]] = []

    def hand_out(items: list[Item], lost: int, marks: tuple[Flush, ...]) -> None:
        gate.wait(10)  # a writer stuck on a slow disk
        handed.append((items, lost))

    ring = EventRing(hand_out, capacity=4)
    _, vm, record_raw, prototypes = audit_of(object(), VM) or ((), "", None, ())
    pid = threading.get_native_id()
    record_raw(ring.record_served, vm, *prototypes[0], pid, 0, 0, "/first")  # type: ignore[operator]
    deadline = time.monotonic() + 5
    while len(ring) and time.monotonic() < deadline:  # the thread took it, and is stuck handing it out
        time.sleep(0.005)
    waited = []
    for n in range(10):
        began = time.monotonic()
        record_raw(ring.record_served, vm, *prototypes[0], pid, 0, 0, f"/n{n}")  # type: ignore[operator]
        waited.append(time.monotonic() - began)
    assert len(ring) == 4 and ring.lost == 6
    assert sum(w >= FULL_WAIT for w in waited) == 6 and max(waited) < FULL_WAIT + 0.5
    gate.set()
    assert ring.stop(timeout=10)
    records = [item for batch, _ in handed for item in batch if isinstance(item, bytes)]
    assert [unpack(record)[4][6] for record in records] == ["/first", "/n0", "/n1", "/n2", "/n3"]
    assert sum(lost for _, lost in handed) == 6
