"""What a killed manager leaves behind, and how ``hvfs down`` removes it.

A manager's mounts live in its own mount namespace and its VMs die with it (each VM's
pid 1 sees its channel close), but some things outlive a SIGKILL: the cgroups it made
for its VMs' limits (hvfs.project.limits records them in cgroups.json as it makes them),
and the project's state directory (lock, manager.json, control socket, logs, staging
directories). A mount under the state directory in this mount namespace would be one
too; none is made there today, but one left would keep the directory from going.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

from hvfs.project.limits import remove_recorded
from hvfs.project.state import ProjectState

log = logging.getLogger("hvfs.project")


@dataclass
class Removed:
    """What was removed after a dead manager (pid as its manager.json said)."""

    pid: object = None
    cgroups: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)

    def describe(self, state_directory: str) -> str:
        parts = [f"{len(self.cgroups)} cgroup{'s' * (len(self.cgroups) != 1)}"] if self.cgroups else []
        if self.mounts:
            parts.append(f"{len(self.mounts)} mount{'s' * (len(self.mounts) != 1)}")
        parts.append(f"its state directory {state_directory}")
        return ", ".join(parts)


def _unescape(field: str) -> str:
    """A mountinfo path: space, tab, newline and backslash are written in octal."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mounts_under(directory: str) -> list[str]:
    """Mount points at or below ``directory`` in this mount namespace, deepest first."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = _unescape(line.split()[4])
            if point == directory or point.startswith(directory + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def _unmount(points: list[str]) -> list[str]:
    from hvfs._sys import mount

    done = []
    for point in points:
        try:
            mount.umount(point)
            done.append(point)
        except OSError as e:
            log.warning("could not unmount %s: %s", point, e.strerror)
    return done


def clean_up_after(state: ProjectState) -> Removed | None:
    """Remove what a dead manager of the project left; None when its manager is up, or
    when nothing is there. Holds the project's lock meanwhile, so that no manager starts
    in a directory being removed."""
    if not state.take_over():
        return None
    info = state.info() or {}
    removed = Removed(pid=info.get("pid"))
    removed.cgroups = remove_recorded(state.cgroups, state.project)
    with contextlib.suppress(OSError):
        removed.mounts = _unmount(mounts_under(state.root))
    state.remove()
    return removed
