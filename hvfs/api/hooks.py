"""Hooks: how services take part in the requests of the VMs they serve.

The manager owns these contracts and calls them; services implement them and never see
the manager itself (they get ``Files``, below). An ``EventBus`` holds the services of one
group of VMs (one ``hvfs run``, one project): one manager may serve VMs of several such
groups, each VM's VmContext names its bus or none, and a VM without a bus pays nothing
for the services of others. The manager's one dispatch place does, for every request::

    bus = vm.bus                                            # None: straight to the handler
    answer = bus.run_hooks(vm.name, request)                # before the handler; may answer
    if answer is None:
        response = HANDLERS[type(request)](vm, request)
        answer = bus.run_after_hooks(vm.name, request, response)  # may replace the response
    ...                                                     # the answer goes back
    if bus.has_subscribers:                                 # the event's makings, a tuple,
        bus.record_served(vm.name, request, response, ...)  # in one C call; never raises

A service takes part in four ways:

- ``Hook.before``: synchronous, before the handler, in the dispatching thread; may answer
  instead of it (an injected fault, a scanner's veto of an exec, a backup's save of what
  an unlink destroys).
- ``ResponseHook.after``: synchronous, after the handler; may replace its response (a
  scanner judging the very fd an open hands out). A replaced fd is closed by the bus.
- ``subscribe``: every event, after the answer, on a thread of the subscriber's own with
  a bounded queue (an audit log, a backup's bookkeeping), in batches (hvfs.api.ring makes
  the events off the request path); a slow subscriber loses events, counted and said in
  the stream by a "lost" event, and never delays a VM. ``flush`` waits for what is due.
- ``on_close``: a VM closed a file it had opened for writing (``close`` is not trapped:
  the manager watches the files it hands out); off the request path.

Hooks run as the manager, outside the caller's credentials, inside the dispatch's one
try/except: an OSError a hook raises becomes its errno, anything else EIO, as for handlers.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from hvfs import api, deferred
from hvfs.api import workers
from hvfs.api.compact import record_vm
from hvfs.api.events import Event, Record, lost_event
from hvfs.api.ring import CHUNK, RECORDS_CHUNK, EventRing, Flush, Item, RecordServed, as_event, make_sink

log = deferred.logger("hvfs.services")

CloseWatcher = Callable[[str, str, int], object]  # (vm, path, fd), its result unused: see EventBus.on_close


class Hook(Protocol):
    """A synchronous service, called before a request is answered.

    Hooks are called in the order they were added. ``before`` sees the request before
    the handler: the first hook that answers wins, and neither the handler nor later
    hooks see the request (nor does any ``after``). A hook that also implements
    ``ResponseHook.after`` sees what the handler answered."""

    name: str  # names the hook in events (answered_by) and logs

    def before(self, vm: str, request: api.Request) -> api.Response | None:
        """None to let the request go on; a response (usually api.Errno) to answer it
        instead of the handler. Runs in the dispatching thread: keep it fast."""
        ...


@runtime_checkable
class ResponseHook(Hook, Protocol):
    """A hook that also judges the handler's response before it goes back to the VM:
    the very file an ``api.Fd`` names, which the VM will get whatever it changes in its
    memory meanwhile (a scanner judges that, not the path it asked for)."""

    def after(self, vm: str, request: api.Request, response: api.Response) -> api.Response | None:
        """None to let ``response`` go back; a response (usually api.Errno) to answer
        instead. Every ResponseHook sees the response its predecessors let through (or
        the one that replaced it). The hook must not close or keep an ``api.Fd``'s fd:
        the bus closes the fd of a response that a hook replaced, or whose hook raised."""
        ...


class Files(Protocol):
    """What a service may ask of the manager: files of a VM's writable view, opened by
    the manager with its own credentials (never the caller's)."""

    def open_file(self, vm: str, path: str | api.VmPath) -> int | None:
        """The regular file ``path`` names in VM ``vm`` (symlinks followed), opened
        read-only, or None (no such VM or file, or not a regular file). The caller closes it."""
        ...

    def locate_file(self, vm: str, path: str | api.VmPath) -> tuple[int, int, str] | None:
        """As open_file, with the file's parent directory opened and its name there (for
        a service that may move it away): (fd, directory fd, name). The caller closes both."""
        ...

    def wait_closes(self) -> None:
        """Return once the closes the kernel has reported so far are delivered (to
        ``on_close`` watchers): before services that receive them are closed."""
        ...


@dataclass(frozen=True, slots=True)
class HookAnswer:
    """A hook's answer to a request, and the hook that gave it."""

    response: api.Response
    hook: str


@dataclass(frozen=True, slots=True)
class SubscriberStatistics:
    """One subscriber's events: delivered, dropped (its queue full), failed, and queued now."""

    name: str
    delivered: int
    dropped: int  # the queue was full when the event was published
    failed: int  # the subscriber raised; logged, and it keeps receiving
    queued: int


@dataclass(frozen=True, slots=True)
class BusStatistics:
    """The bus's counts since the manager started, and each subscriber's (``hvfs stat``)."""

    published: int  # events handed to the subscribers (recorded requests' and published ones)
    answered: int  # requests a hook answered, before the handler or instead of its response
    subscribers: tuple[SubscriberStatistics, ...]
    lost: int = 0  # events the bus dropped before any subscriber saw them (a full ring)

    @property
    def dropped(self) -> int:
        """Deliveries missed: by each subscriber, the bus's own losses included."""
        return sum(s.dropped for s in self.subscribers) if self.subscribers else self.lost


def _record_nothing(
    vm: str, request: api.Request, response: api.Response, began: int, answered_by: str | None, paths: tuple[str, ...]
) -> None:
    """EventBus.record_served of a bus without subscribers."""


def _responding(hooks: tuple[Hook, ...]) -> tuple[ResponseHook, ...]:
    return tuple(h for h in hooks if isinstance(h, ResponseHook))


def _close_fd(response: api.Response) -> None:
    if isinstance(response, api.Fd):
        with contextlib.suppress(OSError):
            os.close(response.fd)


class Subscription:
    """One asynchronous subscriber: a bounded queue of batches and the thread that drains
    it. ``deliver`` takes one event, or with ``batch`` a list of them (an audit writes a
    batch with a few writes), or with ``records`` a list of what was recorded as it was:
    Events and the ring's Records, which ``hvfs.api.compact.item_line`` makes into the
    event's line without the Event."""

    def __init__(
        self,
        name: str,
        deliver: Callable[[Any], None],
        queue_size: int,
        *,
        batch: bool = False,
        records: bool = False,
    ) -> None:
        self.name = name
        self._deliver = deliver
        self._batch = batch or records
        self._records = records
        self._size = queue_size  # in events
        # Batches, each with the count of Flush marks in it; None: the end.
        self._queue: queue.SimpleQueue[tuple[list[Item], int] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._delivered = self._dropped = self._failed = self._queued = 0
        self._unsaid: dict[str, int] = {}  # events dropped here, by VM, not yet said in the stream
        self._thread = workers.start(self._drain, f"hvfs-events-{name}")

    def offer(self, items: list[Item], marks: int = 0) -> None:
        """Queue ``items`` (``marks`` of them Flush marks) without blocking; drop and
        count the events that do not fit. The subscriber's thread owns the list now."""
        with self._lock:
            room = self._size - self._queued
            if room >= len(items):  # the usual case: all fit, marks and all (a mark takes no room)
                self._queued += len(items) - marks
                self._queue.put((items, marks))
                return
            kept: list[Item] = []
            for item in items:
                if isinstance(item, Flush):
                    kept.append(item)
                elif room > 0:
                    room -= 1
                    kept.append(item)
                else:
                    self._dropped += 1
                    vm = record_vm(item)
                    self._unsaid[vm] = self._unsaid.get(vm, 0) + 1
            self._queued = self._size - room
        if kept:
            self._queue.put((kept, marks))

    def lost(self, count: int) -> None:
        """``count`` events never reached this subscriber (the bus dropped them)."""
        with self._lock:
            self._dropped += count

    def stop(self, timeout: float) -> bool:
        """Deliver what is queued, then end the thread; False if it did not end in time."""
        self._queue.put(None)  # the end
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def statistics(self) -> SubscriberStatistics:
        with self._lock:
            return SubscriberStatistics(self.name, self._delivered, self._dropped, self._failed, self._queued)

    def _drain(self) -> None:
        while True:
            batch = self._queue.get()
            with self._lock:
                unsaid, self._unsaid = self._unsaid, {}
            events = [lost_event(vm, count) for vm, count in unsaid.items()]  # after what was kept before them
            if batch is None:
                self._deliver_all(events)
                return
            items, marked = batch
            with self._lock:
                self._queued -= len(items) - marked
            if not marked:  # the usual batch: no pass over it in Python to look for marks
                self._deliver_all(events, items)  # type: ignore[arg-type]
                continue
            marks = [i for i, item in enumerate(items) if type(item) is Flush]
            start = 0
            for at in marks:  # what came before a mark is dealt with before it arrives
                self._deliver_all(events, items[start:at])  # type: ignore[arg-type]
                events = []
                items[at].arrive()  # type: ignore[union-attr]
                start = at + 1
            self._deliver_all(events, items[start:] if start else items)  # type: ignore[arg-type]

    def _deliver_all(self, events: list[Event], pending: Sequence[Record | Event] = ()) -> None:
        """Deliver ``events``, then ``pending`` made into events CHUNK at a time (as they are,
        RECORDS_CHUNK at a time)."""
        if events:
            self._deliver_events(events)
        step = RECORDS_CHUNK if self._records else CHUNK
        for start in range(0, len(pending), step):
            chunk = pending[start : start + step]
            self._deliver_events(list(chunk) if self._records else [as_event(item) for item in chunk])

    def _deliver_events(self, events: list[Event] | list[Record | Event]) -> None:
        if self._batch:
            self._call(events, len(events))
            return
        for event in events:
            self._call(event, 1)

    def _call(self, what: object, count: int) -> None:
        try:
            self._deliver(what)
        except Exception:
            log.exception("event subscriber %s failed on %s", self.name, what if count == 1 else f"{count} events")
            with self._lock:
                self._failed += count
            return
        with self._lock:
            self._delivered += count


class EventBus:
    """The hooks, subscribers and close watchers of one group of VMs. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Replaced, never mutated, so the hot path reads them without the lock.
        self._hooks: tuple[Hook, ...] = ()
        self._after_hooks: tuple[ResponseHook, ...] = ()  # the hooks that have an ``after``
        self._subscriptions: tuple[Subscription, ...] = ()
        self._close_watchers: tuple[tuple[str, CloseWatcher], ...] = ()
        self._published = self._answered = 0
        self._ring: EventRing | None = None  # made with the first subscriber
        # ``record`` of a request the dispatch served (``began``: time.monotonic_ns() when it
        # arrived), bound to the ring: the clocks, the command name, the record and its place
        # in the ring in one C call, no Python (hvfs/_native/record.c; hvfs.api.ring's
        # python_record_into where it is not built). Never raises; waits only on a full ring.
        self.record_served: RecordServed = _record_nothing
        self._lost = 0
        # Read by the dispatch once per request, as plain attributes (a property is a Python
        # frame): whether it must call the hooks and watch closes at all (``hooked``: an
        # audit alone has neither), and whether a request's event is recorded (``audited``).
        self.hooked = False
        self.audited = False
        # Read by the driver's C loop (hvfs.intercept.served_stat): [0] 1 while neither holds,
        # when it serves a strict VM's plain stats and opens itself; [1] 1 while the bus is
        # audited and not hooked, when it serves those Python names by their text and records
        # their events itself (hvfs/_native/served_audit.h): a hook sees every request.
        self.quiet = bytearray(b"\x01\x00")
        # The C loop's hold on the ring (hvfs/_native/ring.h's Sink; None: it records with the
        # GIL): made once and never replaced, for the loop borrows it for a serve call.
        self.sink = make_sink()

    def _changed(self) -> None:
        """Under the lock, after the hooks, subscribers or close watchers changed."""
        self.hooked = bool(self._hooks or self._close_watchers)
        self.audited = bool(self._subscriptions)
        self.quiet[0] = not (self.hooked or self.audited)
        self.quiet[1] = self.audited and not self.hooked

    def add_hook(self, hook: Hook) -> None:
        with self._lock:
            self._hooks = (*self._hooks, hook)
            self._after_hooks = _responding(self._hooks)
            self._changed()

    def remove_hook(self, hook: Hook) -> None:
        with self._lock:
            self._hooks = tuple(h for h in self._hooks if h is not hook)
            self._after_hooks = _responding(self._hooks)
            self._changed()

    def run_hooks(self, vm: str, request: api.Request) -> HookAnswer | None:
        """The first hook's answer, or None when every hook lets the request go on."""
        for hook in self._hooks:
            response = hook.before(vm, request)
            if response is not None:
                with self._lock:
                    self._answered += 1
                return HookAnswer(response, hook.name)
        return None

    def run_after_hooks(self, vm: str, request: api.Request, response: api.Response) -> HookAnswer | None:
        """The last replacement a ResponseHook made of the handler's ``response``, or None
        when every hook lets it go back. A replaced (or, on an exception, abandoned)
        ``api.Fd`` is closed here, so that no hook can leak it."""
        answer = None
        current = response
        for hook in self._after_hooks:
            try:
                replaced = hook.after(vm, request, current)
            except BaseException:
                _close_fd(current)
                raise
            if replaced is not None and replaced is not current:
                _close_fd(current)
                current = replaced
                answer = HookAnswer(replaced, hook.name)
        if answer is not None:
            with self._lock:
                self._answered += 1
        return answer

    def subscribe(
        self,
        deliver: Callable[[Any], None],
        *,
        name: str,
        queue_size: int = 4096,
        batch: bool = False,
        records: bool = False,
        prompt: bool = False,
    ) -> Subscription:
        """Call ``deliver`` with every event published from now on, in order, from a thread
        of its own (with ``batch``, with lists of events). Events that find its queue full
        are dropped and counted, and a "lost" event says so in their place. Events come in
        batches, up to hvfs.api.ring.INTERVAL late; ``prompt`` asks for each as soon as
        the ring's thread can (a wake-up per request: for a subscriber that reads the VM's
        files as the event names them, which may be different ones a little later).
        ``records``: lists of Events and the ring's Records as they were recorded (see
        Subscription), for a subscriber that needs only each event's line."""
        subscription = Subscription(name, deliver, queue_size, batch=batch, records=records)
        with self._lock:
            self._subscriptions = (*self._subscriptions, subscription)
            if self._ring is None:
                self._ring = EventRing(self._hand_out)
                self.record_served = self._ring.record_served
                if self.sink is not None:
                    self.sink.attach(self._ring.native)
            self._ring.prompt = self._ring.prompt or prompt
            self._changed()
        return subscription

    def unsubscribe(self, subscription: Subscription, *, timeout: float = 5.0) -> bool:
        """Stop delivering to ``subscription`` after its queued events; False on timeout."""
        self.flush(timeout)
        with self._lock:
            self._subscriptions = tuple(s for s in self._subscriptions if s is not subscription)
            self._changed()
        return subscription.stop(timeout)

    @property
    def has_subscribers(self) -> bool:
        """Whether publishing reaches anyone: the dispatch can skip building events."""
        return bool(self._subscriptions)

    def record(
        self,
        vm: str,
        request: api.Request,
        response: api.Response,
        *,
        time: float,
        duration_us: int,
        comm: str,
        answered_by: str | None,
        paths: tuple[str, ...],
    ) -> None:
        """The event of a request, as ``event_for`` would make it, made later off the
        request path: what it needs, taken now. Never raises; waits only on a full ring
        (hvfs.api.ring)."""
        ring = self._ring
        if ring is not None:
            record: Record = (vm, request, response, time, duration_us, comm, answered_by, paths)
            ring.record(record)

    def publish(self, event: Event) -> None:
        """Offer ``event`` to every subscriber, after what was recorded before. Never
        raises; waits only on a full ring."""
        ring = self._ring
        if ring is not None:
            ring.record(event)

    def flush(self, timeout: float = 5.0) -> bool:
        """Return once every subscriber has dealt with the events recorded or published so
        far (an audit: they are in its file); False if that took longer than ``timeout``."""
        ring = self._ring
        if ring is None:
            return True
        mark = Flush()
        ring.record(mark)
        return mark.done.wait(timeout)

    def _hand_out(self, items: list[Item], lost: int, marks: tuple[Flush, ...]) -> None:
        """On the ring's thread: a batch to every subscriber, with the count of events the
        ring dropped since the last one (its "lost" events say which VM's), and the
        Flush marks among the items (the ring found them: no pass over the items here)."""
        subscriptions = self._subscriptions
        with self._lock:
            self._lost += lost
            self._published += len(items) - len(marks)
        for mark in marks:
            mark.expect(len(subscriptions))  # each arrives once it has dealt with what came before
        for i, subscription in enumerate(subscriptions):
            if lost:
                subscription.lost(lost)
            subscription.offer(items if i == len(subscriptions) - 1 else list(items), len(marks))

    def on_close(self, watcher: CloseWatcher, *, name: str) -> None:
        """Call ``watcher(vm, path, fd)`` when a VM of this bus closes a file it opened for
        writing (its last close: the content is complete). ``fd`` is the manager's own
        read-only fd on that file, valid during the call: read it, never close or keep it.
        Called on the manager's close thread, off the request path, in the order watchers
        were added; one that raises is logged and the others still run."""
        with self._lock:
            self._close_watchers = (*self._close_watchers, (name, watcher))
            self._changed()

    @property
    def watches_closes(self) -> bool:
        """Whether the manager must watch the files it hands out for writing."""
        return bool(self._close_watchers)

    def closed(self, vm: str, path: str, fd: int) -> None:
        """For the manager: deliver a close to every watcher. Never raises."""
        for name, watcher in self._close_watchers:
            try:
                watcher(vm, path, fd)
            except Exception:
                log.exception("close watcher %s failed for %s of VM %s", name, path, vm)

    def statistics(self) -> BusStatistics:
        with self._lock:
            published, answered, subscriptions, lost = (
                self._published, self._answered, self._subscriptions, self._lost
            )  # fmt: skip
        return BusStatistics(published, answered, tuple(s.statistics() for s in subscriptions), lost)

    def close(self, *, timeout: float = 5.0) -> bool:
        """Drain and stop every subscriber and forget the close watchers; False if a
        subscriber did not finish within ``timeout``. Publishing drops everything after."""
        with self._lock:
            ring, self._ring = self._ring, None
            self.record_served = _record_nothing
            if self.sink is not None:
                self.sink.attach(None)  # the C loop records nothing from now on, as the dispatch
        stopped = ring.stop(timeout) if ring is not None else True
        with self._lock:
            subscriptions, self._subscriptions = self._subscriptions, ()
            self._close_watchers = ()
            self._changed()
        return all([stopped, *[s.stop(timeout) for s in subscriptions]])
