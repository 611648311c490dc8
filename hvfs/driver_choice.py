"""Which driver serves a machine's VMs: the one place that decides it (``hvfs run
--driver``, the ``driver`` key of hvfs.toml, or automatically), read by the front end.

Automatically: the seccomp driver where the kernel has seccomp user notification with
ADDFD (Linux 5.14), the ptrace driver elsewhere. ``HVFS_AS_IF_NO_USER_NOTIF=1`` makes the
choice as if user notification were missing (for tests of the ptrace driver); the
choice is then said once, on stderr, as any automatic choice of ptrace is.
"""

# Annotations evaluated, not ``from __future__ import annotations``: a NamedTuple's string
# annotations are compiled one by one at import (tests/test_startup.py).

import functools
import os
import sys
from collections.abc import Mapping
from typing import NamedTuple

DRIVERS = ("seccomp", "ptrace")
AS_IF_MISSING = "HVFS_AS_IF_NO_USER_NOTIF"
ADDFD_KERNEL = (5, 14)
PTRACE_KERNEL = (5, 6)  # the ptrace driver reads the VM's fds with pidfd_getfd (5.6), as the seccomp one
_ACTIONS = "/proc/sys/kernel/seccomp/actions_avail"
_said: set[str] = set()


class Choice(NamedTuple):
    driver: str
    why: str


def ptrace_problem() -> str | None:
    """Why the ptrace driver cannot run here, or None."""
    release = kernel_release()
    if release < PTRACE_KERNEL:
        return f"Linux {release[0]}.{release[1]} lacks pidfd_getfd (5.6+), which the ptrace driver needs"
    if os.uname().machine != "x86_64":
        return f"the ptrace driver is built for x86_64, not {os.uname().machine}"
    return None


def check(value: str, where: str) -> str:
    """A driver named by the user (``where``: the flag or key); ValueError, one line with
    the fix, for another name. "" and "auto" leave the choice to ``automatic``."""
    if value in ("", "auto") or value in DRIVERS:
        return value
    raise ValueError(f"{where} {value}: not a driver; use {', '.join(DRIVERS)} or auto")


def kernel_release(release: str | None = None) -> tuple[int, int]:
    text = release if release is not None else os.uname().release
    parts = [*text.split("-", 1)[0].split("."), "0", "0"][:2]
    try:
        return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)
    except ValueError:
        return (0, 0)


def automatic(environ: Mapping[str, str] = os.environ) -> Choice:
    """The driver this machine gets, and why."""
    if environ.get(AS_IF_MISSING) == "1":
        return Choice("ptrace", f"as if seccomp user notification were missing ({AS_IF_MISSING}=1)")
    return _kernels()


@functools.cache
def _kernels() -> Choice:
    """The choice the running kernel makes: it cannot change while a process runs, and a
    manager makes it for every run of a native front (0.015 ms of each before START)."""
    try:
        with open(_ACTIONS) as f:
            actions = f.read().split()
    except OSError:
        actions = []
    if "user_notif" not in actions:
        return Choice("ptrace", f"seccomp user notification is missing ({_ACTIONS} has no user_notif)")
    release = kernel_release()
    if release < ADDFD_KERNEL:
        return Choice("ptrace", f"Linux {release[0]}.{release[1]} lacks seccomp ADDFD (5.14+)")
    return Choice("seccomp", "seccomp user notification with ADDFD is available")


def chosen(value: str, environ: Mapping[str, str] = os.environ) -> str:
    """The driver for ``value`` (checked: "", "auto" or a driver's name). An automatic
    choice of ptrace is said once per process, on stderr."""
    if value in DRIVERS:
        return value
    choice = automatic(environ)
    if choice.driver != "seccomp" and choice.why not in _said:
        _said.add(choice.why)
        print(f"hvfs: using the ptrace driver: {choice.why}", file=sys.stderr)
    return choice.driver
