"""Checks of the kernel before anything starts, with the fix for each problem."""

from __future__ import annotations

import os

from hvfs.sandbox.errors import SetupError

MIN_KERNEL = (5, 14)  # SECCOMP_ADDFD_FLAG_SEND


def read_setting(path: str) -> str | None:
    """A /proc or /sys setting, stripped; None when it cannot be read."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def kernel_version() -> tuple[int, int]:
    release = os.uname().release
    major, minor = release.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def check_kernel() -> None:
    version = kernel_version()
    if version < MIN_KERNEL:
        raise SetupError(
            "kernel",
            f"Linux {version[0]}.{version[1]} is too old",
            "hvfs needs Linux 5.14 or newer for seccomp user notification with ADDFD",
        )
    actions = read_setting("/proc/sys/kernel/seccomp/actions_avail")
    if actions is None or "user_notif" not in actions.split():
        raise SetupError(
            "seccomp",
            "this kernel has no seccomp user notification",
            "hvfs needs a kernel built with CONFIG_SECCOMP_FILTER (Linux 5.14+)",
        )


def userns_hint() -> str:
    """Why creating a user namespace may have failed, and the fix."""
    if read_setting("/proc/sys/user/max_user_namespaces") == "0":
        return "user namespaces are disabled: run 'sysctl -w user.max_user_namespaces=15000'"
    if os.geteuid() != 0:
        if read_setting("/proc/sys/kernel/unprivileged_userns_clone") == "0":
            return "unprivileged user namespaces are disabled: run 'sysctl -w kernel.unprivileged_userns_clone=1'"
        if read_setting("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
            return (
                "AppArmor restricts unprivileged user namespaces: run "
                "'sysctl -w kernel.apparmor_restrict_unprivileged_userns=0' or add an AppArmor profile for hvfs"
            )
    return "check that user namespaces are enabled (sysctl user.max_user_namespaces) and not exhausted"
