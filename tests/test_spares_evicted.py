"""Spares of configurations no longer wanted (more than MOST run) are dropped: their
processes reaped, their fds closed, in a manager that ran a ptrace VM as in one that did not."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from hvfs.hypervisor.spares import MOST
from tests.conftest import Hvfs
from tests.test_spares import children


def _children(manager: int) -> dict[int, str]:
    """The manager's child processes and their states (R, S, Z, ...)."""
    return {pid: state for pid, (_, state) in children(manager).items()}


def _settled(runner: Hvfs, manager: int) -> tuple[int, dict[int, str]]:
    """The manager's spares ready, and its children, once MOST are ready and no child is a
    zombie (within 10 s: spares are made and dropped in the background)."""
    deadline = time.monotonic() + 10
    while True:
        ready = json.loads(runner.ok("manager", "status", "--json"))["manager"]["spares"]["ready"]
        children = _children(manager)
        if (ready == MOST and "Z" not in children.values()) or time.monotonic() > deadline:
            return ready, children
        time.sleep(0.05)


@pytest.mark.parametrize("first", [(), ("--driver", "ptrace")], ids=["seccomp", "ptrace"])
def test_more_configurations_than_kept_leave_no_zombie_and_no_fd(hvfs: Hvfs, first: tuple[str, ...]) -> None:
    state = tempfile.mkdtemp(prefix="hvfs-spares-evicted-")
    volumes = [tempfile.mkdtemp(prefix="hvfs-spares-volume-") for _ in range(2 * MOST)]
    # A settling longer than a run's start: each eviction is seen while the next making settles.
    runner = hvfs.with_env(HVFS_STATE_DIR=state, HVFS_SPARE="1", HVFS_SPARE_SETTLE="0.3")
    try:
        runner.ok("run", *first, "--", "true")
        manager = int(json.loads(Path(state, "manager.json").read_text())["pid"])
        fds = []
        for batch in (volumes[:MOST], volumes[MOST:]):  # each run past MOST evicts the oldest's spare
            for volume in batch:
                runner.ok("run", "-v", f"{volume}:/d", "--", "true")
            ready, children = _settled(runner, manager)
            assert ready == MOST and "Z" not in children.values(), children
            assert len(children) == MOST  # one launcher per spare, no other
            fds.append(len(os.listdir(f"/proc/{manager}/fd")))
        assert fds[1] <= fds[0], fds  # MOST spares of the same kind (seccomp, one volume each) after either batch
    finally:
        runner.run("manager", "stop")
        shutil.rmtree(state, ignore_errors=True)
        for volume in volumes:
            shutil.rmtree(volume, ignore_errors=True)
