"""The steps by which a VM's pid 1 enters its boot view, each named for error messages."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import termios
from collections.abc import Callable
from typing import TypeVar

from hvfs._sys import mount as m
from hvfs._sys import process
from hvfs.sandbox import channel
from hvfs.sandbox.errors import SetupError
from hvfs.sandbox.network import bring_up_loopback
from hvfs.sandbox.plan import BootPlan

T = TypeVar("T")

HINTS = {
    errno.EPERM: "the kernel refused it inside the VM's user namespace",
    errno.ENOSYS: "this kernel lacks the call",
}


def step(name: str, action: Callable[[], T], hint: str = "") -> T:
    try:
        return action()
    except OSError as e:
        raise SetupError(name, e.strerror or str(e), hint or HINTS.get(e.errno or 0, "")) from None


def enter_boot_view(plan: BootPlan) -> None:
    """Make the boot view this mount namespace's root, with the VM's own procfs and devpts."""
    boot = plan.boot
    step("private mounts", lambda: m.mount(None, "/", None, m.MS_REC | m.MS_PRIVATE))
    # The boot view came from the manager's namespace, so it is locked here; a bind of it
    # onto itself gives pivot_root a mount it may move.
    step("bind boot view", lambda: m.mount(boot, boot, None, m.MS_BIND | m.MS_REC))
    step("mount /proc", lambda: m.mount("proc", f"{boot}/proc", "proc", m.MS_NOSUID | m.MS_NODEV | m.MS_NOEXEC))
    step(
        "mount /dev/pts",
        lambda: m.mount(
            "devpts", f"{boot}/dev/pts", "devpts", m.MS_NOSUID | m.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"
        ),
    )

    def pivot() -> None:
        os.chdir(boot)
        m.pivot_root(".", ".")
        m.umount(".", m.MNT_DETACH)
        os.chdir("/")

    step("pivot_root", pivot)
    step("hostname", lambda: socket.sethostname(plan.name))
    step("loopback", bring_up_loopback)


def open_terminal(plan: BootPlan) -> tuple[int, int]:
    """A pseudo-terminal of the VM's own devpts: (master, slave)."""
    master, slave = step("terminal", os.openpty)
    if plan.winsize:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, plan.winsize)
    return master, slave


def install_filter(plan: BootPlan) -> int:
    """Load the seccomp filter on this process and return the listener fd."""
    step("no_new_privs", lambda: process.prctl(process.PR_SET_NO_NEW_PRIVS, 1))
    flags = process.SECCOMP_FILTER_FLAG_NEW_LISTENER | process.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
    try:
        return process.load_seccomp_filter(plan.filter_program, flags)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise SetupError(
                "seccomp filter",
                e.strerror or str(e),
                "seccomp user notification is unavailable; hvfs needs Linux 5.14+ with CONFIG_SECCOMP_FILTER",
            ) from None
    # Kernels before 5.19 lack WAIT_KILLABLE_RECV; served requests are safe to repeat.
    return step(
        "seccomp filter",
        lambda: process.load_seccomp_filter(plan.filter_program, process.SECCOMP_FILTER_FLAG_NEW_LISTENER),
        "seccomp user notification is unavailable; hvfs needs Linux 5.14+ with CONFIG_SECCOMP_FILTER",
    )


def report_ready(chan: socket.socket, listener: int, master: int | None) -> None:
    fds = [listener] + ([master] if master is not None else [])
    channel.send(chan, {"ready": True, "tty": master is not None}, fds)
    for fd in fds:
        os.close(fd)
