"""Spellings of procfs magic links to open files, shared by the driver and the manager.

A magic link (``/proc/PID/fd/N``) names an open file, not a path: following it reaches the
file whatever path it has, even one outside the VM (an inherited host file) or none (a
deleted file, a pipe). Recognising a spelling only chooses which kernel call serves the
request; the kernel itself still resolves every path.
"""

from __future__ import annotations

from hvfs.patterns import pattern

# /proc/PID/fd/N and /proc/PID/task/TID/fd/N, with PID and TID in the VM's pid namespace.
FD_LINK = pattern(r"^/proc/(\d+)(?:/task/(\d+))?/fd/(\d+)$")
# The caller's own fds: /proc/self/fd/N and /proc/thread-self/fd/N.
OWN_FD_LINK = pattern(r"^/proc/(?:self|thread-self)/fd/(\d+)$")


def normal(path: str) -> str:
    """``path`` without the empty and "." components the kernel skips (".." it does not
    skip: a path with one is left to the kernel's resolution); a trailing slash is kept."""
    if "//" not in path and "/." not in path:
        return path
    parts = [part for part in path.split("/") if part and part != "."]
    tail = "/" if path.endswith(("/", "/.")) and parts else ""
    return ("/" if path.startswith("/") else "") + "/".join(parts) + tail


def fd_link(path: str) -> tuple[str, str] | None:
    """For ``/proc/PID[/task/TID]/fd/N``: the fd directory and N; None for anything else."""
    match = FD_LINK.match(normal(path))
    if match is None:
        return None
    pid, tid, number = match.groups()
    return (f"/proc/{pid}/task/{tid}/fd" if tid else f"/proc/{pid}/fd"), number
