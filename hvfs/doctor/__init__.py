"""``hvfs doctor``: what this machine gives hvfs, one line per check, each failing one with
its fix; exit 0 when everything hvfs needs works, 1 otherwise (what only some features
need is reported, and does not fail it).

It tries rather than guesses (hvfs.doctor.probes): a sysctl may allow what an AppArmor
policy or a container's seccomp filter refuses. It checks what hvfs.sandbox.preflight
checks when a manager starts, and what the manager would find out later.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hvfs.doctor import probes
from hvfs.sandbox import preflight

APPARMOR_SYSCTL = "/proc/sys/kernel/apparmor_restrict_unprivileged_userns"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    found: str  # what was found, in a few words
    fix: str = ""  # what to do when it is not ok
    needed: bool = True  # False: only some features need it (named in ``found``)

    def line(self) -> str:
        mark = "ok  " if self.ok else ("FAIL" if self.needed else "warn")
        text = f"{mark} {self.name}: {self.found}"
        return f"{text}; fix: {self.fix}" if not self.ok and self.fix else text


def _failure(result: dict[str, Any]) -> str:
    return f"{result.get('step')} failed: {result.get('error')}"


def check_kernel() -> Check:
    version = preflight.kernel_version()
    text = f"Linux {version[0]}.{version[1]}"
    if version < preflight.MIN_KERNEL:
        return Check("kernel", False, f"{text} is too old for the seccomp driver", "the ptrace driver serves (slower);"
                     " Linux 5.14 or newer has seccomp ADDFD+SEND", needed=False)  # fmt: skip
    return Check("kernel", True, text)


def check_user_namespaces(rootless: bool) -> Check:
    name = "user namespaces"
    limit = preflight.read_setting("/proc/sys/user/max_user_namespaces")
    if limit == "0":
        return Check(name, False, "disabled (user.max_user_namespaces = 0)",
                     "sudo sysctl -w user.max_user_namespaces=15000")  # fmt: skip
    if rootless and preflight.read_setting("/proc/sys/kernel/unprivileged_userns_clone") == "0":
        return Check(name, False, "disabled for unprivileged users (kernel.unprivileged_userns_clone = 0)",
                     "sudo sysctl -w kernel.unprivileged_userns_clone=1")  # fmt: skip
    result = probes.in_child(probes.user_namespace)
    if not result["ok"]:
        fix = preflight.userns_hint()
        if rootless and preflight.read_setting(APPARMOR_SYSCTL) == "1":
            fix = "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (see docs/ci.md)"
        return Check(name, False, _failure(result), fix)
    return Check(name, True, f"a user and mount namespace with a mount in it (limit {limit})")


def check_apparmor(rootless: bool) -> Check:
    name = "AppArmor user namespace restriction"
    value = preflight.read_setting(APPARMOR_SYSCTL)
    if value is None:
        return Check(name, True, "not on this kernel")
    if value == "0":
        return Check(name, True, "kernel.apparmor_restrict_unprivileged_userns = 0")
    if not rootless:
        return Check(name, True, "on (= 1); it does not restrict root, but rootless hvfs needs it off")
    return Check(name, False, "on (kernel.apparmor_restrict_unprivileged_userns = 1): rootless VMs cannot start",
                 "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (see docs/ci.md)")  # fmt: skip


def seccomp_checks() -> list[Check]:
    notif = "seccomp user notification"
    actions = (preflight.read_setting("/proc/sys/kernel/seccomp/actions_avail") or "").split()
    if "user_notif" not in actions:
        fix = "use a kernel built with CONFIG_SECCOMP_FILTER, Linux 5.14+"
        return [Check(notif, False, "not in kernel.seccomp.actions_avail", fix),
                Check("seccomp ADDFD", False, "not tried: no user notification", fix),
                Check("seccomp sync wake-up", False, "not tried", fix, needed=False)]  # fmt: skip
    result = probes.in_child(probes.seccomp_notify)
    if not result["ok"]:
        fix = "run outside a container whose seccomp profile refuses seccomp(2), or with one that allows it"
        if result.get("step") == "probe":
            fix = "install hvfs with its dependencies (pip install hvfs: pyseccomp, and libseccomp2)"
        return [Check(notif, False, _failure(result), fix),
                Check("seccomp ADDFD", False, "not tried", fix),
                Check("seccomp sync wake-up", False, "not tried", fix, needed=False)]  # fmt: skip
    checks = [Check(notif, True, "a trapped call received and answered")]
    if result.get("addfd"):
        checks.append(Check("seccomp ADDFD", True, "an fd installed in the trapped process, and the call answered"))
    else:
        code = result.get("addfd_errno")
        checks.append(Check("seccomp ADDFD", False, f"SECCOMP_IOCTL_NOTIF_ADDFD failed ({os.strerror(code or 0)})",
                            "hvfs needs Linux 5.14 or newer (ADDFD with SECCOMP_ADDFD_FLAG_SEND)"))  # fmt: skip
    if result.get("sync_wake_up"):
        checks.append(Check("seccomp sync wake-up", True, "SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP set"))
    else:
        checks.append(Check("seccomp sync wake-up", False, "not supported: each trapped call costs several times more",
                            "Linux 6.6 or newer", needed=False))  # fmt: skip
    return checks


def check_overlay(userns: Check) -> Check:
    name = "overlayfs in a user namespace"
    if not userns.ok:
        return Check(name, False, "not tried: no user namespace here", f"first fix {userns.name}")
    result = probes.in_child(probes.overlay_in_user_namespace)
    if not result["ok"]:
        fix = "Linux 5.11 or newer, with overlayfs (modprobe overlay); every VM's root is an overlay"
        return Check(name, False, _failure(result), fix)
    return Check(name, True, "an overlay mounted in a user namespace")


def check_cgroups(rootless: bool) -> Check:
    name = "cgroup v2 delegation"
    optional = "only VM limits (memory, pids, cpus) need it"
    fstype = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields, _, tail = line.partition(" - ")
            if fields.split()[4] == "/sys/fs/cgroup":
                fstype = tail.split()[0]
    if fstype != "cgroup2":
        fix = "boot with systemd.unified_cgroup_hierarchy=1 for cgroup v2"
        found = "cgroup v1 here: limits use cgroup v1 as root, rlimits rootless (no CPU limit); " + optional
        return Check(name, False, found, fix, needed=False)
    with open("/proc/self/cgroup") as f:
        relative = next((line.split("::", 1)[1].strip() for line in f if line.startswith("0::")), "/")
    base = os.path.join("/sys/fs/cgroup", relative.lstrip("/"))
    controllers = set((preflight.read_setting(os.path.join(base, "cgroup.controllers")) or "").split())
    missing = [c for c in ("memory", "pids", "cpu") if c not in controllers]
    writable = os.access(base, os.W_OK) and os.access(os.path.join(base, "cgroup.procs"), os.W_OK)
    if missing or not writable:
        what = f"controllers {', '.join(missing)} not delegated" if missing else f"{base} not writable"
        fix = "run under a systemd unit with Delegate=yes (systemd-run --user --scope -p Delegate=yes ...)"
        return Check(name, False, f"{what}; {optional}", fix if rootless else "", needed=False)
    return Check(name, True, f"memory, pids and cpu in {base}")


def check_subids(rootless: bool) -> Check:
    name = "subordinate ids"
    if not rootless:
        return Check(name, True, "not needed as root: every id maps to itself")
    from hvfs.sandbox import subids

    user = _user_name()
    found = subids.lookup(os.geteuid())
    helpers = all(os.path.exists(f"/usr/bin/{h}") for h in ("newuidmap", "newgidmap"))
    if found is None or not helpers:
        what = "none in /etc/subuid and /etc/subgid" if found is None else "newuidmap/newgidmap missing"
        fix = (
            f"sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}; sudo apt-get install uidmap"
        )
        return Check(name, False, f"{what}: VMs have one id (root) only", fix, needed=False)
    return Check(name, True, f"{found.count} ids for {user}")


def check_fuse() -> Check:
    result = probes.in_child(probes.fuse)
    if not result["ok"]:
        fix = "sudo modprobe fuse (and apt-get install fuse3); only FUSE-served sources need it"
        if result.get("errno") == errno.EACCES:
            fix = "sudo chmod 0666 /dev/fuse (its usual mode); only FUSE-served sources need it"
        return Check("FUSE", False, _failure(result), fix, needed=False)
    return Check("FUSE", True, "/dev/fuse opens")


def _user_name() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def check_driver(seccomp: list[Check]) -> tuple[Check, list[Check]]:
    """Which driver ``hvfs run`` gets here, and why (hvfs.driver_choice); the seccomp
    checks, which only the seccomp driver needs."""
    from hvfs import driver_choice as choice

    chosen = choice.automatic()
    if chosen.driver == "seccomp" and not all(c.ok for c in seccomp if c.needed):
        failed = next(c.name for c in seccomp if c.needed and not c.ok)
        chosen = choice.Choice("ptrace", f"{failed} fails here; hvfs run picks ptrace only when the kernel lacks it,"
                                         " so give --driver ptrace")  # fmt: skip
    if chosen.driver == "seccomp":
        return Check("driver", True, f"seccomp: {chosen.why}"), seccomp
    problem = choice.ptrace_problem()
    if problem is not None:
        return Check("driver", False, f"ptrace ({chosen.why}), but {problem}", "a newer kernel"), seccomp
    if (preflight.read_setting("/proc/sys/kernel/yama/ptrace_scope") or "").strip() == "3":
        fix = "set kernel.yama.ptrace_scope to 0, 1 or 2 (3 forbids ptrace until reboot)"
        return Check("driver", False, f"ptrace ({chosen.why}), but ptrace is forbidden", fix), seccomp
    relaxed = [dataclasses.replace(c, needed=False) for c in seccomp]
    return Check("driver", True, f"ptrace: {chosen.why}"), relaxed


def checks() -> list[Check]:
    rootless = os.geteuid() != 0
    userns = check_user_namespaces(rootless)
    driver, seccomp = check_driver(seccomp_checks())
    found = [check_kernel(), userns, check_apparmor(rootless), *seccomp, driver]
    found += [check_overlay(userns), check_cgroups(rootless), check_subids(rootless), check_fuse()]
    return found


def add_doctor_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check what this machine gives hvfs, with the fix for each problem",
        description="Check user namespaces, seccomp user notification, overlayfs, cgroups, subordinate ids and FUSE "
        "as hvfs will use them (as this user); exit 0 when everything hvfs needs works.",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, *, write: Callable[[str], object] = sys.stdout.write) -> int:
    found = checks()
    who = "root" if os.geteuid() == 0 else f"{_user_name()} (rootless)"
    write(f"hvfs doctor, as {who}:\n")
    for check in found:
        write(check.line() + "\n")
    failed = [c.name for c in found if c.needed and not c.ok]
    write(f"hvfs cannot run VMs here: fix {', '.join(failed)}\n" if failed else "hvfs can run VMs here\n")
    return 1 if failed else 0
