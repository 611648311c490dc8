"""Where an audited request's cost goes: each step of making and writing one event, as
the audit did it before hvfs.api.ring (every step on the serving thread, or woken per
event) and as it does now, timed in one process, rounds interleaved, medians.

    python benchmarks/audit_cost.py [--events 20000] [--rounds 5]

"serving thread" steps delay the VM's request; "writer" steps run on another thread,
but under the same GIL, so they too take time from requests unless they fall into the
gaps between them. The last two lines time the whole path, serving thread and writer,
for a burst of events: what --strict --audit adds to --strict per request, at most.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict

from hvfs import api
from hvfs.api.events import Event, comm_of, event_for
from hvfs.api.hooks import EventBus
from hvfs.manager.resolve import absolute, open_object
from hvfs.services.audit import AuditLog


def old_comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().rstrip(b"\n").decode(errors="replace")
    except OSError:
        return ""


def old_name(root: int, fd: int) -> str | None:
    """readlink, then the check that the name is this file (hvfs.manager.served before)."""
    name = os.readlink(f"/proc/self/fd/{fd}")
    found = open_object(root, absolute(name), follow=False)
    try:
        same = os.fstat(found).st_ino == os.fstat(fd).st_ino
    finally:
        os.close(found)
    return name if same else None


def old_line(event: Event) -> bytes:
    return (json.dumps(asdict(event), ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def per_call(step: Callable[[], object], n: int) -> float:
    began = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - began) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    n = args.events
    work = tempfile.mkdtemp(prefix="hvfs-audit-cost-")
    root = os.open("/", os.O_PATH | os.O_DIRECTORY)
    file_path = os.path.join(work, "f")
    fd = os.open(file_path, os.O_WRONLY | os.O_CREAT, 0o644)
    log_fd = os.open(os.path.join(work, "old.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    pid = threading.get_native_id()
    request = api.Open(caller=api.Caller(vm="vm", pid=pid), path=api.VmPath("/", file_path), flags=os.O_WRONLY)
    response = api.Fd(fd, True)
    event = event_for("vm", request, response, time=time.time(), duration_us=40, comm="tar", paths=(file_path,))
    line = old_line(event)

    def old_path() -> float:
        """The whole old path: naming, event and publish per request; a thread woken per
        event makes the line and writes it."""
        events: queue.Queue[Event | None] = queue.Queue(1 << 16)

        def writer() -> None:
            while (got := events.get()) is not None:
                os.write(log_fd, old_line(got))

        thread = threading.Thread(target=writer)
        thread.start()
        began = time.perf_counter()
        for _ in range(n):
            comm = old_comm(pid)
            paths = (old_name(root, fd) or file_path,)
            now = time.time()
            events.put_nowait(event_for("vm", request, response, time=now, duration_us=40, comm=comm, paths=paths))
        events.put(None)
        thread.join()
        return (time.perf_counter() - began) / n * 1e6

    def new_path() -> float:
        audit = AuditLog(os.path.join(work, "new.jsonl"))
        bus = EventBus()
        audit.attach(bus)
        began = time.perf_counter()
        for _ in range(n):
            name = os.readlink(f"/proc/self/fd/{fd}")
            bus.record("vm", request, response, time=time.time(), duration_us=40, comm=comm_of(pid),
                       answered_by=None, paths=(name,))  # fmt: skip
        bus.flush(60)
        took = (time.perf_counter() - began) / n * 1e6
        bus.close()
        audit.close()
        return took

    bus = EventBus()
    bus.subscribe(lambda _: None, name="sink", batch=True)

    def record() -> None:
        bus.record("vm", request, response, time=1.0, duration_us=40, comm="tar", answered_by=None, paths=(file_path,))

    steps: dict[str, Callable[[], float]] = {
        "before, serving thread: comm (open+read+close /proc/TID/comm)": lambda: per_call(lambda: old_comm(pid), n),
        "before, serving thread: name served (readlink, openat2, 2 fstat)": lambda: per_call(
            lambda: old_name(root, fd), n
        ),
        "before, serving thread: event_for (the Event)": lambda: per_call(
            lambda: event_for("vm", request, response, time=1.0, duration_us=40, comm="tar", paths=(file_path,)), n
        ),
        "before, writer: JSON line (dataclasses.asdict + json.dumps)": lambda: per_call(lambda: old_line(event), n),
        "before, writer: one write(2) per event": lambda: per_call(lambda: os.write(log_fd, line), n),
        "now, serving thread: comm (read once per burst, by pread)": lambda: per_call(lambda: comm_of(pid), n),
        "now, serving thread: name served (readlink)": lambda: per_call(lambda: os.readlink(f"/proc/self/fd/{fd}"), n),
        "now, serving thread: bus.record (a tuple in the ring)": lambda: per_call(record, n),
        "now, writer: JSON line (Event.to_json)": lambda: per_call(lambda: event.to_json(), n),
        "whole path before (serving thread + writer, per event)": old_path,
        "whole path now (serving thread + writer + flush, per event)": new_path,
    }
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            samples[name].append(step())
    bus.close()
    for name, values in samples.items():
        print(f"{name:66} {statistics.median(values):7.2f} µs")


if __name__ == "__main__":
    main()
