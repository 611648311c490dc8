"""The event bus: synchronous hooks before and after the handler, asynchronous subscribers
after the answer.

Integration (the manager's dispatch, for every request of every VM)::

    started, t0 = time.time(), time.monotonic_ns()
    answer = bus.run_hooks(vm.name, request)          # before the handler; may veto
    if answer is None:
        response = HANDLERS[type(request)](vm, request)
        answer = bus.run_after_hooks(vm.name, request, response)  # may replace the response
    response = answer.response if answer else response
    if bus.has_subscribers:
        bus.publish(event_for(vm.name, request, response, time=started,
                              duration_us=(time.monotonic_ns() - t0) // 1000,
                              comm=comm_of(request.caller.pid),
                              answered_by=answer.hook if answer else None))

- ``run_hooks`` and ``run_after_hooks`` run in the dispatching thread, on the hot path,
  and act as the manager: call them inside the dispatch's one try/except but outside
  ``creds.acting_as``. The contract a hook implements is ``Hook`` and ``ResponseHook``
  below; a hook's exception propagates, so the dispatch turns an OSError into its errno
  and anything else into EIO, as for handlers.
- ``publish`` never blocks and never raises: each subscriber has a bounded queue drained
  by its own thread; when it is full the event is dropped for that subscriber and
  counted (``statistics()``). A slow audit disk never delays a VM.
- ``close()`` at manager exit drains every queue (bounded by a timeout) and stops the
  threads; after it, ``publish`` drops everything.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

from hvfs import api
from hvfs.api.messages import operation
from hvfs.services.describe import errno_name, request_flags, request_paths

log = logging.getLogger("hvfs.services")


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
        """One line of JSON, without a newline."""
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str | bytes) -> Event:
        """The event that to_json wrote. Raises ValueError for anything else."""
        try:
            fields: dict[str, Any] = json.loads(line)
            event = cls(**{**fields, "paths": tuple(fields["paths"])})
        except (TypeError, KeyError, json.JSONDecodeError) as e:
            raise ValueError(f"not an hvfs event: {e}") from None
        if not all(isinstance(p, str) for p in event.paths) or not isinstance(event.operation, str):
            raise ValueError("not an hvfs event: bad field types")
        return event


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
) -> Event:
    """The event of ``request`` from ``vm`` answered with ``response``; paths and flags as
    hvfs.services.describe maps each request type."""
    result, value = _result(response)
    return Event(
        time=time,
        vm=vm,
        pid=request.caller.pid,
        comm=comm,
        operation=operation(request),
        paths=request_paths(request),
        flags=request_flags(request),
        result=result,
        value=value,
        duration_us=duration_us,
        answered_by=answered_by,
    )


def comm_of(pid: int) -> str:
    """The command name of ``pid`` (in the manager's pid namespace), "" if it is gone.
    A read of /proc costs some microseconds: call it only when the bus has subscribers."""
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().rstrip(b"\n").decode(errors="replace")
    except OSError:
        return ""


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


@dataclass(frozen=True, slots=True)
class HookAnswer:
    response: api.Response
    hook: str


@dataclass(frozen=True, slots=True)
class SubscriberStatistics:
    name: str
    delivered: int
    dropped: int  # the queue was full when the event was published
    failed: int  # the subscriber raised; logged, and it keeps receiving
    queued: int


@dataclass(frozen=True, slots=True)
class BusStatistics:
    published: int
    answered: int  # requests a hook answered, before the handler or instead of its response
    subscribers: tuple[SubscriberStatistics, ...]

    @property
    def dropped(self) -> int:
        return sum(s.dropped for s in self.subscribers)


_STOP = object()


def _responding(hooks: tuple[Hook, ...]) -> tuple[ResponseHook, ...]:
    return tuple(h for h in hooks if isinstance(h, ResponseHook))


def _close_fd(response: api.Response) -> None:
    if isinstance(response, api.Fd):
        with contextlib.suppress(OSError):
            os.close(response.fd)


class Subscription:
    """One asynchronous subscriber: a bounded queue and the thread that drains it."""

    def __init__(self, name: str, deliver: Callable[[Event], None], queue_size: int) -> None:
        self.name = name
        self._deliver = deliver
        self._queue: queue.Queue[object] = queue.Queue(queue_size)
        self._lock = threading.Lock()
        self._delivered = self._dropped = self._failed = 0
        self._thread = threading.Thread(target=self._drain, name=f"hvfs-events-{name}", daemon=True)
        self._thread.start()

    def offer(self, event: Event) -> None:
        """Queue ``event`` without blocking; drop and count it when the queue is full."""
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            with self._lock:
                self._dropped += 1

    def stop(self, timeout: float) -> bool:
        """Deliver what is queued, then end the thread; False if it did not end in time."""
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def statistics(self) -> SubscriberStatistics:
        with self._lock:
            return SubscriberStatistics(self.name, self._delivered, self._dropped, self._failed, self._queue.qsize())

    def _drain(self) -> None:
        while (event := self._queue.get()) is not _STOP:
            assert isinstance(event, Event)
            try:
                self._deliver(event)
            except Exception:
                log.exception("event subscriber %s failed on %s", self.name, event)
                with self._lock:
                    self._failed += 1
                continue
            with self._lock:
                self._delivered += 1


class EventBus:
    """Hooks and subscribers shared by every VM of a manager. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Replaced, never mutated, so the hot path reads them without the lock.
        self._hooks: tuple[Hook, ...] = ()
        self._after_hooks: tuple[ResponseHook, ...] = ()  # the hooks that have an ``after``
        self._subscriptions: tuple[Subscription, ...] = ()
        self._published = self._answered = 0

    def add_hook(self, hook: Hook) -> None:
        with self._lock:
            self._hooks = (*self._hooks, hook)
            self._after_hooks = _responding(self._hooks)

    def remove_hook(self, hook: Hook) -> None:
        with self._lock:
            self._hooks = tuple(h for h in self._hooks if h is not hook)
            self._after_hooks = _responding(self._hooks)

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

    def subscribe(self, deliver: Callable[[Event], None], *, name: str, queue_size: int = 4096) -> Subscription:
        """Call ``deliver`` with every event published from now on, in order, from a thread
        of its own. Events that find its queue full are dropped and counted."""
        subscription = Subscription(name, deliver, queue_size)
        with self._lock:
            self._subscriptions = (*self._subscriptions, subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription, *, timeout: float = 5.0) -> bool:
        """Stop delivering to ``subscription`` after its queued events; False on timeout."""
        with self._lock:
            self._subscriptions = tuple(s for s in self._subscriptions if s is not subscription)
        return subscription.stop(timeout)

    @property
    def has_subscribers(self) -> bool:
        """Whether publishing reaches anyone: the dispatch can skip building events."""
        return bool(self._subscriptions)

    def publish(self, event: Event) -> None:
        """Offer ``event`` to every subscriber. Never blocks, never raises."""
        subscriptions = self._subscriptions
        with self._lock:
            self._published += 1
        for subscription in subscriptions:
            subscription.offer(event)

    def statistics(self) -> BusStatistics:
        with self._lock:
            published, answered, subscriptions = self._published, self._answered, self._subscriptions
        return BusStatistics(published, answered, tuple(s.statistics() for s in subscriptions))

    def close(self, *, timeout: float = 5.0) -> bool:
        """Drain and stop every subscriber; False if one did not finish within ``timeout``."""
        with self._lock:
            subscriptions, self._subscriptions = self._subscriptions, ()
        return all([s.stop(timeout) for s in subscriptions])
