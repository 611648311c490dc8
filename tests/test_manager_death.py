"""When the manager dies, a VM fails fast and whole: blocked calls return ENOSYS, every
VM process is gone shortly after, and no file is left torn."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

from tests.conftest import Hvfs

BLOCKED = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
if os.fork() == 0:
    while True:
        time.sleep(1)  # a bystander that ignores SIGTERM too
print("ready", flush=True)
while not os.path.exists("/data/go"):
    time.sleep(0.01)
try:
    open("/data/blocked", "w")
    print("opened", flush=True)
except OSError as e:
    print("errno", e.errno, flush=True)
while True:
    time.sleep(1)
"""

WRITER = """
import os
i = 0
while True:
    with open("/data/next", "w") as f:
        f.write(f"{i}\\n" + "x" * 300_000 + "\\nend\\n")
    os.rename("/data/next", "/data/current")
    i += 1
    if i == 20:
        print("running", flush=True)
"""


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry}/environ").read_bytes():
                    found.append(int(entry))
            except OSError:
                continue
    return found


def _wait_gone(marker: str, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := _processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def _blocked_in_a_trap(pids: list[int]) -> bool:
    """Whether one of ``pids`` is stopped in openat, waiting for the manager."""
    for pid in pids:
        try:
            syscall = Path(f"/proc/{pid}/syscall").read_text().split()
            wchan = Path(f"/proc/{pid}/wchan").read_text()
        except OSError:
            continue
        if syscall and syscall[0] == "257" and "seccomp" in wchan:
            return True
    return False


def test_a_call_blocked_in_the_dead_manager_fails_and_the_vm_is_torn_down(hvfs: Hvfs, tmp_path: Path) -> None:
    marker = f"HVFS_MARK={uuid.uuid4().hex}"
    key, value = marker.split("=")
    command = [*hvfs.command, "run", "-e", marker, "-v", f"{tmp_path}:/data", "--", "python3", "-c", BLOCKED]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env={**os.environ, key: value}) as manager:
        assert manager.stdout is not None
        assert manager.stdout.readline() == "ready\n"
        vm_processes = [p for p in _processes_with(marker) if p != manager.pid]
        assert len(vm_processes) >= 2
        os.kill(manager.pid, signal.SIGSTOP)
        (tmp_path / "go").touch()
        deadline = time.monotonic() + 10
        while not _blocked_in_a_trap(vm_processes):
            assert time.monotonic() < deadline, "the VM never blocked in its trapped open"
            time.sleep(0.02)
        os.kill(manager.pid, signal.SIGKILL)
        manager.wait(timeout=10)
        assert manager.stdout.readline() == f"errno {38}\n"  # ENOSYS, instead of hanging
    assert _wait_gone(marker, 10) == []
    assert not (tmp_path / "blocked").exists()


def test_killing_the_manager_mid_work_leaves_no_torn_file(hvfs: Hvfs, tmp_path: Path) -> None:
    marker = f"HVFS_MARK={uuid.uuid4().hex}"
    command = [*hvfs.command, "run", "-e", marker, "-v", f"{tmp_path}:/data", "--", "python3", "-c", WRITER]
    key, value = marker.split("=")
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env={**os.environ, key: value}) as manager:
        assert manager.stdout is not None
        assert manager.stdout.readline() == "running\n"
        time.sleep(0.3)
        manager.kill()
        manager.wait(timeout=10)
    assert _wait_gone(marker, 10) == []
    current = (tmp_path / "current").read_text()
    number = int(current.split("\n", 1)[0])
    assert number >= 19
    assert current == f"{number}\n" + "x" * 300_000 + "\nend\n"  # one whole version, never a torn one
