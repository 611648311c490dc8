"""The events of one bus on their way out: recorded on the serving thread for the price
of a few bytes, handed to the subscribers in batches by a thread of the ring's own, and
made into ``Event``s on the subscribers' threads.

Why: an event used to cost its request a /proc read, an openat2, a dict, a JSON line and
a wake-up of the audit's thread, whose JSON work then held the GIL while the next
request waited for it (measured: ``--strict --audit`` took 1.5 to 3 times ``--strict``).
Now the serving thread appends one compact record (plain bytes: hvfs/_native/compact.h)
to a deque (one C call, atomic under the GIL, no lock, no wake-up) and goes back to the
VM. The ring's thread, woken every ``INTERVAL`` or when the ring fills up, only moves
what is recorded to the subscribers' queues, one list for them all; each subscriber's
thread makes the events (``hvfs.api.compact.event_from_item``) and deals with them
``CHUNK`` at a time, or an audit's the lines straight from the records
(``hvfs.api.compact.write_lines``) ``RECORDS_CHUNK`` at a time, so that one thread at
most does the work behind the requests, and a request never waits long for the GIL.

What must be true when taken is taken by the caller of ``record`` (hvfs.manager: the
paths as served, read from the very fd or directory the manager acted on, and the
command name): a name taken later could be another file's. The compact record keeps
nothing of the request's objects: kept alive until written, they cost each request fresh
memory (compact.h). The Python recorder (HVFS_NATIVE=0) keeps them in a Record tuple.

Bounded: at most ``capacity`` records wait. A request that finds the ring full wakes
the thread and waits up to ``FULL_WAIT`` for room; then its event is dropped, counted
for its VM, and the subscribers get a "lost" event in its place in the stream (with the
count), so that an audit says where it has a gap.

Where record.c is built (and ``HVFS_AUDIT_DETACHED`` is not 0) the deque is a C ``Ring``
(hvfs/_native/ring.h) that the seccomp driver's C loop appends to as well, without the GIL:
a raw entry per audited request it served, with what is taken at record time (the clocks,
the command name's bytes, the pid, flags, errno, VM and path), made the very compact record
the dispatch makes on this ring's thread, as it drains (hvfs/_native/detached.h). One FIFO
under one mutex: the order is the order the appends took it, Python's or C's, Flush marks
among them; the C loop appends before it answers. Its full-ring wait (``FULL_WAIT``) and
lost count per VM are the same in C; its wake-ups end ``Ring.wait``, this thread's sleep.
"""

from __future__ import annotations

import collections
import functools
import itertools
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from hvfs import _native, api
from hvfs.api import workers
from hvfs.api.compact import event_from_item, record_vm
from hvfs.api.events import Event, Record, lost_event, record_request

RING_CAPACITY = 1 << 14  # records waiting; a batch is INTERVAL of requests, far fewer
INTERVAL = 0.02  # seconds an event may wait for its batch (hvfs.client's sync polls at 10 ms)
FULL_WAIT = 0.05  # seconds a request may wait for room in a full ring before its event is lost
CHUNK = 32  # events a subscriber makes and deals with at a time
# Records a subscriber that takes them as they are (an audit) deals with at a time: its C
# writer formats a compact record in a tenth of a µs, and each write lets the GIL go to a
# request that then waits for it again (measured, audit_cpu.py: 256 took 0.25 to 0.9 µs less
# of an audited request than 32, the GIL held some 30 µs per batch).
RECORDS_CHUNK = 256
HAND_OUT = 4096  # records moved per hand-out at most
DETACHED_ENVIRONMENT = "HVFS_AUDIT_DETACHED"  # 0: the C loop records with the GIL, into a deque


def detached() -> bool:
    """Whether rings made now are record.c's Ring, which the C loop records to without the
    GIL: record.c is built and ``HVFS_AUDIT_DETACHED`` is not 0."""
    return _native.recorder is not None and os.environ.get(DETACHED_ENVIRONMENT, "1") != "0"


def make_sink() -> Any:
    """A bus's hold on its ring for the C loop (record.c's Sink; ``attach`` the ring's
    ``native``), or None where rings are not ``detached``. Typed Any: C, no stubs."""
    return _native.recorder.Sink() if detached() else None


class Flush:
    """A mark in the stream of events: ``done`` is set once every subscriber has dealt
    with the events recorded before it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self._left = 0
        self._lock = threading.Lock()

    def expect(self, parties: int) -> None:
        with self._lock:
            self._left = parties
            if parties == 0:
                self.done.set()

    def arrive(self) -> None:
        with self._lock:
            self._left -= 1
            if self._left <= 0:
                self.done.set()


Item = Record | Event | Flush  # a Record becomes an Event in the subscriber's thread
# The items, how many events were lost since, and the Flush marks among the items (none:
# the receivers need not look for them, a pass over every item in Python).
HandOut = Callable[[list[Item], int, tuple[Flush, ...]], None]
RecordServed = Callable[[str, api.Request, api.Response, int, str | None, tuple[str, ...]], None]


class EventRing:
    """Records to ``hand_out`` (called on the ring's thread with Events and Flush marks, in
    the order they were recorded, the count of events dropped since its last call, and
    the marks among them).
    Thread-safe; ``record`` never raises."""

    def __init__(self, hand_out: HandOut, *, capacity: int = RING_CAPACITY) -> None:
        self._hand_out = hand_out
        self._capacity = capacity
        self.nudge_at = capacity // 4  # the length at which a record wakes the thread
        # record.c's Ring (appended to by the C loop too), else a deque: typed Any, C, no stubs
        self.native: Any = _native.recorder.Ring(capacity, self.nudge_at, FULL_WAIT) if detached() else None
        self._ring: Any = collections.deque() if self.native is None else self.native
        self.deque = self._ring  # the same, for python_record_into
        if self.native is None:
            self._wake = threading.Event()
            self._wake_up: Callable[[], object] = self._wake.set
            self._sleep: Callable[[float], object] = functools.partial(_sleep_until_set, self._wake)
            self._take: Callable[[int], list[Item]] = functools.partial(_take_from_deque, self._ring)
        else:  # woken by C without the GIL: the Ring's own wait and wake
            self._wake_up, self._sleep, self._take = self.native.wake, self.native.wait, self.native.take
        self._stopping = False
        self._prompt = False
        # EventBus.record_served: one C call bound to this ring where built (its deque, its
        # bounds and ``prompt`` held in C), else python_record_into.
        self._recorder: Any = (  # typed Any: C, no stubs
            None if _native.recorder is None else _native.recorder.Recorder(self, self._ring, capacity, self.nudge_at)
        )
        self.record_served: RecordServed = (
            functools.partial(python_record_into, self) if self._recorder is None else self._recorder
        )
        self._lock = threading.Lock()
        self._lost: dict[str, int] = {}  # by VM, not yet said in the stream
        self._lost_total = 0
        # Flush marks recorded (under the lock, before the append) and handed out: a batch
        # holds one only while these differ, so that it is looked for only then.
        self._marks = self._marks_out = 0
        self._thread = workers.start(self._run, "hvfs-events")

    @property
    def capacity(self) -> int:
        """Records the ring holds at most."""
        return self._capacity

    @capacity.setter
    def capacity(self, capacity: int) -> None:
        self._capacity = capacity
        if self._recorder is not None:
            self._recorder.capacity = capacity  # the C recorder's own copy
        if self.native is not None:
            self.native.capacity = capacity  # the C loop's

    @property
    def prompt(self) -> bool:
        """Whether a subscriber wants each event as soon as it can: wake per record."""
        return self._prompt

    @prompt.setter
    def prompt(self, prompt: bool) -> None:
        self._prompt = prompt
        if self._recorder is not None:
            self._recorder.prompt = prompt  # the C recorder's own copy
        if self.native is not None:
            self.native.prompt = prompt  # the C loop's

    def record(self, record: Item) -> None:
        """Queue ``record`` (a request's, a service's Event, a Flush). On a full ring wait a
        little, then drop and count it (a Flush is never dropped)."""
        ring = self._ring
        if isinstance(record, Flush):
            with self._lock:
                self._marks += 1
        size = len(ring)
        if size >= self._capacity and not isinstance(record, Flush) and not self._wait_for_room():
            vm = record_vm(record)
            with self._lock:
                self._lost[vm] = self._lost.get(vm, 0) + 1
                self._lost_total += 1
            return
        ring.append(record)
        if self._prompt or size == self.nudge_at or isinstance(record, Flush):
            self._wake_up()

    def recorded(
        self,
        size: int,
        vm: str,
        request: api.Request,
        response: api.Response,
        began: int,
        answered_by: str | None,
        paths: tuple[str, ...],
    ) -> None:
        """After a served request's record went in where the ring held ``size`` (wake the
        thread if that is due), or did not (-1: the ring was full): wait a little for room
        and record it again, else drop and count it, as ``record`` does."""
        if size < 0:
            if self._wait_for_room():
                size = record_request(self.deque, self._capacity, vm, request, response, began, answered_by, paths)
            if size < 0:
                with self._lock:
                    self._lost[vm] = self._lost.get(vm, 0) + 1
                    self._lost_total += 1
                return
        if self._prompt or size == self.nudge_at:
            self._wake_up()

    def recorded_record(self, size: int, vm: str, record: bytes) -> None:
        """``recorded`` of a record the driver's C loop made (hvfs/_native/record_raw.h): wake
        the thread if due, or (-1: the ring was full) wait a little for room and append it,
        else drop and count it."""
        if size < 0:
            if not self._wait_for_room():
                with self._lock:
                    self._lost[vm] = self._lost.get(vm, 0) + 1
                    self._lost_total += 1
                return
            size = len(self._ring)
            self._ring.append(record)
        if self._prompt or size == self.nudge_at:
            self._wake_up()

    @property
    def lost(self) -> int:
        """Events dropped because the ring was full."""
        with self._lock:
            return self._lost_total + (0 if self.native is None else self.native.lost)

    def __len__(self) -> int:
        return len(self._ring)

    def stop(self, timeout: float) -> bool:
        """Hand out what is recorded, then end the thread; False if it did not end in time."""
        self._stopping = True
        if self.native is not None:
            self.native.stopping = True  # the C loop waits no more for room
        self._wake_up()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _wait_for_room(self) -> bool:
        self._wake_up()
        deadline = time.monotonic() + FULL_WAIT
        while len(self._ring) >= self._capacity:
            if self._stopping or time.monotonic() > deadline:
                return False
            time.sleep(0.001)
        return True

    def _run(self) -> None:
        while True:
            self._sleep(INTERVAL)
            stopping = self._stopping  # read before draining: what comes after is not waited for
            self._drain()
            if stopping:
                return

    def _drain(self) -> None:
        ring = self._ring
        while True:
            count = min(len(ring), HAND_OUT)
            # Read after the count: a mark among the items taken was counted before it went in.
            marked = self._marks != self._marks_out
            items = self._take(count)  # only this thread takes
            marks: tuple[Flush, ...] = ()
            if marked:
                marks = tuple(item for item in items if type(item) is Flush)
                self._marks_out += len(marks)
            lost: dict[str, int] = {}
            if self._lost:
                with self._lock:
                    lost, self._lost = self._lost, {}
            if self.native is not None:  # the C loop's, counted in C
                for vm, dropped in self.native.take_lost().items():
                    lost[vm] = lost.get(vm, 0) + dropped
            items.extend(lost_event(vm, count) for vm, count in lost.items())
            if not items:
                return
            self._hand_out(items, sum(lost.values()), marks)


def python_record_into(
    ring: EventRing,
    vm: str,
    request: api.Request,
    response: api.Response,
    began: int,
    answered_by: str | None,
    paths: tuple[str, ...],
) -> None:
    """A served request's record into ``ring`` (``began``: time.monotonic_ns() when it
    arrived): hvfs/_native/recorder.h's ``Recorder`` in Python, the fallback."""
    # The ring's own fields, not its properties: the fallback's every request reads them.
    size = record_request(ring.deque, ring._capacity, vm, request, response, began, answered_by, paths)
    if size < 0 or size == ring.nudge_at or ring._prompt:
        ring.recorded(size, vm, request, response, began, answered_by, paths)


def _sleep_until_set(wake: threading.Event, timeout: float) -> None:
    wake.wait(timeout)
    wake.clear()


def _take_from_deque(ring: collections.deque[Item], count: int) -> list[Item]:
    # starmap calls popleft without a Python step per item
    return list(itertools.starmap(ring.popleft, itertools.repeat((), count)))


def as_event(item: Record | Event) -> Event:
    """The event of a record (made here, on the subscriber's thread), or the event itself."""
    return item if isinstance(item, Event) else event_from_item(item)
