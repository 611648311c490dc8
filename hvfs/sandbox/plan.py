"""Everything a VM's launcher needs, decided by the manager before it starts."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Program:
    """A program to start inside a VM: the command, or a process of ``hvfs exec``."""

    argv: tuple[str, ...]
    env: dict[str, str]
    workdir: str = "/"
    user: str | None = None  # --user, resolved by hvfs-init from the VM's own files
    home_set: bool = False  # whether HOME was given, which --user must then not replace


@dataclass(frozen=True)
class BootPlan:
    """What hvfs-init is told to do to boot a VM."""

    name: str
    boot: str  # the boot view's path in the manager's mount namespace
    program: Program
    filter_program: bytes
    traced: bool = False  # the filter stops calls for a tracer (the ptrace driver), not a listener
    tty: bool = False
    winsize: bytes | None = None
    grace: float = 1.0  # seconds between SIGTERM and SIGKILL when the manager and the shim are lost
    shim: str | None = None  # where the shim listens for a manager that comes after this one
    wait: float = 30.0  # seconds requests wait for a manager before they fail with EIO
    stdio: tuple[int, int, int] = (0, 1, 2)  # fds of the manager's to give the VM as its stdio
    # A warm spare (hvfs.hypervisor.spares): booted before a run chose it, so ``program``,
    # ``name`` (its hostname) and ``stdio`` are placeholders; the run's come with START.
    spare: bool = False


def exit_code(status: int) -> int:
    """A wait status as a shell (and docker) reports it: 128+N for a signal."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code
