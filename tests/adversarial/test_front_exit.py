"""The exit code's way from a VM's shim to its native front (hvfs/hypervisor/front_exit.py):
a program in the VM looks for the pipe through every fd it can see, in /proc (pid 1's
among them) and inherited, and writes into each pipe or socket it can open another VM's
exit code; VMs run four at a time, so a channel reachable from one VM would make another
VM's front report that code. The host checks each front's exit code against its own VM's
code: any other is an escape. Root, --strict and rootless, both drivers, through the
native front (the Python client asks for no such pipe)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.adversarial.conftest import SECONDS, TRIES, compile_program
from tests.conftest import FRONT, Hvfs, require, staged_front

AT_ONCE = 4


@pytest.fixture(params=["root", "strict", pytest.param("rootless", marks=pytest.mark.rootless)])
def native(request: pytest.FixtureRequest, attack_binaries: Path) -> tuple[Hvfs, list[str]]:
    """The native front as the variant runs it, and the options of its runs."""
    if request.param == "rootless":
        staged, shared = request.getfixturevalue("staged"), request.getfixturevalue("shared_tmp")
        rootless = request.getfixturevalue("rootless")
        assert rootless.run("run", "--", "true").returncode == 0  # the user's manager, warm
        return staged_front(rootless, staged, shared / "trace"), []
    require(os.access(FRONT, os.X_OK), f"no native front at {FRONT}; run scripts/setup")
    hvfs = request.getfixturevalue("hvfs")
    assert hvfs.run("run", "--", "true").returncode == 0
    return Hvfs([FRONT]), ["--strict"] if request.param == "strict" else []


@pytest.mark.parametrize("driver", ["seccomp", "ptrace"])
def test_no_vm_reaches_a_fronts_exit_pipe(native: tuple[Hvfs, list[str]], attack_binaries: Path, driver: str) -> None:
    runner, options = native
    compile_program("front_exit", attack_binaries)
    tries = refused = opened = written = vms = escapes = 0
    seen: list[tuple[int, int]] = []
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline or vms == 0:
        started = []
        for k in range(AT_ONCE):
            code, forged = 10 + k, 10 + (k + 1) % AT_ONCE  # its neighbour's code
            args = ["run", "--driver", driver, *options, "-v", f"{attack_binaries}:/attacks:ro", "--",
                    "/attacks/front_exit", str(TRIES // 10), str(SECONDS / 12), str(code), str(forged)]  # fmt: skip
            started.append((code, subprocess.Popen([*runner.command, *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")))  # fmt: skip
        for code, vm in started:
            out, err = vm.communicate(timeout=SECONDS * 4 + 60)
            lines = [line for line in out.splitlines() if line.startswith("{")]
            assert lines, f"no report (exit {vm.returncode}):\n{out}\n{err}"
            report = json.loads(lines[-1])
            tries, refused = tries + report["tries"], refused + report["refused"]
            opened, written = opened + report["opened"], written + report["written"]
            vms += 1
            escapes += vm.returncode != code
            seen.append((code, vm.returncode))
    outcome = {"vms": vms, "tries": tries, "refused": refused, "opened": opened, "written": written, "escapes": escapes}
    print(f"front_exit {driver}: {outcome}")  # the report's figures (pytest -s)
    assert tries >= 1000, outcome  # the attack ran: thousands of fds tried
    assert refused >= vms, outcome  # pid 1's fds among them, refused in every VM
    assert escapes == 0, (outcome, [s for s in seen if s[0] != s[1]])
