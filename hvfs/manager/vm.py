"""What the manager knows of one VM."""

from __future__ import annotations

import contextlib
import os
import posixpath
import threading
from collections import Counter
from dataclasses import dataclass, field

from hvfs import api

# Mount points whose file systems the VM's own kernel instance serves (its procfs and
# devpts): the writable view has only empty read-only placeholders there.
KERNEL_MOUNTS = ("/proc", "/dev/pts")


@dataclass(frozen=True)
class VmStatistics:
    """Requests per operation and outcome: served, continued, failed (answered an errno),
    waiting (a socket call that would have blocked, asked again later)."""

    requests: dict[str, dict[str, int]]

    def total(self, outcome: str) -> int:
        return sum(by_outcome.get(outcome, 0) for by_outcome in self.requests.values())


@dataclass
class VmContext:
    name: str
    rw_root: int  # root of the VM's writable view: a detached mount tree held by this fd
    vm_root: int  # the VM's own root, in its mount namespace: read-only fds come from here
    strict: bool = False
    # Unix sockets made by VMs, as (device, inode); shared by every VM of one manager.
    sockets: set[tuple[int, int]] = field(default_factory=set)
    socket_mounts: frozenset[int] = frozenset()  # mount ids of volumes marked "sockets"
    _counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def is_kernel_path(self, path: api.VmPath | str) -> bool:
        normal = posixpath.normpath(str(path))
        return any(normal == m or normal.startswith(m + "/") for m in KERNEL_MOUNTS)

    def count(self, operation: str, outcome: str) -> None:
        with self._lock:
            self._counts[operation, outcome] += 1

    def statistics(self) -> VmStatistics:
        with self._lock:
            items = list(self._counts.items())
        requests: dict[str, dict[str, int]] = {}
        for (operation, outcome), n in sorted(items):
            requests.setdefault(operation, {})[outcome] = n
        return VmStatistics(requests)

    def close(self) -> None:
        for fd in (self.rw_root, self.vm_root):
            with contextlib.suppress(OSError):
                os.close(fd)
