"""What is true when `hvfs run` returns (the manager told it the VM exited): every process
of the VM is gone, background ones included, whichever driver; its state is removed
just after the exit is told (hvfs.hypervisor.group._watch): gone soon after, never left
behind. Real VMs, a private manager."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Hvfs


@pytest.fixture(scope="module")
def runner(hvfs: Hvfs) -> Iterator[tuple[Hvfs, str]]:
    state = tempfile.mkdtemp(prefix="hvfs-run-exit-")
    runner = hvfs.with_env(HVFS_STATE_DIR=state)
    yield runner, state
    runner.run("manager", "stop")
    shutil.rmtree(state, ignore_errors=True)


def _host_pids_running(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


def _eventually(condition: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("driver", ["seccomp", "ptrace"])
def test_told_exited_means_gone(runner: tuple[Hvfs, str], driver: str) -> None:
    hvfs, state = runner
    for round_ in range(20):
        marker = f"{1000 + round_}{os.getpid()}{len(driver)}"  # sleep's seconds: unique, seen in its cmdline
        script = f"sleep {marker} & sleep {marker} & until [ $(head -c5 /proc/$!/cmdline) = sleep ]; do :; done; exit 5"
        result = hvfs.run("run", "--driver", driver, "--", "sh", "-c", script)
        assert result.returncode == 5, result.stderr  # once the second sleep ran
        assert _host_pids_running(marker) == [], "a process of the VM outlived its told exit"
    # State removed after the exit was told: gone soon, never left behind.
    assert _eventually(lambda: not [d for d in os.listdir(f"{state}/groups") if not d.startswith(".")])
    assert _eventually(lambda: hvfs.ok("ps", "-a").strip().count("\n") == 0), hvfs.ok("ps", "-a")


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(child) for child in f.read().split()]


@pytest.mark.parametrize("driver", ["seccomp", "ptrace"])
def test_a_runs_views_and_shim_are_let_go_after_its_exit(hvfs: Hvfs, driver: str, tmp_path: Path) -> None:
    """The manager closes an ended run's views, then lets its shim end (group._release),
    whose end, the last to hold them, unmounts them: after ten runs with a host volume and
    a tmpfs, the manager holds no more fds than after the first, and no shim is left."""
    state = tmp_path / "state"
    runner = hvfs.with_env(HVFS_STATE_DIR=str(state), HVFS_SPARE="0")  # no spare's fds or shim meanwhile
    volume = tmp_path / "volume"
    volume.mkdir()
    run = ("run", "--driver", driver, "-v", f"{volume}:/data", "--tmpfs", "/scratch", "--", "sh", "-c",
           "echo x > /data/f && echo y > /scratch/g")  # fmt: skip
    try:
        runner.ok(*run)
        manager = json.loads((state / "manager.json").read_text())["pid"]
        assert _eventually(lambda: _children(manager) == []), "the first run's shim is left"
        first = len(os.listdir(f"/proc/{manager}/fd"))
        for _ in range(10):
            runner.ok(*run)
        assert (volume / "f").read_text() == "x\n"
        assert _eventually(lambda: _children(manager) == []), "a run's shim is left"
        assert _eventually(lambda: len(os.listdir(f"/proc/{manager}/fd")) <= first), os.listdir(f"/proc/{manager}/fd")
    finally:
        runner.run("manager", "stop")
