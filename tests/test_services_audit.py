"""The audit log: events as JSON lines, read back with filters, followed live."""

from __future__ import annotations

import argparse
import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from hvfs.api.events import Event
from hvfs.api.hooks import EventBus
from hvfs.services.audit import AuditLog, EventFilter, add_events_command, read_events
from hvfs.services.commands import EXIT_HVFS


def an_event(n: int, *, vm: str = "vm1", operation: str = "open", paths: tuple[str, ...] = ("/data/a.db",)) -> Event:
    return Event(
        time=1714564800.0 + n,
        vm=vm,
        pid=100 + n,
        comm="tool",
        operation=operation,
        paths=paths,
        flags=0,
        result="ok",
        value=None,
        duration_us=n,
    )


MIXED = [
    an_event(0),
    an_event(1, vm="vm2"),
    an_event(2, operation="unlink", paths=("/data/b.txt",)),
    an_event(3, operation="rename", paths=("/tmp/x", "/data/c.db")),
    an_event(4, vm="vm2", operation="mkdir", paths=("/home/d",)),
]


def run_events(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="hvfs")
    add_events_command(parser.add_subparsers())
    args = parser.parse_args(["events", *argv])
    status: int = args.handler(args)
    return status


def write_log(path: Path, events: list[Event]) -> None:
    audit = AuditLog(str(path))
    for event in events:
        audit.write(event)
    audit.close()


def test_events_published_on_a_bus_reach_the_file_in_order(tmp_path: Path) -> None:
    audit = AuditLog(str(tmp_path / "audit.jsonl"))
    bus = EventBus()
    audit.attach(bus)
    for n in range(500):
        bus.publish(an_event(n))
    assert bus.close(timeout=10)
    audit.close()
    assert bus.statistics().dropped == 0
    assert list(read_events(str(tmp_path / "audit.jsonl"))) == [an_event(n) for n in range(500)]
    assert stat.S_IMODE(os.stat(tmp_path / "audit.jsonl").st_mode) == 0o600


def test_a_log_is_appended_to_and_bad_lines_are_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = tmp_path / "audit.jsonl"
    write_log(log, MIXED[:2])
    with open(log, "a") as f:
        f.write("garbage\n\n")
    write_log(log, MIXED[2:])
    with open(log, "a") as f:
        f.write('{"time": 1, "vm"')  # a crash's torn last line
    assert list(read_events(str(log))) == MIXED
    assert ":3: skipped" in caplog.text
    assert ":8: skipped" in caplog.text


@pytest.mark.parametrize(
    ("selected", "expected"),
    [
        (EventFilter(), [0, 1, 2, 3, 4]),
        (EventFilter(vms=frozenset({"vm2"})), [1, 4]),
        (EventFilter(operations=frozenset({"unlink", "rename"})), [2, 3]),
        (EventFilter(path="/data/*.db"), [0, 1, 3]),  # a rename matches by either path
        (EventFilter(path="/data/*"), [0, 1, 2, 3]),
        (EventFilter(vms=frozenset({"vm1"}), path="*.db"), [0, 3]),
    ],
)
def test_filters_select_by_vm_operation_and_path(selected: EventFilter, expected: list[int]) -> None:
    assert [e.duration_us for e in MIXED if selected.matches(e)] == expected


def test_the_events_command_prints_the_selected_events(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "audit.jsonl"
    write_log(log, MIXED)
    assert run_events(str(log), "--vm", "vm1", "--path", "/data/*", "--json") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [Event.from_json(line) for line in lines] == [MIXED[0], MIXED[2], MIXED[3]]
    assert run_events(str(log), "--op", "rename") == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert " vm1 103/tool rename /tmp/x -> /data/c.db " in line
    assert line.endswith(" ok 3µs")


def test_the_events_command_explains_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_events(str(tmp_path / "missing.jsonl")) == EXIT_HVFS
    assert "No such file or directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_events(str(tmp_path), "--op", "opne")
    assert "unknown operation 'opne'" in capsys.readouterr().err


def test_following_shows_events_appended_while_reading(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"  # not there yet: following waits for it
    stop = threading.Event()
    expected = [an_event(n) for n in range(50)]

    def append() -> None:
        audit = None
        for n, event in enumerate(expected):
            if n == 0:
                audit = AuditLog(str(log))
            assert audit is not None
            audit.write(event)
            if n % 10 == 9:
                time.sleep(0.02)  # the reader catches up and waits at the end of the file
        assert audit is not None
        audit.close()

    writer = threading.Thread(target=append)
    got: list[Event] = []
    writer.start()
    for event in read_events(str(log), follow=True, poll=0.005, stop=stop):
        got.append(event)
        if len(got) == len(expected):
            stop.set()
    writer.join()
    assert got == expected


def test_following_waits_for_a_line_to_be_complete(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    line = an_event(1).to_json()
    log.write_text(an_event(0).to_json() + "\n" + line[:10])
    stop = threading.Event()
    events = read_events(str(log), follow=True, poll=0.005, stop=stop)
    assert next(events) == an_event(0)
    with open(log, "a") as f:
        f.write(line[10:] + "\n")
    assert next(events) == an_event(1)
    stop.set()
    assert list(events) == []


def test_json_lines_are_one_object_each(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write_log(log, MIXED)
    objects = [json.loads(line) for line in log.read_text().splitlines()]
    assert [o["operation"] for o in objects] == ["open", "open", "unlink", "rename", "mkdir"]
    assert objects[3]["paths"] == ["/tmp/x", "/data/c.db"]
