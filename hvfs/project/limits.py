"""Memory, pids and CPU limits per VM: cgroups where the machine lets the manager use
them, rlimits otherwise.

With cgroup v2 (and the controllers delegated to the manager's cgroup, as systemd does
for a user's services), each VM gets a cgroup under the manager's. Without cgroup v2,
hvfs says so and uses cgroup v1's pids, memory and cpu hierarchies where it may write
them (as root). Where it may use neither, it says so and falls back to rlimits: pids with
RLIMIT_NPROC, counted per user namespace, so per VM — but the kernel never applies it
to the host's root, so a VM run by root gets no pids limit that way — and memory with
RLIMIT_AS, per process rather than per VM; CPU is then not limited.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import time
from dataclasses import dataclass, field

from hvfs import deferred
from hvfs.project.config import Limits

log = deferred.logger("hvfs.limits")
CGROUP_ROOT = "/sys/fs/cgroup"
RMDIR_TIMEOUT = 5.0  # seconds
CONTROLLERS = ("memory", "pids", "cpu")
CPU_PERIOD = 100_000
# What each limit is called in each cgroup version.
V2_FILES = {"memory": "memory.max", "pids": "pids.max", "cpu": "cpu.max"}
V1_FILES = {"memory": "memory.limit_in_bytes", "pids": "pids.max", "cpu": "cpu.cfs_quota_us"}


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, file system type, super options) of every cgroup mount."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields, _, tail = line.partition(" - ")
            fstype, _source, options = tail.split()[:3]
            if fstype in ("cgroup", "cgroup2"):
                found.append((fields.split()[4], fstype, set(options.split(","))))
    return found


def _v2_base() -> tuple[str | None, str]:
    """The manager's own cgroup directory when cgroup v2 can be used, else why not."""
    mounts = {point: fstype for point, fstype, _ in _mounts()}
    if mounts.get(CGROUP_ROOT) != "cgroup2":
        return None, "cgroup v2 is not mounted at /sys/fs/cgroup (this machine uses cgroup v1)"
    with open("/proc/self/cgroup") as f:
        relative = next((line.split("::", 1)[1].strip() for line in f if line.startswith("0::")), "/")
    base = os.path.join(CGROUP_ROOT, relative.lstrip("/"))
    try:
        with open(os.path.join(base, "cgroup.controllers")) as f:
            available = set(f.read().split())
    except OSError as e:
        return None, f"cgroup v2 cannot be read at {base}: {e.strerror}"
    missing = [c for c in CONTROLLERS if c not in available]
    if missing:
        return None, f"the cgroup v2 controllers {', '.join(missing)} are not delegated to {base}"
    if not os.access(base, os.W_OK):
        return None, f"{base} is not writable"
    return base, ""


def _v1_roots() -> dict[str, str]:
    """Writable cgroup v1 hierarchies of the controllers, by controller."""
    roots: dict[str, str] = {}
    for point, fstype, options in _mounts():
        for controller in CONTROLLERS:
            if fstype == "cgroup" and controller in options and os.access(point, os.W_OK):
                roots.setdefault(controller, point)
    return roots


@dataclass
class LimitPlan:
    """How a VM's limits are enforced: the rlimits it starts with and its cgroup's settings."""

    rlimits: dict[str, int] = field(default_factory=dict)  # for pid 1 to set
    cgroups: list[str] = field(default_factory=list)  # cgroup directories pid 1 joins


class LimitMaker:
    def __init__(self, project: str, record: str | None = None) -> None:
        """``record``: a file that lists the cgroups made so far, so that what a killed
        manager made can be removed after it (remove_recorded)."""
        self.project = project
        self.record = record
        self._made: list[str] = []
        self._probed = False  # the cgroups are looked at by the first plan with limits: 0.4 ms a run without

    def _probe(self) -> None:
        self._probed = True
        self.v2, why_not_v2 = _v2_base()
        self.v1 = {} if self.v2 else _v1_roots()
        if self.v2 is None and self.v1:
            self.note = f"{why_not_v2}; limits use cgroup v1 ({', '.join(sorted(self.v1))})"
        elif self.v2 is None:
            self.note = (
                f"{why_not_v2}, and cgroup v1 is not writable: memory limits use RLIMIT_AS per process, pids limits "
                "RLIMIT_NPROC (which does not apply to a VM run by the host's root), CPU limits are not enforced"
            )
        else:
            self.note = ""
        self._warned = False

    def plan(self, vm: str, limits: Limits) -> LimitPlan:
        if limits == Limits():
            return LimitPlan()
        if not self._probed:
            self._probe()
        if self.note and not self._warned:
            log.warning("%s", self.note)
            self._warned = True
        wanted = {
            "memory": limits.memory,
            "pids": limits.pids,
            "cpu": int(limits.cpus * CPU_PERIOD) if limits.cpus else None,
        }
        plan = LimitPlan()
        if self.v2 is not None:
            plan.cgroups.append(self._v2_cgroup(vm, wanted))
            return plan
        for controller, value in wanted.items():
            if value is None:
                continue
            if controller in self.v1:
                plan.cgroups.append(self._v1_cgroup(self.v1[controller], controller, vm, value))
            elif controller == "pids":
                plan.rlimits["nproc"] = value
            elif controller == "memory":
                plan.rlimits["as"] = value
        return plan

    def _v2_cgroup(self, vm: str, wanted: dict[str, int | None]) -> str:
        assert self.v2 is not None
        project = os.path.join(self.v2, f"hvfs-{self.project}")
        if not os.path.isdir(project):
            os.mkdir(project)
            self._made.append(project)
            self._save_record()
            # A cgroup with processes cannot hand controllers down ("no internal processes"):
            # the manager's own cgroup keeps the manager, the project's holds only VMs'.
            for parent in (self.v2, project):
                with open(os.path.join(parent, "cgroup.subtree_control"), "w") as f:
                    f.write(" ".join(f"+{c}" for c in CONTROLLERS))
        path = self._make(os.path.join(project, vm))
        for controller, value in wanted.items():
            if value is not None:
                text = f"{value} {CPU_PERIOD}" if controller == "cpu" else str(value)
                self._write(path, V2_FILES[controller], text)
        return path

    def _v1_cgroup(self, root: str, controller: str, vm: str, value: int) -> str:
        path = self._make(os.path.join(root, f"hvfs-{self.project}-{vm}"))
        if controller == "cpu":
            self._write(path, "cpu.cfs_period_us", str(CPU_PERIOD))
        self._write(path, V1_FILES[controller], str(value))
        return path

    def _make(self, path: str) -> str:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path)
        self._made.insert(0, path)
        self._save_record()
        return path

    def _save_record(self) -> None:
        if self.record is not None:
            temporary = f"{self.record}.tmp"
            with open(temporary, "w") as f:
                json.dump({"project": self.project, "cgroups": self._made}, f)
            os.replace(temporary, self.record)

    @staticmethod
    def _write(path: str, name: str, value: str) -> None:
        with open(os.path.join(path, name), "w") as f:
            f.write(value)

    @staticmethod
    def enter(plan: LimitPlan, pid: int) -> None:
        """Move pid 1 (before it starts the command) into its cgroups."""
        for path in plan.cgroups:
            with open(os.path.join(path, "cgroup.procs"), "w") as f:
                f.write(str(pid))

    def cleanup(self) -> None:
        deadline = time.monotonic() + RMDIR_TIMEOUT
        for path in self._made:
            while True:
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    # EBUSY while the last processes of a VM that just ended are released
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        log.warning("could not remove the cgroup %s: %s", path, e.strerror)
                        break
                    time.sleep(0.02)


def _is_projects(path: str, project: str) -> bool:
    """Whether ``path`` is a cgroup this project's manager would make (a record that
    names anything else is not obeyed: its processes would be killed)."""
    real = os.path.realpath(path)
    if not real.startswith(CGROUP_ROOT + "/") or real != os.path.normpath(path):
        return False
    name, parent = os.path.basename(real), os.path.basename(os.path.dirname(real))
    return name == f"hvfs-{project}" or parent == f"hvfs-{project}" or name.startswith(f"hvfs-{project}-")


def _empty(path: str, deadline: float) -> None:
    """Kill what still runs in the cgroup ``path`` (a VM that outlived its manager)."""
    kill = os.path.join(path, "cgroup.kill")
    if os.path.exists(kill):
        with contextlib.suppress(OSError), open(kill, "w") as f:
            f.write("1")
    while time.monotonic() < deadline:
        try:
            with open(os.path.join(path, "cgroup.procs")) as f:
                pids = [int(line) for line in f if line.strip()]
        except OSError:
            return
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def remove_recorded(record: str, project: str, timeout: float = 10.0) -> list[str]:
    """Remove the cgroups a manager of ``project`` listed in ``record`` (killing what
    still runs in them); return those removed. A missing record removes nothing."""
    try:
        with open(record) as f:
            document = json.load(f)
        paths = [str(p) for p in document["cgroups"]] if document.get("project") == project else []
    except (OSError, ValueError, KeyError, TypeError):
        return []
    removed = []
    deadline = time.monotonic() + timeout
    for path in paths:  # the record lists children before their parents
        if not _is_projects(path, project) or not os.path.isdir(path):
            continue
        _empty(path, deadline)
        try:
            os.rmdir(path)
            removed.append(path)
        except OSError as e:
            log.warning("could not remove the cgroup %s: %s", path, e.strerror)
    return removed
