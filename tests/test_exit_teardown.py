"""A VM's mount namespace is torn down after its exit is told, not before (native/init/main.c,
hvfs.sandbox.launcher.VmProcess.reap): the manager holds pid 1's mount namespace while the
VM runs, and lets it go once the run's client has its exit, so that nothing of it is left.
Real VMs, a private manager, both drivers, fresh and from a spare."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Hvfs


@pytest.fixture
def state() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="hvfs-teardown-")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _held(pid: int) -> list[str]:
    """The namespaces the process ``pid`` holds by fd (``mnt:[N]``, …)."""
    links = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            continue
    return [link for link in links if link.startswith("mnt:[")]


@pytest.mark.parametrize("driver", ["seccomp", "ptrace"])
@pytest.mark.parametrize("spare", ["0", "1"], ids=["fresh", "spare"])
def test_the_manager_holds_a_vms_mounts_until_its_exit_is_told(hvfs: Hvfs, state: str, driver: str, spare: str) -> None:
    runner = hvfs.with_env(HVFS_STATE_DIR=state, HVFS_SPARE=spare)
    try:
        runner.ok("run", "--driver", driver, "--", "true")  # the manager, and a spare of this configuration
        time.sleep(0.5 if spare == "1" else 0)  # its spare made (the next run takes it, or starts fresh)
        script = "readlink /proc/self/ns/mnt; read line; echo got=$line; exit 9"
        command = [*runner.command, "run", "--driver", driver, "--", "sh", "-c", script]
        with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/") as vm:
            assert vm.stdin is not None and vm.stdout is not None
            namespace = vm.stdout.readline().strip()
            assert namespace.startswith("mnt:["), namespace
            manager = json.loads(Path(state, "manager.json").read_text())["pid"]
            assert namespace in _held(manager)  # the VM's own, not the host's or a spare's
            vm.stdin.write("done\n")
            vm.stdin.close()
            assert vm.stdout.read() == "got=done\n"
            assert vm.wait(timeout=60) == 9
        deadline = time.monotonic() + 10
        while namespace in _held(manager) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert namespace not in _held(manager)
        # Ten runs more: the manager holds no mount namespace but its spares'.
        for _ in range(10):
            assert runner.run("run", "--driver", driver, "--", "sh", "-c", "exit 4").returncode == 4
        deadline = time.monotonic() + 10
        while len(_held(manager)) > int(spare) * 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_held(manager)) <= int(spare) * 2, _held(manager)  # at most DEPTH spares of it
    finally:
        runner.run("manager", "stop")
