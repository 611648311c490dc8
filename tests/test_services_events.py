"""The event bus: events from requests, hooks before the answer, subscribers after it."""

from __future__ import annotations

import errno
import os
import threading
import time

import pytest

from hvfs import api
from hvfs.api.events import LOST, Event, comm_of, event_for, request_flags, request_paths
from hvfs.api.hooks import EventBus, HookAnswer
from hvfs.services.describe import is_read, operations, parse_errno

CALLER = api.Caller(vm="vm1", pid=4242)


def path(name: str, base: str = "/") -> api.VmPath:
    return api.VmPath(base=base, name=name)


def an_event(n: int = 0, **changes: object) -> Event:
    fields: dict[str, object] = {
        "time": 1714564800.25 + n,
        "vm": "vm1",
        "pid": 7,
        "comm": "sqlite3",
        "operation": "open",
        "paths": ("/data/x.db",),
        "flags": os.O_RDWR | os.O_CREAT,
        "result": "ok",
        "value": None,
        "duration_us": 85,
    }
    return Event(**{**fields, **changes})  # type: ignore[arg-type]


def test_an_event_round_trips_through_json() -> None:
    event = an_event(paths=("/a b/é", "/x\n"), result="EIO", value=3, answered_by="faults")
    line = event.to_json()
    assert "\n" not in line
    assert Event.from_json(line) == event
    assert Event.from_json(line.encode()) == event


@pytest.mark.parametrize("line", ["", "[]", '{"vm": "x"}', '{"time": 1}', "not json", an_event().to_json()[:-1]])
def test_what_is_not_an_event_is_refused(line: str) -> None:
    with pytest.raises(ValueError, match="not an hvfs event"):
        Event.from_json(line)


@pytest.mark.parametrize(
    ("request_", "paths", "flags"),
    [
        (api.Open(caller=CALLER, path=path("x", "/home"), flags=os.O_WRONLY), ("/home/x",), os.O_WRONLY),
        (api.Rename(caller=CALLER, old=path("/a"), new=path("b", "/d"), flags=1), ("/a", "/d/b"), 1),
        (api.Link(caller=CALLER, old=api.OpenFile(fd=3, path="/tmp/f"), new=path("/l")), ("/tmp/f", "/l"), 0),
        (api.Symlink(caller=CALLER, target="../t", path=path("/s")), ("/s", "../t"), 0),
        (api.Chmod(caller=CALLER, target=api.OpenFile(fd=3, path="/o"), mode=0o600), ("/o",), 0),
        (api.Access(caller=CALLER, path=path("/p"), mode=2, flags=0x200), ("/p",), 0x200),
        (api.Mkdir(caller=CALLER, path=path("/m"), mode=0o755), ("/m",), 0),
        (api.Unlink(caller=CALLER, path=path("/u")), ("/u",), 0),
    ],
)
def test_each_request_maps_to_its_paths_and_flags(request_: api.Request, paths: tuple[str, ...], flags: int) -> None:
    assert request_paths(request_) == paths
    assert request_flags(request_) == flags


def test_an_open_for_reading_is_also_a_read() -> None:
    reading = api.Open(caller=CALLER, path=path("/f"), flags=os.O_RDONLY)
    assert is_read(reading)
    assert operations(reading) == ("open", "read")
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC, os.O_RDONLY | os.O_CREAT, os.O_PATH):
        assert operations(api.Open(caller=CALLER, path=path("/f"), flags=flags)) == ("open",)


def test_errnos_parse_by_name_or_number() -> None:
    assert parse_errno("ENOSPC") == errno.ENOSPC
    assert parse_errno("edquot") == errno.EDQUOT
    assert parse_errno("5") == 5
    for bad in ("EWHAT", "O_RDONLY", ""):
        with pytest.raises(ValueError, match="unknown errno"):
            parse_errno(bad)


@pytest.mark.parametrize(
    ("response", "result", "value"),
    [
        (api.Errno(errno.ENOENT), "ENOENT", None),
        (api.Continue(), "continued", None),
        (api.Value(0), "ok", 0),
        (api.Data(b"target"), "ok", 6),
        (api.Fd(fd=9, cloexec=True), "ok", None),
    ],
)
def test_an_event_records_the_answer(response: api.Response, result: str, value: int | None) -> None:
    request = api.Unlink(caller=CALLER, path=path("/gone"))
    event = event_for("vm1", request, response, time=12.5, duration_us=40, comm="rm", answered_by=None)
    assert (event.result, event.value) == (result, value)
    assert (event.vm, event.pid, event.comm, event.operation, event.paths) == ("vm1", 4242, "rm", "unlink", ("/gone",))
    assert (event.time, event.duration_us) == (12.5, 40)


def test_comm_names_a_live_process_and_nothing_for_a_dead_one() -> None:
    with open("/proc/self/comm") as f:
        assert comm_of(os.getpid()) == f.read().strip()
    assert comm_of(2**22 + 1) == ""  # above pid_max's ceiling: never a process


class Answering:
    def __init__(self, name: str, response: api.Response | None) -> None:
        self.name, self.response = name, response
        self.seen: list[tuple[str, api.Request]] = []

    def before(self, vm: str, request: api.Request) -> api.Response | None:
        self.seen.append((vm, request))
        return self.response


def test_hooks_run_in_order_and_the_first_answer_wins() -> None:
    bus = EventBus()
    passing, vetoing, late = Answering("pass", None), Answering("veto", api.Errno(errno.EPERM)), Answering("late", None)
    for hook in (passing, vetoing, late):
        bus.add_hook(hook)
    request = api.Mkdir(caller=CALLER, path=path("/d"), mode=0o755)
    assert bus.run_hooks("vm1", request) == HookAnswer(api.Errno(errno.EPERM), "veto")
    assert passing.seen == [("vm1", request)]
    assert vetoing.seen == [("vm1", request)]
    assert late.seen == []
    bus.remove_hook(vetoing)
    assert bus.run_hooks("vm1", request) is None
    assert late.seen == [("vm1", request)]
    assert bus.statistics().answered == 1


def test_a_hooks_exception_reaches_the_dispatch() -> None:
    class Failing:
        name = "failing"

        def before(self, vm: str, request: api.Request) -> api.Response | None:
            raise OSError(errno.EIO, "broken")

    bus = EventBus()
    bus.add_hook(Failing())
    with pytest.raises(OSError, match="broken"):
        bus.run_hooks("vm1", api.Unlink(caller=CALLER, path=path("/x")))


class Replacing(Answering):
    """A hook that also sees responses, replacing them with ``replacement``."""

    def __init__(self, name: str, replacement: api.Response | None) -> None:
        super().__init__(name, None)
        self.replacement = replacement
        self.responses: list[api.Response] = []

    def after(self, vm: str, request: api.Request, response: api.Response) -> api.Response | None:
        self.responses.append(response)
        if isinstance(self.replacement, Exception):
            raise self.replacement
        return self.replacement


def fd_response() -> api.Fd:
    read, write = os.pipe()
    os.close(write)
    return api.Fd(read, cloexec=True)


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_after_hooks_see_the_response_and_a_replaced_fd_is_closed() -> None:
    bus = EventBus()
    before_only, passing, vetoing, late = (
        Answering("before-only", None),
        Replacing("pass", None),
        Replacing("veto", api.Errno(errno.EACCES)),
        Replacing("late", None),
    )
    for hook in (before_only, passing, vetoing, late):
        bus.add_hook(hook)
    request = api.Open(caller=CALLER, path=path("/f"), flags=os.O_RDONLY)
    handed = fd_response()
    assert bus.run_after_hooks("vm1", request, handed) == HookAnswer(api.Errno(errno.EACCES), "veto")
    assert not is_open(handed.fd)  # the bus closed it: the VM never gets it
    assert passing.responses == [handed] and vetoing.responses == [handed]
    assert late.responses == [api.Errno(errno.EACCES)]  # later hooks see the replacement
    assert before_only.seen == []  # a hook without ``after`` is not asked
    bus.remove_hook(vetoing)
    kept = fd_response()
    assert bus.run_after_hooks("vm1", request, kept) is None
    assert is_open(kept.fd)
    os.close(kept.fd)
    assert bus.statistics().answered == 1


def test_an_after_hooks_exception_reaches_the_dispatch_and_the_fd_is_closed() -> None:
    bus = EventBus()
    bus.add_hook(Replacing("failing", OSError(errno.EIO, "broken")))  # type: ignore[arg-type]
    handed = fd_response()
    with pytest.raises(OSError, match="broken"):
        bus.run_after_hooks("vm1", api.Open(caller=CALLER, path=path("/f"), flags=os.O_RDONLY), handed)
    assert not is_open(handed.fd)


def test_a_slow_subscriber_never_blocks_publishing_and_its_drops_are_counted() -> None:
    bus = EventBus()
    gate, entered = threading.Event(), threading.Event()
    slow_got: list[Event] = []
    fast_got: list[Event] = []

    def slow(event: Event) -> None:
        entered.set()
        gate.wait(10)
        slow_got.append(event)

    bus.subscribe(slow, name="slow", queue_size=4)
    bus.subscribe(fast_got.append, name="fast", queue_size=100)
    bus.publish(an_event(0))
    assert entered.wait(5)  # the slow one holds event 0; its queue is empty
    started = time.monotonic()
    for n in range(1, 11):
        bus.publish(an_event(n))
    assert time.monotonic() - started < 0.5
    deadline = time.monotonic() + 5  # events are handed out in batches, a little later
    while len(fast_got) < 11 and time.monotonic() < deadline:
        time.sleep(0.01)
    stats = {s.name: s for s in bus.statistics().subscribers}
    assert stats["slow"].dropped == 6  # 4 fit in the queue
    assert stats["fast"].dropped == 0
    gate.set()
    assert bus.close(timeout=5)
    assert [e.time for e in slow_got if e.operation != LOST] == [an_event(n).time for n in range(5)]
    assert [(e.vm, e.value) for e in slow_got if e.operation == LOST] == [("vm1", 6)]  # the gap is said
    assert [e.time for e in fast_got] == [an_event(n).time for n in range(11)]
    final = bus.statistics()
    assert final.subscribers == ()  # closed: nothing is delivered any more
    bus.publish(an_event(99))
    assert len(fast_got) == 11


def test_a_failing_subscriber_is_counted_and_keeps_receiving(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    got: list[int] = []

    def picky(event: Event) -> None:
        if event.pid == 13:
            raise RuntimeError("unlucky")
        got.append(event.pid)

    subscription = bus.subscribe(picky, name="picky")
    for pid in (1, 13, 2):
        bus.publish(an_event(pid=pid))
    stats = subscription.statistics
    assert bus.unsubscribe(subscription)
    assert got == [1, 2]
    assert (stats().delivered, stats().failed) == (2, 1)
    assert "unlucky" in caplog.text
