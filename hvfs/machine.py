"""What this machine has (memory, CPUs, process ids, file systems), for checking what a
user asks for before anything starts."""

from __future__ import annotations

import os
import re

from hvfs.patterns import pattern

# File systems whose regular files are kernel interfaces, not files to write a report
# into (/proc/1/mem, /sys/power/state, cgroup knobs, ...).
PSEUDO_FILE_SYSTEMS = frozenset(
    {"proc", "sysfs", "cgroup", "cgroup2", "debugfs", "tracefs", "securityfs", "configfs", "efivarfs", "bpf",
     "binfmt_misc", "fusectl", "pstore", "hugetlbfs", "mqueue", "devpts"}
)  # fmt: skip


def _meminfo(*keys: str) -> int:
    """The sum of ``keys``' values in /proc/meminfo, in bytes (one read: it is on every run's path)."""
    total = 0
    with open("/proc/meminfo") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in keys:
                total += int(rest.split()[0]) * 1024
    return total


def memory() -> int:
    """Bytes of RAM and swap: the most a memory file system or a VM could ever hold."""
    return _meminfo("MemTotal", "SwapTotal")


def resident_kb() -> int:
    """Kilobytes of RAM this process holds now (its VmRSS)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpus() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


def pid_max() -> int:
    try:
        with open("/proc/sys/kernel/pid_max") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1 << 22  # PID_MAX_LIMIT on 64-bit


def file_system_type(st: os.stat_result) -> str | None:
    """The type of the file system holding the file of ``st``, from this process's mounts."""
    device = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields, _, tail = line.partition(" - ")
                if fields.split()[2] == device:
                    return tail.split()[0]
    except OSError:
        pass
    return None


SIZE = pattern(r"^(\d+)\s*([kmgt]?)i?b?$", re.IGNORECASE)
UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int | None:
    """Bytes of a size as hvfs's options take it (64m, 1g, 512KiB, 4096), or None."""
    match = SIZE.match(text.strip())
    return int(match.group(1)) * UNITS[match.group(2).lower()] if match else None


def size_problem(size: int, *, minimum: int = 4096) -> str | None:
    """What is wrong with ``size`` bytes of memory (a memory file system, a memory
    limit) on this machine, or None."""
    if size < minimum:
        return f"size {format_size(size)} is too small; give at least {format_size(minimum)}"
    total = memory()
    if size > total:
        return (
            f"size {format_size(size)} is more than this machine's memory and swap "
            f"({format_size(total)}); give at most {format_size(total)}"
        )
    return None


def format_size(size: int) -> str:
    """``size`` bytes as hvfs's size options take it, rounded down: 23g, 512m, 4k."""
    for unit, shift in (("t", 40), ("g", 30), ("m", 20), ("k", 10)):
        if size >= 1 << shift:
            return f"{size >> shift}{unit}"
    return str(size)
