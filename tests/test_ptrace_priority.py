"""The ptrace driver's tracer thread runs with the least EEVDF slice
(hvfs/intercept/ptrace/priority.py), so that, woken by a stop, it is picked before the
task running ends its slice: seen in the kernel's own account of the thread (its
``/proc/TID/sched``), in a thread of this process and in the very thread that traces a
running VM (pid 1's ``TracerPid``), with its nice value and policy unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from hvfs.intercept.ptrace import priority
from tests.conftest import Hvfs

# A SCHED_OTHER thread's ``sched_runtime`` is its slice from Linux 6.12 on; before, it is ignored.
CUSTOM_SLICE = tuple(int(part) for part in os.uname().release.split(".")[:2]) >= (6, 12)
pytestmark = pytest.mark.skipif(not CUSTOM_SLICE, reason="the kernel takes no custom slice (Linux 6.12+)")


def _sched(tid: int) -> dict[str, str]:
    """The kernel's scheduling account of thread ``tid`` (``/proc/TID/sched``), by field."""
    fields = {}
    for line in Path(f"/proc/{tid}/sched").read_text().splitlines():
        name, colon, value = line.partition(":")
        if colon:
            fields[name.strip()] = value.strip()
    return fields


def test_hasten_gives_the_calling_thread_the_least_slice_and_nothing_else() -> None:
    before = _sched(threading.get_native_id())
    seen: dict[str, object] = {}

    def thread() -> None:
        tid = threading.get_native_id()
        seen["before"] = _sched(tid)
        seen["hastened"] = priority.hasten()
        seen["after"] = _sched(tid)
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, tid)

    worker = threading.Thread(target=thread)
    worker.start()
    worker.join()
    assert seen["hastened"] is True
    after, was = seen["after"], seen["before"]
    assert isinstance(after, dict) and isinstance(was, dict)
    assert int(after["se.slice"]) == priority.SLICE_NS < int(was["se.slice"]), (was, after)
    assert after["policy"] == was["policy"] == "0" and after["prio"] == was["prio"], (was, after)
    assert seen["nice"] == os.getpriority(os.PRIO_PROCESS, 0)
    assert _sched(threading.get_native_id())["se.slice"] == before["se.slice"]  # the caller's thread alone


def _tracer_of(marker: str, deadline: float) -> int:
    """The tracer thread of the VM process whose command line has ``marker``."""
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if marker.encode() not in Path(f"/proc/{entry}/cmdline").read_bytes():
                    continue
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            tracer = int(status.split("TracerPid:")[1].split()[0])
            if tracer:
                return tracer
        time.sleep(0.05)
    raise AssertionError(f"no traced process with {marker!r} in its command line")


def test_the_thread_tracing_a_vm_has_the_least_slice(hvfs: Hvfs, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("reads the manager's threads in /proc (root)")
    stats = tmp_path / "stats.json"
    marker = f"hvfs-priority-{os.getpid()}-{time.monotonic_ns()}"
    command = [*hvfs.command, "run", "--driver", "ptrace", "--stats", str(stats), "--"]
    vm = subprocess.Popen([*command, "sh", "-c", f"read _ # {marker}"], stdin=subprocess.PIPE, text=True, cwd="/")
    try:
        tracer = _tracer_of(marker, time.monotonic() + 60)
        traced_by = _sched(tracer)
        assert int(traced_by["se.slice"]) == priority.SLICE_NS, traced_by
        assert traced_by["policy"] == "0", traced_by
    finally:
        assert vm.communicate("\n", timeout=60) == (None, None)
    assert vm.returncode == 0
    assert json.loads(stats.read_text())["hastened"] == 1
