"""A VM ends in bounded time, whatever its processes do: they cannot stop its pid 1, and
hvfs kills a VM that outlives its stop timeout or its manager."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import Hvfs

# Ignores SIGTERM, tries every way to freeze pid 1, then sleeps for ever (with a child
# that does the same), printing what it tried.
FREEZER = """
import ctypes, os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
libc = ctypes.CDLL(None, use_errno=True)
tried = []
os.kill(1, signal.SIGSTOP); tried.append("sigstop")
tried.append(f"attach={libc.ptrace(16, 1, 0, 0)}")           # PTRACE_ATTACH
tried.append(f"seize={libc.ptrace(0x4206, 1, 0, 0)}")          # PTRACE_SEIZE
tried.append(f"interrupt={libc.ptrace(0x4207, 1, 0, 0)}")      # PTRACE_INTERRUPT
if os.fork() == 0:
    while True:
        time.sleep(1)
print(" ".join(tried), flush=True)
while True:
    time.sleep(1)
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
        time.sleep(0.1)
    return left


def _hvfs_pid(process: subprocess.Popen[str]) -> int:
    """The pid of hvfs itself: the process, or for the rootless runner its child under runuser."""
    if not process.args[0].endswith("runuser"):  # type: ignore[index]
        return process.pid
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == process.pid:
                return int(entry)
    raise AssertionError("hvfs has no process under runuser")


def _start(runner: Hvfs, marker: str, *options: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [*runner.command, "run", *options, "-e", f"HVFS_MARKER={marker}", "--", "python3", "-c", FREEZER],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.split() == ["sigstop", "attach=-1", "seize=-1", "interrupt=-1"], (line, process.stderr)
    return process


@pytest.mark.parametrize("runner", ["hvfs", pytest.param("rootless", marks=pytest.mark.rootless)])
def test_sigterm_ends_a_vm_that_tries_to_freeze_pid1(runner: str, request: pytest.FixtureRequest) -> None:
    hvfs: Hvfs = request.getfixturevalue(runner)
    marker = f"freeze-{uuid.uuid4().hex}"
    process = _start(hvfs, marker, "--stop-timeout", "2")
    began = time.monotonic()
    os.kill(_hvfs_pid(process), signal.SIGTERM)
    process.communicate(timeout=30)
    assert time.monotonic() - began < 10
    assert process.returncode == 128 + signal.SIGKILL
    assert _wait_gone(marker, 5) == []


@pytest.mark.parametrize("runner", ["hvfs", pytest.param("rootless", marks=pytest.mark.rootless)])
def test_sigkill_of_hvfs_run_ends_the_vm(runner: str, request: pytest.FixtureRequest) -> None:
    hvfs: Hvfs = request.getfixturevalue(runner)
    marker = f"freeze-{uuid.uuid4().hex}"
    process = _start(hvfs, marker)
    os.kill(_hvfs_pid(process), signal.SIGKILL)
    process.communicate(timeout=30)
    assert _wait_gone(marker, 10) == []
