"""What is true when `hvfs run` returns (the manager told it the VM exited): every process
of the VM is gone, background ones included, whichever driver; its state is removed
just after the exit is told (hvfs.hypervisor.group._watch): gone soon after, never left
behind. Real VMs, a private manager."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator

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
