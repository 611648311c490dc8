"""A run's exit code told to the native front by the VM's shim (hvfs/hypervisor/front_exit.py,
native/init/shim.c, native/client/run.c): the pipe it comes through is held by the front and
the shim alone; the front exits with the VM's own code and signal, as before; and what the
manager records after it (the VM exited, its group gone) is what the next client sees,
whether it asks `hvfs ps` or runs a VM of the same name. Real VMs, the native front, a
private manager, both drivers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hvfs.hypervisor import control
from tests.conftest import FRONT, Hvfs, require


@pytest.fixture
def front(hvfs: Hvfs) -> Iterator[tuple[Hvfs, Hvfs, Path]]:
    """The native front and the Python client on a private state directory."""
    require(os.access(FRONT, os.X_OK), f"no native front at {FRONT}; run scripts/setup")
    state = Path(tempfile.mkdtemp(prefix="hvfs-front-exit-"))
    python = hvfs.with_env(HVFS_STATE_DIR=str(state))
    native = Hvfs([FRONT]).with_env(HVFS_STATE_DIR=str(state))
    try:
        python.ok("run", "--", "true")  # the manager, warm: the front's own runs
        yield native, python, state
    finally:
        python.run("manager", "stop")
        shutil.rmtree(state, ignore_errors=True)


def _pipes(pid: int) -> set[str]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if link.startswith("pipe:["):
            found.add(link)
    return found


def _holders(pipe: str) -> set[int]:
    """Every process of the host (the VM's among them) with an fd on ``pipe``."""
    holders = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if pipe in _pipes(int(entry)):
                    holders.add(int(entry))
            except (FileNotFoundError, PermissionError, ProcessLookupError):
                continue
    return holders


def _children(pid: int) -> list[int]:
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            children += [int(child) for child in f.read().split()]
    return children


@pytest.mark.parametrize("driver", ["seccomp", "ptrace"])
def test_the_exit_pipe_is_the_fronts_and_the_shims_alone(front: tuple[Hvfs, Hvfs, Path], driver: str) -> None:
    native, _, state = front
    script = "echo up; read line; exit 6"
    command = [*native.command, "run", "--driver", driver, "--", "sh", "-c", script]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/") as vm:
        assert vm.stdin is not None and vm.stdout is not None
        assert vm.stdout.readline() == "up\n"
        fronts = [p for p in [vm.pid, *_children(vm.pid)] if os.readlink(f"/proc/{p}/exe") == FRONT]  # past env
        assert len(fronts) == 1, fronts
        manager = json.loads((state / "manager.json").read_text())["pid"]
        shims = set(_children(manager))  # each VM's launcher lives on as its shim
        deadline = time.monotonic() + 10  # the command runs before its front has ``started``, and the pipe
        while not (shared := [pipe for pipe in _pipes(fronts[0]) if _holders(pipe) & shims]):
            assert time.monotonic() < deadline, "no pipe from the shim to the front"
            time.sleep(0.01)
        assert len(shared) == 1, shared  # the exit's pipe, and no other between them
        holders = _holders(shared[0])
        assert len(holders) == 2 and fronts[0] in holders, holders  # the front reads, one shim writes
        (shim,) = holders - {fronts[0]}
        assert shim in shims
        vm.stdin.write("go\n")
        vm.stdin.close()
        assert vm.wait(timeout=60) == 6


@pytest.mark.parametrize("driver", ["seccomp", "ptrace"])
@pytest.mark.parametrize(
    ("script", "code"), [("exit 0", 0), ("exit 255", 255), ("kill -TERM $$", 143), ("kill -KILL $$", 137)]
)
def test_codes_and_signals_as_the_python_client(front: tuple[Hvfs, Hvfs, Path], driver: str, script: str,
                                                code: int) -> None:  # fmt: skip
    native, python, _ = front
    for client in (native, python):
        result = client.run("run", "--driver", driver, "--", "sh", "-c", script)
        assert result.returncode == code, (client.command, result.stderr)


def _ps(state: Path) -> dict[str, Any]:
    """The manager's ``ps`` reply, asked at once (the Python client would take 100 ms to)."""
    pid = json.loads((state / "manager.json").read_text())["pid"]
    connection = control.connect(str(state / "manager.sock"), manager_pid=pid, timeout=30)
    try:
        connection.send({"hvfs": 1, "op": "ps"})
        for reply, fds in control.replies(connection):
            for fd in fds:
                os.close(fd)
            return reply
        raise AssertionError("no reply to ps")
    finally:
        connection.close()


@pytest.mark.parametrize("driver", ["seccomp", "ptrace"])
def test_the_next_client_sees_the_exit_recorded(front: tuple[Hvfs, Hvfs, Path], driver: str) -> None:
    """The front may exit before the manager has recorded the exit: ``ps`` asked at once
    waits for that record, and a run of the same name for the group to be gone."""
    native, python, state = front
    for round_ in range(30):
        result = native.run("run", "--driver", driver, "--name", "again", "--", "sh", "-c", f"exit {round_}")
        assert result.returncode == round_, result.stderr  # a second run of that name too: no "already running"
        groups = _ps(state)["groups"]
        states = [vm["state"] for vms in groups.values() for vm in vms if vm["name"] == "again"]
        assert "running" not in states, groups
    deadline = time.monotonic() + 10
    while [d for d in os.listdir(state / "groups") if not d.startswith(".")] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [d for d in os.listdir(state / "groups") if not d.startswith(".")]
    assert python.ok("ps", "-a").strip().count("\n") == 0
