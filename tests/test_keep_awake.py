"""The manager's keep-awake threads (hvfs/_native/keep_awake.h): one per other CPU, of the
SCHED_IDLE policy, started with the first seccomp VM, busy only while requests come in
bursts, asleep (no CPU) once they stop; none with ``HVFS_KEEP_AWAKE_US=0``. A private manager
and real VMs; the CPU bound is a correctness property (an idle manager must not spin), kept
generous so that a loaded machine cannot fail it."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvfs._native import hotpath
from tests.conftest import Hvfs

SCHED_IDLE = 5
BURST = "import os\nfor _ in range(20000):\n    os.close(os.open('/dev/null', os.O_WRONLY))\n"

pytestmark = pytest.mark.skipif(hotpath is None, reason="the C hot path is not built (scripts/setup builds it)")


@pytest.fixture
def state() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="hvfs-awake-")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _idle_threads(state: str) -> dict[int, float]:
    """The manager's SCHED_IDLE threads and the CPU seconds each has used."""
    pid = json.loads(Path(state, "manager.json").read_text())["pid"]
    found = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{task}/stat").read_text().rpartition(")")[2].split()
        except FileNotFoundError:
            continue
        if int(fields[38]) == SCHED_IDLE:  # field 41, ``policy``
            found[int(task)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return found


def test_threads_busy_in_a_burst_asleep_after(hvfs: Hvfs, state: str) -> None:
    runner = hvfs.with_env(HVFS_STATE_DIR=state)
    try:
        runner.ok("run", "--", "python3", "-c", BURST)
        threads = _idle_threads(state)
        assert len(threads) == min(len(os.sched_getaffinity(0)), 8)
        if not threads:
            pytest.skip("one CPU: nothing to keep awake")
        before = sum(threads.values())
        time.sleep(2)
        after = sum(_idle_threads(state).values())
        assert after - before < 0.4 * len(threads), (before, after)  # asleep, not spinning
    finally:
        runner.run("manager", "stop")


def test_off_with_a_window_of_zero(hvfs: Hvfs, state: str) -> None:
    runner = hvfs.with_env(HVFS_STATE_DIR=state, HVFS_KEEP_AWAKE_US="0")
    try:
        runner.ok("run", "--", "python3", "-c", BURST)
        assert _idle_threads(state) == {}
    finally:
        runner.run("manager", "stop")
