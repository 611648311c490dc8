"""What the figures were measured on: kernel, CPUs, memory, tool versions, HVFS commit."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Debian package -> the command that says its version where there is no package database.
VERSIONS = {
    "bubblewrap": ["bwrap", "--version"],
    "proot": ["proot", "--version"],
    "runsc": ["runsc", "--version"],
    "python3": ["/usr/bin/python3", "--version"],
    "gcc": ["gcc", "--version"],
    "git": ["git", "--version"],
}


def _first_line(argv: list[str], cwd: Path | None = None) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    return lines[0] if done.returncode == 0 and lines else None


def _version(package: str, argv: list[str]) -> str:
    """The Debian package's version (exact and uniform: proot's --version is a banner),
    else the first line the program prints about itself."""
    found = _first_line(["dpkg-query", "-W", "-f", "${Version}\\n", package])
    if found is not None:
        return f"{found} (Debian package)"
    return _first_line(argv) or "not installed"


def _proc_field(path: str, name: str) -> str | None:
    try:
        with open(path) as text:
            for line in text:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _memory() -> str:
    total = _proc_field("/proc/meminfo", "MemTotal")  # "24684084 kB"
    return f"{int(total.split()[0]) / 2**20:.1f} GiB" if total else "unknown"


def idle_state() -> str:
    """How an idle CPU waits: the cpuidle governor and the guest halt-poll window. Where a
    guest halts its vCPUs without polling first, waking one costs tens of µs, and every
    trapped call that wakes the other CPU pays it (benchmarks/idle_wake.py measures how much)."""
    facts = []
    for name, path in (
        ("governor", "/sys/devices/system/cpu/cpuidle/current_governor_ro"),
        ("guest_halt_poll_ns", "/sys/module/haltpoll/parameters/guest_halt_poll_ns"),
    ):
        try:
            facts.append(f"{name} {Path(path).read_text().strip()}")
        except OSError:
            facts.append(f"{name} unknown")
    return ", ".join(facts)


def describe() -> dict[str, str]:
    """Machine facts for the report, each one short line."""
    facts = {
        "kernel": f"{os.uname().sysname} {os.uname().release} ({os.uname().machine})",
        "CPUs": str(os.cpu_count()),
        "CPU model": _proc_field("/proc/cpuinfo", "model name") or "unknown",
        "memory": _memory(),
        "CPU idle": idle_state(),
    }
    commit = _first_line(["git", "rev-parse", "--short", "HEAD"], REPO)
    if commit is not None:
        # --no-optional-locks: looking must not rewrite the index of a tree others work in.
        dirty = _first_line(["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"], REPO)
        facts["HVFS commit"] = commit + (" with uncommitted changes" if dirty else "")
    for package, argv in VERSIONS.items():
        facts[package] = _version(package, argv)
    return facts
