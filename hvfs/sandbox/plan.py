"""Everything a VM's launcher needs, decided by the manager before the fork."""

from __future__ import annotations

import os
from dataclasses import dataclass

from hvfs.sandbox.spawn import Program


@dataclass(frozen=True)
class BootPlan:
    name: str
    boot: str  # the boot view's path in the manager's mount namespace
    program: Program
    filter_program: bytes
    tty: bool = False
    winsize: bytes | None = None
    grace: float = 1.0  # seconds between SIGTERM and SIGKILL when the manager is lost
    stdio: tuple[int, int, int] = (0, 1, 2)  # fds of the launcher's process to give the VM


def exit_code(status: int) -> int:
    """A wait status as a shell (and docker) reports it: 128+N for a signal."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code
